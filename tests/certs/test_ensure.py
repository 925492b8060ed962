"""The `ensure` I/O shell, driven through the real `kubernetes` client.

There is no kube-apiserver on the test machines: the client talks to the
small HTTP stub in kube_api_stub.py, which serves only the Secret and
MutatingWebhookConfiguration endpoints `ensure` uses, with resourceVersion
checks and 409 responses like the real server.
"""

import io

import orjson
import pytest
from .conftest import NAMESPACE, SERVICE_DNS_NAMES, make_options
from kubernetes import config

from kubefence.certs import pki
from kubefence.certs.ensure import ENSURE_LOG_KEYS, EnsureError, KubeObjects, ensure
from kubefence.common.logs import configure_logging

CA_PATH = f"/api/v1/namespaces/{NAMESPACE}/secrets/kubefence-ca"
TLS_PATH = f"/api/v1/namespaces/{NAMESPACE}/secrets/kubefence-tls"
WEBHOOK_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/kubefence"
WEBHOOKS = ["pods.kubefence.dev", "pods-reinvoke.kubefence.dev"]


@pytest.fixture
def log_output():
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)
    configure_logging("debug", stream=stream)
    yield buffer
    configure_logging("info")


def parse_log(buffer: io.BytesIO) -> list[dict]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


@pytest.fixture
def objects(kubeconfig):
    api_client = config.new_client_from_config(config_file=kubeconfig)
    yield KubeObjects(api_client)
    api_client.close()


def writes(stub) -> list[tuple[str, str]]:
    return [(method, path) for method, path in stub.requests if method != "GET"]


def test_ensure_fresh_install(kube_stub, objects, log_output):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)

    result = ensure(make_options(), objects, backoff=0)

    assert result.attempts == 1
    assert writes(kube_stub) == [
        ("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets"),
        ("PATCH", WEBHOOK_PATH),
        ("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets"),
    ]
    ca_secret = kube_stub.secrets[(NAMESPACE, "kubefence-ca")]
    tls_secret = kube_stub.secrets[(NAMESPACE, "kubefence-tls")]
    assert ca_secret["type"] == "kubernetes.io/tls"
    assert tls_secret["type"] == "kubernetes.io/tls"
    assert ca_secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "kubefence-certs"}
    tls = kube_stub.secret_data(NAMESPACE, "kubefence-tls")
    ca = kube_stub.secret_data(NAMESPACE, "kubefence-ca")
    certificate, _ = pki.load_pair(tls["tls.crt"], tls["tls.key"], result.material.leaf.certificate.not_valid_before_utc, "serving")
    assert pki.dns_names_of(certificate) == SERVICE_DNS_NAMES
    assert pki.is_issued_by(certificate, pki.load_certificates(ca["tls.crt"], "ca")[0])
    assert kube_stub.webhook_bundles("kubefence") == [ca["ca.crt"], ca["ca.crt"]]
    assert tls["ca.crt"] == ca["ca.crt"]


def test_ensure_second_run_only_reads(kube_stub, objects):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)
    ensure(make_options(), objects, backoff=0)
    kube_stub.requests.clear()

    result = ensure(make_options(), objects, backoff=0)

    assert result.plan.steps == ()
    assert writes(kube_stub) == []
    assert [method for method, _ in kube_stub.requests] == ["GET", "GET", "GET"]


def test_ensure_log_line_fields(kube_stub, objects, log_output):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)

    result = ensure(make_options(), objects, backoff=0)

    lines = [line for line in parse_log(log_output) if line["event"] == "certs.ensure"]
    assert len(lines) == 1
    line = lines[0]
    assert [key for key in line if key in ENSURE_LOG_KEYS] == list(ENSURE_LOG_KEYS)
    assert line["level"] == "info"
    assert line["namespace"] == NAMESPACE
    assert line["ca_secret"] == "kubefence-ca"
    assert line["tls_secret"] == "kubefence-tls"
    assert line["webhook_config"] == "kubefence"
    assert line["attempt"] == 1
    assert line["steps"] == ["create-ca", "issue-leaf", "write-ca-secret", "patch-ca-bundle", "write-tls-secret"]
    assert line["current_ca"] == pki.fingerprint(result.material.active_ca.certificate)
    assert line["next_ca"] == ""
    assert line["retired_cas"] == 0
    assert line["leaf_serial"] == format(result.material.leaf.certificate.serial_number, "x")


def test_ensure_logs_no_key_or_certificate(kube_stub, objects, log_output):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)
    ensure(make_options(), objects, backoff=0)
    ensure(make_options(rotate="ca"), objects, backoff=0)
    kube_stub.put_secret(NAMESPACE, "kubefence-tls", {"tls.crt": b"garbage", "tls.key": b"garbage"})
    ensure(make_options(), objects, backoff=0)

    text = log_output.getvalue()

    assert b"PRIVATE KEY" not in text
    assert b"BEGIN CERTIFICATE" not in text
    assert b"certs.repair" in text


def test_ensure_conflict_on_ca_secret_retried(kube_stub, objects, log_output):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)
    ensure(make_options(), objects, backoff=0)
    kube_stub.interfere[CA_PATH] = 1
    kube_stub.requests.clear()

    result = ensure(make_options(rotate="ca"), objects, backoff=0)

    assert result.attempts == 2
    assert writes(kube_stub) == [("PUT", CA_PATH), ("PUT", CA_PATH), ("PATCH", WEBHOOK_PATH), ("PUT", TLS_PATH)]
    conflicts = [line for line in parse_log(log_output) if line["event"] == "certs.conflict"]
    assert len(conflicts) == 1
    assert conflicts[0]["level"] == "warning"
    assert conflicts[0]["attempt"] == 1
    assert "the object has been modified" in conflicts[0]["error"]
    assert kube_stub.secret_data(NAMESPACE, "kubefence-ca")["next.crt"]


