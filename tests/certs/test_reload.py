"""CertificateReloader on a live uvicorn TLS server: new pairs load, bad pairs never replace a good one."""

import datetime
import hashlib
import http.client
import io
import os
import ssl
import tempfile
import time

import orjson
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from .tls_server import SecretVolume, TlsServer, served_fingerprint

from kubefence.certs import pki
from kubefence.certs.reload import REJECTED, RELOADED, UNCHANGED, CertificateReloader, ReloadMetrics
from kubefence.common.logs import configure_logging

UTC = datetime.timezone.utc
NAMES = ["localhost"]
ADDRESSES = ["127.0.0.1"]


@pytest.fixture(scope="module")
def ca():
    return pki.generate_ca("reload-test-ca")


@pytest.fixture(scope="module")
def other_ca():
    return pki.generate_ca("reload-test-other-ca")


def serving(ca, **kwargs) -> pki.KeyPair:
    return pki.generate_serving(ca, NAMES, ADDRESSES, **kwargs)


def files_of(pair: pki.KeyPair) -> dict[str, bytes]:
    return {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem}


def failures() -> float:
    return REGISTRY.get_sample_value("kubefence_certificate_reloads_total", {"result": "failure"}) or 0.0


def successes() -> float:
    return REGISTRY.get_sample_value("kubefence_certificate_reloads_total", {"result": "success"}) or 0.0


@pytest.fixture
def log_output():
    buffer = io.BytesIO()
    configure_logging("info", stream=io.TextIOWrapper(buffer, encoding="utf-8", write_through=True))
    yield buffer
    configure_logging("info")


@pytest.fixture
def volume(tmp_path, ca):
    volume = SecretVolume(tmp_path / "tls")
    volume.write(files_of(serving(ca)))
    return volume


@pytest.fixture
def server(volume):
    server = TlsServer(volume.path("tls.crt"), volume.path("tls.key")).start()
    yield server
    server.stop()


def trusting(ca: pki.KeyPair) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert_pem.decode())


