"""Fixtures for the webhook tests: a throwaway CA, and real `kubefence webhook` processes on loopback ports."""

import pytest
from .webhook_support import TlsMaterial, WebhookProcess

from kubefence.certs import pki


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory) -> TlsMaterial:
    """A CA and a serving pair for 127.0.0.1, built once: key generation is the slow part."""
    directory = tmp_path_factory.mktemp("tls")
    ca = pki.generate_ca(common_name="kubefence-test-ca")
    serving = pki.generate_serving(ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    material = TlsMaterial(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    material.ca_file.write_bytes(ca.cert_pem)
    material.cert_file.write_bytes(serving.cert_pem)
    material.key_file.write_bytes(serving.key_pem)
    material.key_file.chmod(0o600)
    return material


@pytest.fixture(scope="session")
def start_webhook(tls_material, tmp_path_factory):
    """Factory: start a webhook with extra arguments; every process is stopped at the end of the session."""
    started: list[WebhookProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WebhookProcess:
        log_file = tmp_path_factory.mktemp("webhook-log") / "stderr.jsonl"
        tls_args = ["--tls-cert-file", str(tls_material.cert_file), "--tls-private-key-file", str(tls_material.key_file)]
        # Explicit log level: the developer's KUBEFENCE_LOG_LEVEL must not hide decision lines.
        tls_args += ["--log-level", "info"]
        process = WebhookProcess([*tls_args, *args], log_file, tls_material, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def webhook(start_webhook) -> WebhookProcess:
    """The shared server: embedded default policy, own namespace kubefence-system."""
    return start_webhook("--namespace", "kubefence-system")