def test_ensure_conflict_on_webhook_patch_retried(kube_stub, objects):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)
    kube_stub.interfere[WEBHOOK_PATH] = 2

    result = ensure(make_options(), objects, backoff=0)

    assert result.attempts == 3
    # The CA Secret written by the first attempt is reused, not replaced.
    assert [m for m, p in writes(kube_stub) if p.endswith("/secrets")] == ["POST", "POST"]
    ca = kube_stub.secret_data(NAMESPACE, "kubefence-ca")
    assert kube_stub.webhook_bundles("kubefence") == [ca["ca.crt"], ca["ca.crt"]]


def test_ensure_already_exists_on_create_retried(kube_stub, objects):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)
    # Another writer creates the serving Secret, without data, just before us.
    kube_stub.interfere[TLS_PATH] = 1

    result = ensure(make_options(), objects, backoff=0)

    assert result.attempts == 2
    assert ("PUT", TLS_PATH) in writes(kube_stub)
    tls = kube_stub.secret_data(NAMESPACE, "kubefence-tls")
    assert set(tls) == {"tls.crt", "tls.key", "ca.crt"}


def test_ensure_gives_up_after_bounded_conflicts(kube_stub, objects):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)
    kube_stub.interfere[WEBHOOK_PATH] = 100

    with pytest.raises(EnsureError, match="gave up after 3 attempts"):
        ensure(make_options(), objects, attempts=3, backoff=0)

    assert [m for m, p in kube_stub.requests if p == WEBHOOK_PATH].count("PATCH") == 3


def test_ensure_without_webhook_config_object(kube_stub, objects, log_output):
    result = ensure(make_options(), objects, backoff=0)

    assert "patch-ca-bundle" not in result.plan.steps
    missing = [line for line in parse_log(log_output) if line["event"] == "certs.webhook_config_missing"]
    assert missing[0]["webhook_config"] == "kubefence"
    assert (NAMESPACE, "kubefence-tls") in kube_stub.secrets


def test_ensure_webhook_config_without_bundle_gets_one(kube_stub, objects):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)
    ensure(make_options(), objects, backoff=0)
    bundle = kube_stub.webhook_bundles("kubefence")[0]
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)  # recreated by hand, without caBundle

    result = ensure(make_options(), objects, backoff=0)

    assert result.plan.steps == ("patch-ca-bundle",)
    assert kube_stub.webhook_bundles("kubefence") == [bundle, bundle]


def test_ensure_repairs_secret_edited_by_hand(kube_stub, objects, log_output):
    kube_stub.add_webhook_config("kubefence", WEBHOOKS)
    ensure(make_options(), objects, backoff=0)
    good = kube_stub.secret_data(NAMESPACE, "kubefence-tls")
    kube_stub.put_secret(NAMESPACE, "kubefence-tls", {"tls.crt": good["tls.crt"], "tls.key": b"-----BEGIN PRIVATE KEY-----\n"})

    result = ensure(make_options(), objects, backoff=0)

    assert "issue-leaf" in result.plan.steps
    repairs = [line for line in parse_log(log_output) if line["event"] == "certs.repair"]
    assert repairs[0]["level"] == "warning"
    assert "serving certificate key: not a valid unencrypted PEM private key" in repairs[0]["problem"]
    tls = kube_stub.secret_data(NAMESPACE, "kubefence-tls")
    pki.load_pair(tls["tls.crt"], tls["tls.key"], result.material.leaf.certificate.not_valid_before_utc, "serving")


def test_ensure_keeps_secret_labels_and_annotations(kube_stub, objects):
    ensure(make_options(webhook_config=""), objects, backoff=0)
    secret = kube_stub.secrets[(NAMESPACE, "kubefence-tls")]
    secret["metadata"]["labels"] = {"team": "platform"}
    secret["metadata"]["annotations"] = {"example.org/owner": "ops"}

    ensure(make_options(webhook_config="", rotate="leaf"), objects, backoff=0)

    metadata = kube_stub.secrets[(NAMESPACE, "kubefence-tls")]["metadata"]
    assert metadata["labels"] == {"team": "platform"}
    assert metadata["annotations"] == {"example.org/owner": "ops"}


def test_ensure_opaque_secret_type_kept(kube_stub, objects):
    kube_stub.put_secret(NAMESPACE, "kubefence-tls", {"tls.crt": b"x", "tls.key": b"y"}, secret_type="Opaque")

    result = ensure(make_options(webhook_config=""), objects, backoff=0)

    assert result.plan.tls_secret_type == "Opaque"
    assert kube_stub.secrets[(NAMESPACE, "kubefence-tls")]["type"] == "Opaque"


def test_ensure_api_error_names_object(kube_stub, tmp_path):
    wrong = tmp_path / "wrong-token.yaml"
    wrong.write_text(kube_stub.kubeconfig().replace("stub-token", "wrong"))
    api_client = config.new_client_from_config(config_file=str(wrong))

    with pytest.raises(EnsureError, match=r"read Secret kubefence/kubefence-ca failed: HTTP 401 missing or wrong bearer token"):
        ensure(make_options(), KubeObjects(api_client), backoff=0)

    api_client.close()


def test_ensure_unreachable_server(tmp_path, kube_stub):
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(kube_stub.kubeconfig())
    kube_stub.stop()
    api_client = config.new_client_from_config(config_file=str(path))
    api_client.configuration.retries = 0

    with pytest.raises(EnsureError, match="read Secret kubefence/kubefence-ca failed"):
        ensure(make_options(), KubeObjects(api_client), backoff=0)