def wait_until(predicate, timeout: float = 10.0) -> None:
    """Poll `predicate` until it returns true or `timeout` seconds pass; the caller asserts afterwards."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def fingerprint_of(pair: pki.KeyPair) -> str:
    return pki.fingerprint(pair.certificate)


def test_reloader_new_pair_serves_new_connections(server, volume, ca):
    first = server.reloader.fingerprint
    kept_connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=trusting(ca), timeout=5)
    kept_connection.request("GET", "/")
    assert kept_connection.getresponse().read() == b"ok"
    before = successes()

    second = serving(ca)
    volume.write(files_of(second))
    outcome = server.call(server.reloader.check_once)

    assert outcome == RELOADED
    assert successes() == before + 1
    assert server.reloader.fingerprint == fingerprint_of(second)
    assert served_fingerprint(server.port) == fingerprint_of(second)
    # The connection opened before the reload keeps its certificate and still works.
    assert hashlib.sha256(kept_connection.sock.getpeercert(binary_form=True)).hexdigest() == first
    kept_connection.request("GET", "/")
    assert kept_connection.getresponse().read() == b"ok"
    kept_connection.close()
    assert server.call(server.reloader.check_once) == UNCHANGED


def test_reloader_not_after_and_fingerprint(server, volume, ca):
    pair = serving(ca, validity=datetime.timedelta(days=40))
    volume.write(files_of(pair))

    server.call(server.reloader.check_once)

    assert server.reloader.not_after == pair.certificate.not_valid_after_utc
    assert server.reloader.fingerprint == fingerprint_of(pair)


def _mismatched(ca, other_ca):
    return {"tls.crt": serving(ca).cert_pem, "tls.key": serving(ca).key_pem}


def _expired(ca, other_ca):
    now = datetime.datetime.now(UTC)
    return files_of(serving(ca, validity=datetime.timedelta(days=1), now=now - datetime.timedelta(days=3)))


def _not_yet_valid(ca, other_ca):
    return files_of(serving(ca, now=datetime.datetime.now(UTC) + datetime.timedelta(days=2)))


def _half_written(ca, other_ca):
    pair = serving(ca)
    return {"tls.crt": pair.cert_pem[: len(pair.cert_pem) // 2], "tls.key": pair.key_pem}


def _ca_as_serving(ca, other_ca):
    return files_of(other_ca)


def _garbage_key(ca, other_ca):
    return {"tls.crt": serving(ca).cert_pem, "tls.key": b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"}


def _empty_files(ca, other_ca):
    return {"tls.crt": b"", "tls.key": b""}


BAD_PAIRS = [
    ("key-mismatch", _mismatched, "the private key does not belong to the certificate"),
    ("expired", _expired, "certificate expired at"),
    ("not-yet-valid", _not_yet_valid, "not valid before"),
    ("half-written", _half_written, "not valid PEM certificates"),
    ("ca-certificate", _ca_as_serving, "is a CA certificate"),
    ("garbage-key", _garbage_key, "not a valid unencrypted PEM private key"),
    ("empty-files", _empty_files, "serving certificate certificate: empty"),
]


@pytest.mark.parametrize(("make_files", "message"), [case[1:] for case in BAD_PAIRS], ids=[case[0] for case in BAD_PAIRS])
def test_reloader_rejects_bad_pair(server, volume, ca, other_ca, log_output, make_files, message):
    good = server.reloader.fingerprint
    good_not_after = server.reloader.not_after
    before = failures()

    volume.write(make_files(ca, other_ca))
    outcome = server.call(server.reloader.check_once)

    assert outcome == REJECTED
    assert failures() == before + 1
    assert served_fingerprint(server.port) == good
    assert server.reloader.fingerprint == good
    assert server.reloader.not_after == good_not_after
    lines = [orjson.loads(line) for line in log_output.getvalue().splitlines()]
    errors = [line for line in lines if line["event"] == "certs.reload_failed"]
    assert len(errors) == 1
    assert errors[0]["level"] == "error"
    assert message in errors[0]["error"]
    assert errors[0]["serving_fingerprint"] == good
    assert errors[0]["cert_file"].endswith("tls.crt")
    assert b"PRIVATE KEY" not in log_output.getvalue()
    # The same bad content is reported once, not on every poll.
    assert server.call(server.reloader.check_once) == UNCHANGED
    assert failures() == before + 1


def test_reloader_recovers_after_bad_pair(server, volume, ca, other_ca):
    volume.write(_mismatched(ca, other_ca))
    assert server.call(server.reloader.check_once) == REJECTED
    fixed = serving(ca)

    volume.write(files_of(fixed))

    assert server.call(server.reloader.check_once) == RELOADED
    assert served_fingerprint(server.port) == fingerprint_of(fixed)


def test_reloader_missing_files_keep_old_pair(server, volume, log_output):
    good = server.reloader.fingerprint
    (volume.root / "..data").unlink()
    before = failures()

    assert server.call(server.reloader.check_once) == REJECTED

    assert failures() == before + 1
    assert served_fingerprint(server.port) == good
    assert orjson.loads(log_output.getvalue().splitlines()[-1])["event"] == "certs.reload_failed"


def test_reloader_run_loop_follows_symlink_swap(tmp_path, ca):
    volume = SecretVolume(tmp_path / "tls")
    volume.write(files_of(serving(ca)))
    server = TlsServer(volume.path("tls.crt"), volume.path("tls.key"), reload_interval=0.02).start()
    try:
        new = serving(ca)
        volume.write(files_of(new))
        wait_until(lambda: server.reloader.fingerprint == fingerprint_of(new))
        assert server.reloader.fingerprint == fingerprint_of(new)
        assert served_fingerprint(server.port) == fingerprint_of(new)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("age", "ready", "expiring_soon", "reason"),
    [
        (datetime.timedelta(days=1), True, False, "serving certificate loaded"),
        (datetime.timedelta(days=25), True, True, "expires soon"),
        (datetime.timedelta(days=31), False, True, "expired at"),
    ],
    ids=["fresh", "within-warning", "expired"],
)
def test_reloader_readiness(tmp_path, ca, age, ready, expiring_soon, reason):
    now = datetime.datetime.now(UTC)
    pair = serving(ca, validity=datetime.timedelta(days=30), now=now)
    volume = SecretVolume(tmp_path / "tls")
    volume.write(files_of(pair))
    clock = [now]
    reloader = CertificateReloader(
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), volume.path("tls.crt"), volume.path("tls.key"), clock=lambda: clock[0]
    )
    assert reloader.check_once() == RELOADED

    clock[0] = now + age
    report = reloader.readiness()

    assert report.ready is ready
    assert report.expiring_soon is expiring_soon
    assert reason in report.reason
    assert report.not_after == pair.certificate.not_valid_after_utc
    assert report.as_dict() == {
        "ready": ready,
        "reason": report.reason,
        "not_after": pair.certificate.not_valid_after_utc.isoformat(),
        "expiring_soon": expiring_soon,
    }


def test_reloader_readiness_before_first_load(tmp_path):
    reloader = CertificateReloader(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), tmp_path / "tls.crt", tmp_path / "tls.key")

    report = reloader.readiness()

    assert report.ready is False
    assert report.reason == "no serving certificate loaded yet"
    assert report.as_dict()["not_after"] == ""
    assert reloader.not_after is None


def test_reloader_invalid_interval(tmp_path):
    with pytest.raises(ValueError, match="invalid reload interval 0; expected a positive number of seconds"):
        CertificateReloader(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), tmp_path / "a", tmp_path / "b", interval=0)


def test_reloader_needs_no_writable_temporary_directory(tmp_path, ca, monkeypatch):
    volume = SecretVolume(tmp_path / "tls")
    volume.write(files_of(serving(ca)))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "absent"))
    reloader = CertificateReloader(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), volume.path("tls.crt"), volume.path("tls.key"))

    assert reloader.check_once() == RELOADED


def test_reloader_without_memfd_uses_temporary_directory(tmp_path, ca, monkeypatch):
    volume = SecretVolume(tmp_path / "tls")
    pair = serving(ca)
    volume.write(files_of(pair))
    monkeypatch.delattr(os, "memfd_create")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    reloader = CertificateReloader(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), volume.path("tls.crt"), volume.path("tls.key"))

    assert reloader.check_once() == RELOADED
    assert reloader.fingerprint == fingerprint_of(pair)
    assert [path.name for path in tmp_path.iterdir()] == ["tls"]


def test_reloader_metrics_in_own_registry(tmp_path, ca):
    registry = CollectorRegistry()
    volume = SecretVolume(tmp_path / "tls")
    pair = serving(ca)
    volume.write(files_of(pair))
    reloader = CertificateReloader(
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), volume.path("tls.crt"), volume.path("tls.key"), metrics=ReloadMetrics(registry)
    )
    assert registry.get_sample_value("kubefence_certificate_reloads_total", {"result": "failure"}) == 0
    assert registry.get_sample_value("kubefence_certificate_not_after_timestamp_seconds") == 0

    reloader.check_once()

    assert registry.get_sample_value("kubefence_certificate_reloads_total", {"result": "success"}) == 1
    assert registry.get_sample_value("kubefence_certificate_not_after_timestamp_seconds") == pair.certificate.not_valid_after_utc.timestamp()


def test_reloader_client_trusting_other_ca_fails(server, other_ca):
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=trusting(other_ca), timeout=5)

    with pytest.raises(ssl.SSLCertVerificationError):
        connection.request("GET", "/")
    connection.close()
