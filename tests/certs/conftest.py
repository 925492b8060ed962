"""Fixtures for the certificate tests: fixed times, CAs built once, the Kubernetes API stub."""

import datetime

import pytest
from .kube_api_stub import KubeApiStub

from kubefence.certs import pki
from kubefence.certs.options import EnsureOptions

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = datetime.timedelta(days=1)

NAMESPACE = "kubefence"
SERVICE = "kubefence-webhook"
SERVICE_DNS_NAMES = [SERVICE, f"{SERVICE}.{NAMESPACE}", f"{SERVICE}.{NAMESPACE}.svc", f"{SERVICE}.{NAMESPACE}.svc.cluster.local"]


def make_options(**overrides) -> EnsureOptions:
    values = {
        "namespace": NAMESPACE,
        "service": SERVICE,
        "ca_secret": "kubefence-ca",
        "tls_secret": "kubefence-tls",
        "webhook_config": "kubefence",
    }
    values.update(overrides)
    return EnsureOptions(**values)


# Built once per session because RSA and even ECDSA generation add up over
# dozens of tests; every test treats them as read-only.
@pytest.fixture(scope="session")
def ca_a() -> pki.KeyPair:
    return pki.generate_ca("test-ca-a", now=NOW - 10 * DAY)


@pytest.fixture(scope="session")
def ca_b() -> pki.KeyPair:
    return pki.generate_ca("test-ca-b", now=NOW - 10 * DAY)


@pytest.fixture(scope="session")
def leaf_a(ca_a) -> pki.KeyPair:
    """A serving pair for the test Service, signed by ca_a, issued ten days before NOW."""
    return pki.generate_serving(ca_a, SERVICE_DNS_NAMES, now=NOW - 10 * DAY)


@pytest.fixture
def kube_stub():
    stub = KubeApiStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def kubeconfig(kube_stub, tmp_path):
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(kube_stub.kubeconfig())
    return str(path)
