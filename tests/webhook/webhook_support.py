"""Helpers for the webhook tests: sample loading, review builders, and a `kubefence webhook` child process.

The servers are the real command (`python -m kubefence webhook`) in a child
process, serving HTTPS with a serving certificate from `kubefence.certs.pki`.
The tests talk to them with httpx over TLS, trusting only the test CA, and
read the decision log lines from the process's stderr.
"""

import base64
import copy
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

DATA = Path(__file__).resolve().parent.parent / "data"
ADMISSION = DATA / "admission"
PODS = DATA / "pods"

# Kubernetes release whose Pod schema the patched pods must pass.
KUBERNETES_VERSION = "1.33.0"

# Upper bound for a server to come up; start-up is mostly imports (about 1 s here).
STARTUP_TIMEOUT_SECONDS = 60


def load_sample(name: str) -> dict:
    return json.loads((ADMISSION / name).read_bytes())


@dataclass
class TlsMaterial:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebhookProcess:
    """A running `kubefence webhook` child process and an httpx client for it."""

    def __init__(self, args: list[str], log_file: Path, tls: TlsMaterial, env: dict[str, str] | None = None):
        self.port = free_port()
        self.log_file = log_file
        self.base_url = f"https://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "kubefence", "webhook", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self._log_stream = open(log_file, "wb")
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self._log_stream, env={**os.environ, **(env or {})}
        )
        self.client = httpx.Client(base_url=self.base_url, verify=tls.client_context(), timeout=30)
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"webhook exited with {self.process.returncode}:\n{self.log_file.read_text()}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"webhook not serving after {STARTUP_TIMEOUT_SECONDS} s:\n{self.log_file.read_text()}")

    def mutate(self, review: dict | bytes, content_type: str = "application/json") -> httpx.Response:
        body = review if isinstance(review, bytes) else json.dumps(review).encode()
        return self.client.post("/mutate", content=body, headers={"content-type": content_type})

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log_file.read_bytes().splitlines():
            if raw.strip():
                lines.append(json.loads(raw))
        return lines

    def decision_lines(self, uid: str) -> list[dict]:
        return [line for line in self.log_lines() if line.get("event") == "admission decision" and line.get("request_uid") == uid]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Return the value of one sample from /metrics, or None when absent."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and (labels is None or all(sample.labels.get(k) == v for k, v in labels.items())):
                    return sample.value
        return None

    def stop(self) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_stream.close()
        return self.process.returncode


def make_pod(
    containers: list[dict] | None = None,
    *,
    name: str = "agent-1",
    namespace: str = "agents",
    runtime_class: str | None = "nono-runc",
    annotations: dict | None = None,
    **spec: object,
) -> dict:
    pod_spec: dict = {"containers": containers or [{"name": "agent", "image": "python:3.12-slim"}]}
    if runtime_class is not None:
        pod_spec["runtimeClassName"] = runtime_class
    pod_spec.update(spec)
    metadata: dict = {"name": name, "namespace": namespace}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def make_review(
    pod: dict | None,
    *,
    uid: str = "00000000-0000-4000-8000-000000000000",
    operation: str = "CREATE",
    sub_resource: str | None = None,
    old_pod: dict | None = None,
    dry_run: bool = False,
) -> dict:
    namespace = (pod or {}).get("metadata", {}).get("namespace", "agents")
    request = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": (pod or {}).get("metadata", {}).get("name", ""),
        "namespace": namespace,
        "operation": operation,
        "object": copy.deepcopy(pod),
        "oldObject": copy.deepcopy(old_pod),
        "dryRun": dry_run,
    }
    if sub_resource is not None:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def decode_patch(response: dict) -> list[dict]:
    if "patch" not in response:
        return []
    return json.loads(base64.b64decode(response["patch"]))
