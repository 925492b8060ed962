"""Rotation under load: three serving certificate rotations and one CA rotation, no failed request.

The pieces of a cluster are played by real parts where this machine has them:

* `ensure` runs through the real kubernetes client against the API stub
  (there is no kube-apiserver here; see kube_api_stub.py);
* "the kubelet" copies the serving Secret into a directory the way a Secret
  volume changes, by swapping the `..data` symlink;
* the server is the real `kubefence webhook` command in a child process,
  serving over TLS and reloading its certificate files every 0.05 s;
* "the API server" is two client threads sending AdmissionReview POSTs,
  trusting only the caBundle of the webhook configuration, which they re-read
  from a file whenever the test copies a new bundle there. One thread keeps
  its connection alive across rotations, the other opens a new TLS
  connection for every request.

To be harsh on ordering, each run lets the kubelet deliver the new files
first and only then hands the new caBundle to the clients. The rotation
phases must keep every request working in that order too.

The load is bounded: the clients stop when the rotations end, or after
20 seconds at the latest.
"""

import datetime
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from .conftest import NAMESPACE, make_options
from kubernetes import config
from .tls_server import SecretVolume, served_fingerprint

from kubefence.certs import pki
from kubefence.certs.ensure import KubeObjects, ensure
from kubefence.common.logs import configure_logging

REVIEW = Path(__file__).parents[1] / "data" / "admission" / "02-opted-in-no-annotations-map.json"
SERVER_NAME = f"kubefence-webhook.{NAMESPACE}.svc"
MAX_LOAD_SECONDS = 20.0
STARTUP_TIMEOUT_SECONDS = 60
PAUSE_BETWEEN_STEPS = 0.3
# Each client thread sends one request at a time; several per kind keep the
# server busy while the test thread rotates.
CLIENTS_PER_KIND = 3


class BundleFile:
    """The caBundle as the API server uses it; clients reload their trust when it changes."""

    def __init__(self, path: Path):
        self.path = path
        self.generation = 0
        self.lock = threading.Lock()

    def write(self, bundle: bytes) -> None:
        with self.lock:
            if self.path.exists() and self.path.read_bytes() == bundle:
                return
            temporary = self.path.with_suffix(".tmp")
            temporary.write_bytes(bundle)
            temporary.replace(self.path)
            self.generation += 1


