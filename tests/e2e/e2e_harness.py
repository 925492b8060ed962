"""The servers of the full path: `kubefence webhook` over TLS and `kubefence nri` on a runtime simulator.

There is no kube-apiserver, kubelet or containerd on the test machines,
so the tests play their parts. They send the AdmissionReview and apply the
returned JSON Patch as kube-apiserver does. They compute the container the
way the kubelet and the runtime do (`kubefence.kubelet_sim`). They drive
the NRI plugin through `kubefence.nri.runtime_sim`, which speaks the
runtime's side of the NRI protocol over a real unix socket. Both kubefence
servers run as their real command, in a subprocess.
"""

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jsonpatch

from kubefence.certs import pki

# Bounds for a server to come up and for one request.
START_TIMEOUT_SECONDS = 30
REQUEST_TIMEOUT_SECONDS = 10
STOP_TIMEOUT_SECONDS = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_process(args: list[str], log_path: Path) -> subprocess.Popen:
    """Start `kubefence ARGS...` with this interpreter, stdout and stderr to `log_path`."""
    log = log_path.open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "kubefence", *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    finally:
        log.close()


def stop_process(process: subprocess.Popen) -> int:
    """Stop a server with SIGTERM, or SIGKILL when it does not exit in time; return its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_SECONDS)
    return process.returncode


def log_lines(log_path: Path) -> list[dict]:
    """Return the JSON log lines a server wrote so far (other lines are left out)."""
    lines = []
    for raw in log_path.read_text().splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            lines.append(record)
    return lines


@dataclass(frozen=True)
class Admission:
    """What the webhook returned for one pod, and the pod after its patch."""

    allowed: bool
    message: str
    patch: list
    pod: dict | None


class Webhook:
    """`kubefence webhook` over TLS with a throwaway CA, queried by an httpx client that trusts only that CA."""

    def __init__(self, workdir: Path, policy_text: str):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log_path = workdir / "webhook.log"
        ca = pki.generate_ca()
        serving = pki.generate_serving(ca, ["localhost"], ["127.0.0.1"])
        self.ca_file = workdir / "ca.crt"
        self.ca_file.write_bytes(ca.cert_pem)
        (workdir / "tls.crt").write_bytes(serving.cert_pem)
        (workdir / "tls.key").write_bytes(serving.key_pem)
        os.chmod(workdir / "tls.key", 0o600)
        (workdir / "policy.yaml").write_text(policy_text)
        self.process = start_process([
            "webhook", "--host", "127.0.0.1", "--port", str(self.port),
            "--tls-cert-file", str(workdir / "tls.crt"), "--tls-private-key-file", str(workdir / "tls.key"),
            "--policy", str(workdir / "policy.yaml"),
        ], self.log_path)
        trust = ssl.create_default_context(cafile=str(self.ca_file))
        self.client = httpx.Client(base_url=self.url, verify=trust, timeout=REQUEST_TIMEOUT_SECONDS)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kubefence webhook exited with {self.process.returncode}: {self.log_path.read_text()}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"kubefence webhook not ready after {START_TIMEOUT_SECONDS} s: {self.log_path.read_text()}")

    def review(self, pod: dict) -> Admission:
        """Send `pod` as a CREATE AdmissionReview and apply the returned patch as kube-apiserver does."""
        uid = str(uuid.uuid4())
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": pod["metadata"].get("name", ""),
                "namespace": pod["metadata"].get("namespace", "default"),
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:agents:e2e"},
                "object": pod,
                "oldObject": None,
                "dryRun": False,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        }
        reply = self.client.post("/mutate", json=review)
        reply.raise_for_status()
        response = reply.json()["response"]
        assert response["uid"] == uid, f"the webhook answered uid {response['uid']!r} for {uid!r}"
        if not response["allowed"]:
            return Admission(False, response.get("status", {}).get("message", ""), [], None)
        patch = []
        if "patch" in response:
            assert response["patchType"] == "JSONPatch"
            patch = json.loads(base64.b64decode(response["patch"]))
        return Admission(True, "", patch, jsonpatch.apply_patch(pod, patch, in_place=False))

    def close(self) -> int:
        self.client.close()
        return stop_process(self.process)


class EventLoopThread:
    """An asyncio event loop in a thread of its own, so synchronous tests can drive the simulator."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float = REQUEST_TIMEOUT_SECONDS * 3):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STOP_TIMEOUT_SECONDS)
        self.loop.close()


@dataclass
class Node:
    """A runtime simulator on a unix socket with `kubefence nri` registered to it."""

    workdir: Path
    settings: dict
    loop: EventLoopThread = field(default_factory=EventLoopThread)

    def __post_init__(self):
        self.socket_path = str(self.workdir / "nri.sock")
        self.log_path = self.workdir / "nri.log"
        self.config_path = self.workdir / "nri.toml"
        settings = {
            "socket_path": self.socket_path,
            "state_dir": str(self.workdir / "state"),
            "metrics_address": f"127.0.0.1:{free_port()}",
            **self.settings,
        }
        self.config_path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
        from kubefence.nri.runtime_sim import RuntimeSimulator

        self.simulator = RuntimeSimulator(self.socket_path)
        self.loop.run(self.simulator.start())
        self.process = start_process(["nri", "--config", str(self.config_path)], self.log_path)
        self.wait_registered()

    def wait_registered(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                self.loop.run(self.simulator.wait_plugin(timeout=0.5))
                return
            except (TimeoutError, asyncio.TimeoutError):
                continue
        status = stop_process(self.process)
        self.loop.run(self.simulator.stop())
        self.loop.close()
        raise RuntimeError(f"kubefence nri did not register (exit status {status}): {self.log_path.read_text()}")

    def create(self, sandbox, container):
        """Send RunPodSandbox and CreateContainer; return the simulator's CreateResult."""
        self.loop.run(self.simulator.run_pod_sandbox(sandbox))
        return self.loop.run(self.simulator.create_container(sandbox, container))

    def decision_lines(self, container_id: str, event: str = "decision") -> list[dict]:
        """Return the plugin's log lines for `container_id` with `event` ("decision" for CreateContainer)."""
        return [
            line for line in log_lines(self.log_path)
            if line.get("container_id") == container_id and line.get("event") == event
        ]

    def close(self) -> int:
        status = stop_process(self.process)
        self.loop.run(self.simulator.stop())
        self.loop.close()
        return status
