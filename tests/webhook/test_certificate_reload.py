"""Certificate hot reload in a running `kubefence webhook` process.

The certificate files sit in a directory updated the way the kubelet updates
a Secret volume, by a `..data` symlink swap. The server polls them every 0.05 s.
"""

import datetime
import json
import os
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from kubefence.certs import pki

from ..certs.tls_server import SecretVolume, served_fingerprint
from .webhook_support import STARTUP_TIMEOUT_SECONDS, TlsMaterial, WebhookProcess, free_port, load_sample

UTC = datetime.timezone.utc
# Upper bound for a reload to show; the server polls every 0.05 s.
RELOAD_TIMEOUT_SECONDS = 30


def wait_for(condition, timeout: float = RELOAD_TIMEOUT_SECONDS):
    """Poll `condition` until it returns a true value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout} s")


@pytest.fixture(scope="module")
def ca():
    return pki.generate_ca("webhook-reload-test-ca")


def serving(ca, **kwargs) -> pki.KeyPair:
    return pki.generate_serving(ca, ["localhost"], ["127.0.0.1"], **kwargs)


def files_of(pair: pki.KeyPair) -> dict[str, bytes]:
    return {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem}


@pytest.fixture
def volume(tmp_path, ca):
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    volume = SecretVolume(tmp_path / "tls")
    volume.write(files_of(serving(ca)))
    return volume


@pytest.fixture
def webhook(volume, tmp_path):
    tls = TlsMaterial(tmp_path / "ca.crt", volume.path("tls.crt"), volume.path("tls.key"))
    process = WebhookProcess(
        [
            "--tls-cert-file", str(tls.cert_file),
            "--tls-private-key-file", str(tls.key_file),
            "--certificate-interval", "0.05",
            "--log-level", "info",
        ],
        tmp_path / "stderr.jsonl",
        tls,
    )
    yield process
    process.stop()


def reload_metric(webhook, result: str) -> float | None:
    return webhook.metric("kubefence_certificate_reloads_total", {"result": result})


def test_webhook_certificate_reload_serves_new_pair(webhook, volume, ca):
    review = load_sample("02-opted-in-no-annotations-map.json")
    assert webhook.mutate(review).status_code == 200  # opens the kept-alive connection
    new = serving(ca)

    volume.write(files_of(new))

    wait_for(lambda: served_fingerprint(webhook.port) == pki.fingerprint(new.certificate))
    assert reload_metric(webhook, "success") == 2  # the start-up load and this one
    assert reload_metric(webhook, "failure") == 0
    assert webhook.metric("kubefence_certificate_not_after_timestamp_seconds") == new.certificate.not_valid_after_utc.timestamp()
    response = webhook.mutate(review)
    assert response.status_code == 200
    assert response.json()["response"]["uid"] == review["request"]["uid"]
    reloads = [line for line in webhook.log_lines() if line.get("event") == "certs.reloaded"]
    assert reloads[-1]["fingerprint"] == pki.fingerprint(new.certificate)
    assert webhook.client.get("/readyz").json()["details"]["certificate"]["not_after"] == new.certificate.not_valid_after_utc.isoformat()


def test_webhook_certificate_reload_keeps_pair_on_mismatch(webhook, volume, ca):
    before = served_fingerprint(webhook.port)

    volume.write({"tls.crt": serving(ca).cert_pem, "tls.key": serving(ca).key_pem})

    wait_for(lambda: reload_metric(webhook, "failure") == 1)
    assert served_fingerprint(webhook.port) == before
    assert webhook.client.get("/readyz").status_code == 200
    errors = [line for line in webhook.log_lines() if line.get("event") == "certs.reload_failed"]
    assert len(errors) == 1
    assert errors[0]["level"] == "error"
    assert "the private key does not belong to the certificate" in errors[0]["error"]
    assert webhook.mutate(load_sample("01-not-opted-in.json")).status_code == 200


def test_webhook_readyz_reports_expiring_certificate(tmp_path, ca):
    volume = SecretVolume(tmp_path / "tls")
    pair = serving(ca, validity=datetime.timedelta(days=3))
    volume.write(files_of(pair))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    tls = TlsMaterial(tmp_path / "ca.crt", volume.path("tls.crt"), volume.path("tls.key"))
    process = WebhookProcess(
        ["--tls-cert-file", str(tls.cert_file), "--tls-private-key-file", str(tls.key_file)], tmp_path / "stderr.jsonl", tls
    )
    try:
        response = process.client.get("/readyz")
    finally:
        process.stop()

    assert response.status_code == 200
    detail = response.json()["details"]["certificate"]
    assert detail["ready"] is True
    assert detail["expiring_soon"] is True
    assert detail["reason"].startswith("serving certificate expires soon")


def test_webhook_not_ready_with_expired_certificate(tmp_path, ca):
    """uvicorn serves an expired pair, but the reloader rejects it, so the pod never turns ready."""
    expired = serving(ca, validity=datetime.timedelta(days=1), now=datetime.datetime.now(UTC) - datetime.timedelta(days=2))
    (tmp_path / "tls.crt").write_bytes(expired.cert_pem)
    (tmp_path / "tls.key").write_bytes(expired.key_pem)
    port = free_port()
    log_file = tmp_path / "stderr.jsonl"
    command = [
        sys.executable, "-m", "kubefence", "webhook", "--host", "127.0.0.1", "--port", str(port),
        "--tls-cert-file", str(tmp_path / "tls.crt"), "--tls-private-key-file", str(tmp_path / "tls.key"),
    ]
    # The expired certificate fails verification, so this client only reads /readyz.
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with open(log_file, "wb") as log_stream:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_stream, env=dict(os.environ))
        try:
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=unverified) as client:
                response = wait_for(lambda: _get_or_none(client, "/readyz"), STARTUP_TIMEOUT_SECONDS)
        finally:
            child.terminate()
            child.wait(timeout=30)

    assert response.status_code == 503
    assert response.json()["checks"]["certificate"] == "no serving certificate loaded yet"
    events = [json.loads(line) for line in log_file.read_bytes().splitlines() if line.strip()]
    failures = [event for event in events if event.get("event") == "certs.reload_failed"]
    assert "certificate expired at" in failures[0]["error"]


def _get_or_none(client: httpx.Client, path: str) -> httpx.Response | None:
    try:
        return client.get(path)
    except httpx.TransportError:
        return None