class ReviewClient(threading.Thread):
    """Send AdmissionReview POSTs until stopped, trusting only the current bundle file."""

    def __init__(self, port: int, bundle: BundleFile, stop: threading.Event, reloads, *, keep_alive: bool):
        super().__init__(daemon=True)
        self.url = f"https://127.0.0.1:{port}/mutate"
        self.bundle = bundle
        self.stop_event = stop
        self.reloads = reloads
        self.keep_alive = keep_alive
        self.sent = 0
        self.failed: list[str] = []
        # Local address of each connection -> server reload count at its first and last response.
        self.connections: dict[tuple, list[int]] = {}
        self.fingerprints: set[str] = set()
        self.body = REVIEW.read_bytes()
        self.uid = orjson.loads(self.body)["request"]["uid"]

    def _client(self) -> httpx.Client:
        context = ssl.create_default_context(cadata=self.bundle.path.read_text())
        limits = httpx.Limits(max_keepalive_connections=1 if self.keep_alive else 0)
        return httpx.Client(verify=context, limits=limits, timeout=5.0)

    def _send(self, client: httpx.Client) -> None:
        request = client.build_request(
            "POST",
            self.url,
            content=self.body,
            headers={"content-type": "application/json"},
            extensions={"sni_hostname": SERVER_NAME},
        )
        response = client.send(request, stream=True)
        try:
            # Read the connection's details while it is open: without
            # keep-alive it closes together with the response.
            stream = response.extensions["network_stream"]
            certificate = stream.get_extra_info("ssl_object").getpeercert(True)
            self.fingerprints.add(hashlib.sha256(certificate).hexdigest())
            reloads = self.reloads()
            self.connections.setdefault(stream.get_extra_info("client_addr"), [reloads, reloads])[1] = reloads
            response.read()
        finally:
            response.close()
        if response.status_code != 200:
            self.failed.append(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        answer = response.json()["response"]
        if answer["uid"] != self.uid or answer["allowed"] is not True:
            self.failed.append(f"unexpected response: {response.text[:200]}")

    def run(self) -> None:
        generation = self.bundle.generation
        client = self._client()
        started = time.monotonic()
        while not self.stop_event.is_set() and time.monotonic() - started < MAX_LOAD_SECONDS:
            if self.bundle.generation != generation:
                # A new caBundle: the API server builds a new client for it.
                generation = self.bundle.generation
                client.close()
                client = self._client()
            self.sent += 1
            try:
                self._send(client)
            except Exception as error:  # every kind of failure counts, none may stop the load
                self.failed.append(f"{type(error).__name__}: {error}")
        client.close()


class WebhookChild:
    """`kubefence webhook` in a child process, serving the files of `volume` and reloading them every 0.05 s."""

    def __init__(self, volume: SecretVolume, bundle: BundleFile, log_file: Path):
        self.port = _free_port()
        self.bundle = bundle
        self.reloads = 0
        self.returncode: int | None = None
        command = [
            sys.executable, "-m", "kubefence", "webhook", "--host", "127.0.0.1", "--port", str(self.port),
            "--tls-cert-file", str(volume.path("tls.crt")), "--tls-private-key-file", str(volume.path("tls.key")),
            "--certificate-interval", "0.05", "--namespace", NAMESPACE,
        ]
        self._log_stream = open(log_file, "wb")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._log_stream, env=dict(os.environ))
        self._wait_until_ready()
        self.fingerprint = served_fingerprint(self.port, SERVER_NAME)

    def _wait_until_ready(self) -> None:
        context = ssl.create_default_context(cadata=self.bundle.path.read_text())
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        with httpx.Client(verify=context, timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"kubefence webhook exited with status {self.process.returncode}")
                try:
                    response = client.get(f"https://127.0.0.1:{self.port}/readyz", extensions={"sni_hostname": SERVER_NAME})
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"kubefence webhook not ready within {STARTUP_TIMEOUT_SECONDS} s")

    def wait_for_certificate(self, fingerprint: str) -> None:
        """Open new connections until the server presents `fingerprint`, then count one reload."""
        deadline = time.monotonic() + 10
        while self.fingerprint != fingerprint and time.monotonic() < deadline:
            self.fingerprint = served_fingerprint(self.port, SERVER_NAME)
        assert self.fingerprint == fingerprint, "the webhook did not serve the new certificate within 10 s"
        self.reloads += 1

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        self._log_stream.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def quiet_logs():
    """Only warnings and errors, so that the printed figures stay readable."""
    configure_logging("warning")
    yield
    configure_logging("info")


def test_rotation_under_load_no_failed_request(kube_stub, kubeconfig, tmp_path, quiet_logs):
    api_client = config.new_client_from_config(config_file=kubeconfig)
    objects = KubeObjects(api_client)
    kube_stub.add_webhook_config("kubefence", ["pods.kubefence.dev", "pods-reinvoke.kubefence.dev"])
    volume = SecretVolume(tmp_path / "tls")
    bundle = BundleFile(tmp_path / "ca-bundle.pem")

    def kubelet_sync() -> None:
        volume.write(kube_stub.secret_data(NAMESPACE, "kubefence-tls"))

    def apiserver_sync() -> None:
        bundles = kube_stub.webhook_bundles("kubefence")
        assert all(bundles), "a caBundle is blank"
        bundle.write(bundles[0])

    def options(rotate: str = "none"):
        # Zero drop delay: the test itself waits for the reload before the drop run.
        return make_options(ca_drop_after=datetime.timedelta(0), rotate=rotate)

    # Install: certificates first, then the server, then the clients.
    ensure(options(), objects, backoff=0)
    kubelet_sync()
    apiserver_sync()
    server = WebhookChild(volume, bundle, tmp_path / "webhook.jsonl")
    stop = threading.Event()
    keep_alive_clients = [ReviewClient(server.port, bundle, stop, lambda: server.reloads, keep_alive=True) for _ in range(CLIENTS_PER_KIND)]
    new_connection_clients = [ReviewClient(server.port, bundle, stop, lambda: server.reloads, keep_alive=False) for _ in range(CLIENTS_PER_KIND)]
    clients = keep_alive_clients + new_connection_clients
    for client in clients:
        client.start()
    load_started = time.monotonic()

    reload_times: list[tuple[str, float]] = []

    def run_step(label: str, rotate: str) -> tuple[str, ...]:
        time.sleep(PAUSE_BETWEEN_STEPS)
        result = ensure(options(rotate), objects, backoff=0)
        expected_fingerprint = pki.fingerprint(result.material.leaf.certificate)
        changed = expected_fingerprint != server.fingerprint
        swapped = time.monotonic()
        kubelet_sync()
        if changed:
            server.wait_for_certificate(expected_fingerprint)
            reload_times.append((label, time.monotonic() - swapped))
        apiserver_sync()
        return result.plan.steps

    try:
        for number in (1, 2, 3):
            assert "issue-leaf" in run_step(f"leaf rotation {number}", "leaf")
        assert "start-ca-rotation" in run_step("CA rotation phase 1 (next CA joins the bundle)", "ca")
        assert "promote-ca" in run_step("CA rotation phase 2 (new CA signs the serving certificate)", "none")
        assert "drop-retired-cas" in run_step("CA rotation phase 3 (old CA leaves the bundle)", "none")
        time.sleep(PAUSE_BETWEEN_STEPS)
    finally:
        stop.set()
        for client in clients:
            client.join(MAX_LOAD_SECONDS + 5)
        load_seconds = time.monotonic() - load_started
        server.stop()
        api_client.close()
    assert server.returncode == 0

    keep_alive_sent = sum(client.sent for client in keep_alive_clients)
    new_connection_sent = sum(client.sent for client in new_connection_clients)
    keep_alive_failed = [failure for client in keep_alive_clients for failure in client.failed]
    new_connection_failed = [failure for client in new_connection_clients for failure in client.failed]
    new_connection_fingerprints = set().union(*(client.fingerprints for client in new_connection_clients))
    connections = [span for client in keep_alive_clients for span in client.connections.values()]
    print()
    print("rotation under load (kubefence webhook process):")
    print(f"  {keep_alive_sent + new_connection_sent} requests in {load_seconds:.1f} s of load")
    print(f"  {CLIENTS_PER_KIND} keep-alive clients: {keep_alive_sent} requests, {len(keep_alive_failed)} failed, {len(connections)} connections")
    print(f"  {CLIENTS_PER_KIND} new-connection clients: {new_connection_sent} requests, {len(new_connection_failed)} failed, "
          f"{len(new_connection_fingerprints)} serving certificates seen")
    for label, seconds in reload_times:
        print(f"  {label}: new certificate served {seconds * 1000:.0f} ms after the volume swap")

    assert keep_alive_failed == []
    assert new_connection_failed == []
    assert all(client.sent > 0 for client in clients)
    # Four serving certificates were loaded after the first one, and new connections saw all five.
    assert len(reload_times) == 4
    assert len(new_connection_fingerprints) == 5
    # At least one kept-alive connection carried requests across a reload.
    assert any(last > first for first, last in connections)
    assert len(pki.load_certificates(kube_stub.webhook_bundles("kubefence")[0], "bundle")) == 1
