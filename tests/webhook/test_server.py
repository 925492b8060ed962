"""The served webhook: endpoints, HTTP errors, metrics, decision log lines, policy reload and start-up."""

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from .webhook_support import ADMISSION, free_port, load_sample, make_pod, make_review

from kubefence.certs import pki
from kubefence.common.logs import DECISION_KEYS
from kubefence.webhook.app import create_app
from kubefence.webhook.server import ServeSettings, WebhookServer
from kubefence.webhook.state import WebhookState

# Upper bound for a policy change to take effect; the test servers poll every 0.2 s.
RELOAD_TIMEOUT_SECONDS = 30


def wait_for(condition, timeout: float = RELOAD_TIMEOUT_SECONDS):
    """Poll `condition` until it returns a true value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"condition not met within {timeout} s")


def test_server_healthz_ok(webhook):
    response = webhook.client.get("/healthz")
    assert response.status_code == 200
    assert response.text.strip() == "ok"


def test_server_readyz_lists_checks(webhook, tls_material):
    response = webhook.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["checks"] == {"policy": "ok", "certificate": "ok"}
    certificate = pki.load_certificates(tls_material.cert_file.read_bytes(), "serving")[0]
    assert body["details"] == {
        "certificate": {
            "ready": True,
            "reason": "serving certificate loaded",
            "not_after": certificate.not_valid_after_utc.isoformat(),
            "expiring_soon": False,
        }
    }


def test_server_tls_only_trusted_ca(webhook):
    """The server speaks TLS 1.2+ only, with the given certificate."""
    with httpx.Client(verify=True) as untrusting:
        with pytest.raises(httpx.ConnectError):
            untrusting.get(f"{webhook.base_url}/healthz")
    plain = httpx.Client(base_url=webhook.base_url.replace("https", "http"))
    with pytest.raises(httpx.TransportError):
        plain.get("/healthz")
    plain.close()


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"], ids=["plain", "charset", "case"]
)
def test_server_content_type_accepted(webhook, content_type):
    response = webhook.mutate((ADMISSION / "02-opted-in-no-annotations-map.json").read_bytes(), content_type)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", ""],
    ids=["text", "form", "jsonx", "empty"],
)
def test_server_content_type_415(webhook, content_type):
    response = webhook.mutate(load_sample("02-opted-in-no-annotations-map.json"), content_type)
    assert response.status_code == 415


def test_server_mutate_get_405(webhook):
    assert webhook.client.get("/mutate").status_code == 405


def good_review() -> dict:
    return load_sample("02-opted-in-no-annotations-map.json")


def without(path: list[str]) -> bytes:
    review = good_review()
    target = review
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return json.dumps(review).encode()


def replaced(path: list[str], value) -> bytes:
    review = good_review()
    target = review
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(review).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"[]", "not an AdmissionReview object"),
        (b'"AdmissionReview"', "not an AdmissionReview object"),
        (without(["apiVersion"]), "apiVersion None"),
        (replaced(["apiVersion"], "admission.k8s.io/v1beta1"), "'admission.k8s.io/v1beta1'"),
        (replaced(["kind"], "Pod"), "invalid kind 'Pod'"),
        (without(["request"]), "missing request"),
        (replaced(["request"], []), "invalid request []; expected an object"),
        (replaced(["request"], "x"), "invalid request 'x'; expected an object"),
        (without(["request", "uid"]), "missing request.uid"),
        (replaced(["request", "uid"], ""), "missing request.uid"),
        (replaced(["request", "uid"], 12), "invalid request.uid 12; expected a non-empty string"),
        (replaced(["request", "uid"], 5), "invalid request.uid 5; expected a non-empty string"),
        (replaced(["request", "object"], None), "missing request.object"),
        (replaced(["request", "object"], "pod"), "invalid request.object"),
        (replaced(["request", "object", "spec", "containers"], {"name": "x"}), "object.spec.containers"),
        (replaced(["request", "operation"], 5), "request.operation"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x"', "not valid JSON"),
    ],
    ids=[
        "empty", "array", "string", "no-api-version", "v1beta1", "wrong-kind", "no-request", "request-array",
        "request-string", "no-uid", "empty-uid", "uid-number", "uid-five", "null-object", "object-string", "containers-object", "operation-number",
        "truncated",
    ],
)
def test_server_malformed_review_400(webhook, body, reason):
    response = webhook.mutate(body)
    assert response.status_code == 400
    assert reason in response.text
    assert "Traceback" not in response.text


def test_server_own_namespace_exempt(webhook):
    pod = make_pod(namespace="kubefence-system", annotations={"nono.sh/profile": "--allow-all"})
    response = webhook.mutate(make_review(pod, uid="own-namespace")).json()["response"]
    assert response == {"uid": "own-namespace", "allowed": True}
    [line] = webhook.decision_lines("own-namespace")
    assert line["decision"] == "skip"
    assert line["reason"] == "exempt-namespace"


def test_server_decision_log_fields(webhook):
    review = load_sample("03-opted-in-existing-annotations.json")
    uid = "log-fields-03"
    review["request"]["uid"] = uid
    assert webhook.mutate(review).status_code == 200
    [line] = webhook.decision_lines(uid)
    assert line["logger"] == "kubefence.webhook"
    assert line["level"] == "info"
    assert line["decision"] == "inject"
    assert line["reason"] == "injected"
    assert line["namespace"] == "agents"
    assert line["pod"] == "agent-1"
    assert line["runtime_class"] == "nono-runc"
    assert line["profile"] == "claude-code"
    assert line["request_uid"] == uid
    assert line["container"] == ""
    assert line["container_id"] == ""
    assert line["runtime_handler"] == ""
    assert line["operation"] == "CREATE"
    assert line["dry_run"] is False
    assert line["patch_operations"] == 4
    assert line["message"] == ""
    assert set(DECISION_KEYS) <= set(line)


def test_server_decision_log_generate_name(webhook):
    pod = make_pod()
    del pod["metadata"]["name"]
    pod["metadata"]["generateName"] = "eval-run-"
    assert webhook.mutate(make_review(pod, uid="log-generate-name", dry_run=True)).status_code == 200
    [line] = webhook.decision_lines("log-generate-name")
    assert line["pod"] == "eval-run-"
    assert line["dry_run"] is True


def test_server_decision_log_same_keys(webhook):
    """Skip, inject and reject lines carry the same keys."""
    uids = {"keys-skip": make_pod(runtime_class=None), "keys-inject": make_pod(),
            "keys-reject": make_pod(annotations={"nono.sh/profile": "-x"})}
    for uid, pod in uids.items():
        webhook.mutate(make_review(pod, uid=uid))
    key_sets = {uid: frozenset(webhook.decision_lines(uid)[0]) - {"timestamp"} for uid in uids}
    assert len(set(key_sets.values())) == 1


def test_server_metrics_content(webhook):
    before = webhook.metric("kubefence_webhook_admission_requests_total", {"decision": "reject", "reason": "invalid-profile"}) or 0
    latency_before = webhook.metric("kubefence_webhook_admission_duration_seconds_count") or 0
    errors_before = webhook.metric("kubefence_webhook_errors_total", {"kind": "unsupported-media-type"})
    webhook.mutate((ADMISSION / "04-invalid-profile-flag-injection.json").read_bytes())
    webhook.mutate(b"{}", content_type="text/plain")
    assert webhook.metric("kubefence_webhook_admission_requests_total", {"decision": "reject", "reason": "invalid-profile"}) == before + 1
    assert webhook.metric("kubefence_webhook_admission_duration_seconds_count") == latency_before + 1
    assert webhook.metric("kubefence_webhook_errors_total", {"kind": "unsupported-media-type"}) == errors_before + 1
    assert webhook.metric("kubefence_webhook_policy_reloads_total", {"result": "failed"}) == 0
    assert webhook.metric("kubefence_webhook_profile_fallbacks_total") == 0
    assert webhook.metric("process_cpu_seconds_total") is not None
    response = webhook.client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")


def write_configmap_policy(directory, text: str, version: int) -> None:
    """Write `text` the way the kubelet updates a ConfigMap volume: a new directory, then a symlink swap."""
    data_dir = directory / f"..version-{version}"
    data_dir.mkdir()
    (data_dir / "policy.yaml").write_text(text)
    link = directory / "..data"
    temporary = directory / "..data_tmp"
    temporary.symlink_to(data_dir.name)
    os.replace(temporary, link)
    if not (directory / "policy.yaml").is_symlink():
        (directory / "policy.yaml").symlink_to("..data/policy.yaml")


def test_server_policy_reload(start_webhook, tmp_path):
    write_configmap_policy(tmp_path, "defaultProfile: default\n", 1)
    server = start_webhook("--policy", str(tmp_path / "policy.yaml"), "--policy-interval", "0.2")
    sample = load_sample("02-opted-in-no-annotations-map.json")

    def profile() -> str:
        return [line for line in server.log_lines() if line.get("event") == "admission decision"][-1]["profile"]

    server.mutate(sample)
    assert profile() == "default"

    # A valid new policy takes effect.
    write_configmap_policy(tmp_path, "defaultProfile: codex\nonInvalidProfile: default\n", 2)
    wait_for(lambda: server.metric("kubefence_webhook_policy_reloads_total", {"result": "ok"}) == 1)
    server.mutate(sample)
    assert profile() == "codex"
    fallback = server.mutate((ADMISSION / "04-invalid-profile-flag-injection.json").read_bytes()).json()["response"]
    assert fallback["allowed"] is True
    assert "'--allow-all'" in fallback["warnings"][0]
    assert server.metric("kubefence_webhook_profile_fallbacks_total") == 1

    # An invalid one is logged and counted, and the last good policy stays.
    write_configmap_policy(tmp_path, "defaultProfile: codex\nonInvalidProfil: default\n", 3)
    wait_for(lambda: server.metric("kubefence_webhook_policy_reloads_total", {"result": "failed"}) == 1)
    server.mutate(sample)
    assert profile() == "codex"
    [error] = [line for line in server.log_lines() if line.get("event") == "invalid policy; keeping the last good policy"]
    assert error["level"] == "error"
    assert "'onInvalidProfil'" in error["error"]
    assert server.metric("kubefence_webhook_policy_reloads_total", {"result": "ok"}) == 1
    assert server.client.get("/readyz").status_code == 200

    # A good one after the bad one is picked up again.
    write_configmap_policy(tmp_path, "defaultProfile: opencode\n", 4)
    wait_for(lambda: server.metric("kubefence_webhook_policy_reloads_total", {"result": "ok"}) == 2)
    server.mutate(sample)
    assert profile() == "opencode"


def run_kubefence(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kubefence", *args], capture_output=True, text=True, timeout=timeout
    )


def test_server_start_cert_without_key_exit_2(tls_material):
    result = run_kubefence("webhook", "--port", str(free_port()), "--tls-cert-file", str(tls_material.cert_file))
    assert result.returncode == 2
    assert "--tls-cert-file and --tls-private-key-file must be given together" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_start_invalid_policy_exit_2(tmp_path, tls_material):
    policy = tmp_path / "policy.yaml"
    policy.write_text("runtimeClasses: nono-runc\n")
    result = run_kubefence(
        "webhook", "--host", "127.0.0.1", "--port", str(free_port()), "--policy", str(policy),
        "--tls-cert-file", str(tls_material.cert_file), "--tls-private-key-file", str(tls_material.key_file),
    )
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [error] = [line for line in lines if line["event"] == "invalid policy; not starting"]
    assert "runtimeClasses" in error["error"]
    assert "Traceback" not in result.stderr


def test_server_start_missing_certificate_exit_2(tmp_path):
    result = run_kubefence(
        "webhook", "--host", "127.0.0.1", "--port", str(free_port()),
        "--tls-cert-file", str(tmp_path / "missing.crt"), "--tls-private-key-file", str(tmp_path / "missing.key"),
    )
    assert result.returncode == 2
    [error] = [json.loads(line) for line in result.stderr.splitlines() if '"cannot start the webhook"' in line]
    assert error["level"] == "error"
    assert "Traceback" not in result.stderr


def start_errors(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stderr.splitlines() if '"cannot start the webhook"' in line]


@pytest.mark.parametrize(
    ("cert", "key", "expected"),
    [
        ("missing", "good", "--tls-cert-file '{missing}': cannot read: No such file or directory"),
        ("good", "missing", "--tls-private-key-file '{missing}': cannot read: No such file or directory"),
        ("junk", "good", "--tls-cert-file '{junk}': not valid PEM certificates"),
        ("good", "junk", "--tls-private-key-file '{junk}': not a valid unencrypted PEM private key"),
        ("good", "other", "--tls-private-key-file '{other}' does not belong to the certificate in --tls-cert-file '{good_cert}'"),
        ("directory", "good", "--tls-cert-file '{directory}': cannot read: Is a directory"),
    ],
    ids=["cert-missing", "key-missing", "cert-not-pem", "key-not-pem", "key-mismatch", "cert-directory"],
)
def test_server_start_tls_error_names_file(tmp_path, tls_material, cert, key, expected):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    other = tmp_path / "other.key"
    # The key of another serving pair: valid PEM, but not the certificate's key.
    other.write_bytes(pki.generate_serving(pki.generate_ca(), dns_names=["localhost"]).key_pem)
    files = {
        "good": None, "missing": tmp_path / "missing.pem", "junk": junk, "other": other, "directory": tmp_path,
    }
    cert_file = tls_material.cert_file if cert == "good" else files[cert]
    key_file = tls_material.key_file if key == "good" else files[key]
    result = run_kubefence(
        "webhook", "--host", "127.0.0.1", "--port", str(free_port()),
        "--tls-cert-file", str(cert_file), "--tls-private-key-file", str(key_file),
    )
    assert result.returncode == 2
    [error] = start_errors(result)
    message = expected.format(
        missing=files["missing"], junk=junk, other=other, good_cert=tls_material.cert_file, directory=tmp_path
    )
    assert error["error"].startswith(message)
    assert "\n" not in error["error"]
    assert "Traceback" not in result.stderr


def test_server_start_port_in_use_exit_2(tls_material):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_kubefence(
            "webhook", "--host", "127.0.0.1", "--port", str(port),
            "--tls-cert-file", str(tls_material.cert_file), "--tls-private-key-file", str(tls_material.key_file),
        )
    assert result.returncode == 2
    [error] = start_errors(result)
    assert error["error"] == f"cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.parametrize("host", ["256.1.1.1", "no-such-host.invalid"], ids=["bad-address", "unknown-name"])
def test_server_start_bad_host_exit_2(tls_material, host):
    port = free_port()
    result = run_kubefence(
        "webhook", "--host", host, "--port", str(port),
        "--tls-cert-file", str(tls_material.cert_file), "--tls-private-key-file", str(tls_material.key_file),
    )
    assert result.returncode == 2
    [error] = start_errors(result)
    assert error["error"].startswith(f"cannot listen on {host}:{port}: ")


def test_server_start_policy_yaml_error_one_line(tmp_path, tls_material):
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaultProfile: [\n  a: }\n")
    result = run_kubefence(
        "webhook", "--host", "127.0.0.1", "--port", str(free_port()), "--policy", str(policy),
        "--tls-cert-file", str(tls_material.cert_file), "--tls-private-key-file", str(tls_material.key_file),
    )
    assert result.returncode == 2
    [error] = [json.loads(line) for line in result.stderr.splitlines() if '"invalid policy; not starting"' in line]
    assert error["error"] == f"{policy}: invalid YAML at line 2, column 6: expected the node content, but found '}}'"


def test_server_self_signed_ca_in_log(tmp_path):
    """Without certificate files the webhook generates a pair and names its CA file in the log."""
    log_file = tmp_path / "stderr.jsonl"
    base_url = f"https://127.0.0.1:{free_port()}"
    port = base_url.rsplit(":", 1)[1]
    with open(log_file, "wb") as stream:
        child = subprocess.Popen(
            [sys.executable, "-m", "kubefence", "webhook", "--host", "127.0.0.1", "--port", port, "--log-level", "info"],
            stdout=subprocess.DEVNULL,
            stderr=stream,
            # The generated pair goes to a new directory under TMPDIR.
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
    try:
        def ca_line():
            for raw in log_file.read_bytes().splitlines():
                line = json.loads(raw)
                if line.get("event", "").startswith("no certificate given"):
                    return line
            assert child.poll() is None, log_file.read_text()
            return None

        line = wait_for(ca_line)
        assert line["level"] == "warning"
        assert line["ca_file"].startswith(str(tmp_path))
        key_file = os.path.join(os.path.dirname(line["ca_file"]), "tls.key")
        assert os.stat(key_file).st_mode & 0o777 == 0o600
        context = ssl.create_default_context(cafile=line["ca_file"])
        with httpx.Client(base_url=base_url, verify=context) as client:
            def healthy():
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(healthy)
            assert client.get("/readyz").json()["ready"] is True
    finally:
        child.terminate()
        child.wait(timeout=30)
    # SIGTERM is a clean stop, and the generated private key goes with it.
    assert child.returncode == 0
    assert not os.path.exists(os.path.dirname(line["ca_file"]))


def test_server_ssl_context_is_uvicorn_config(tls_material, tmp_path):
    """The live SSLContext stays reachable for a certificate reloader."""
    settings = ServeSettings(
        host="127.0.0.1", port=0, tls_cert_file=str(tls_material.cert_file),
        tls_private_key_file=str(tls_material.key_file),
    )
    server = WebhookServer(settings)
    assert isinstance(server.ssl_context, ssl.SSLContext)
    assert server.ssl_context is server.config.ssl
    assert server.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.config.timeout_keep_alive > 90
    assert server.state.readiness.names() == ["policy", "certificate"]


# In-process tests: the ASGI app through httpx's ASGI transport (no socket),
# for states a running server cannot be put in.


def call_app(app, method: str, path: str, **options) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
            return await client.request(method, path, **options)

    return asyncio.run(send())


def test_app_readyz_503_when_check_fails():
    state = WebhookState()
    app = create_app(state)
    response = call_app(app, "GET", "/readyz")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "checks": {"policy": "no policy loaded"}}
    state.readiness.set("certificate", lambda: 1 / 0)
    assert "ZeroDivisionError" in call_app(app, "GET", "/readyz").json()["checks"]["certificate"]


def test_app_body_above_limit_413():
    from kubefence.common.policy import DEFAULT_POLICY

    state = WebhookState(policy=DEFAULT_POLICY)
    app = create_app(state, max_body_bytes=1024)
    body = (ADMISSION / "02-opted-in-no-annotations-map.json").read_bytes()
    assert len(body) > 1024
    response = call_app(app, "POST", "/mutate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert state.metrics.registry.get_sample_value("kubefence_webhook_errors_total", {"kind": "payload-too-large"}) == 1


def test_app_internal_error_500_without_traceback():
    state = WebhookState()  # no policy: the decision fails inside
    body = (ADMISSION / "02-opted-in-no-annotations-map.json").read_bytes()
    response = call_app(create_app(state), "POST", "/mutate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 500
    assert "Traceback" not in response.text
    assert state.metrics.registry.get_sample_value("kubefence_webhook_errors_total", {"kind": "internal"}) == 1


def test_policy_watcher_missing_file_keeps_policy(tmp_path):
    from kubefence.common.policy import load_policy
    from kubefence.webhook.state import PolicyWatcher

    path = tmp_path / "policy.yaml"
    path.write_text("defaultProfile: codex\n")
    state = WebhookState()
    watcher = PolicyWatcher(path, state)
    watcher.load_initial()
    assert state.policy == load_policy("defaultProfile: codex\n")
    path.unlink()
    assert watcher.check_once() is False
    assert watcher.check_once() is False
    assert state.policy.default_profile == "codex"
    assert state.metrics.registry.get_sample_value("kubefence_webhook_policy_reloads_total", {"result": "failed"}) == 0
    path.write_text("defaultProfile: swival\n")
    assert watcher.check_once() is True
    assert state.policy.default_profile == "swival"


@pytest.mark.parametrize("field", ["policy_interval", "certificate_interval"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0], ids=["nan", "inf", "zero", "negative"])
def test_serve_settings_interval_not_finite_rejected(field, value):
    with pytest.raises(ValueError, match="expected a positive finite number of seconds"):
        ServeSettings(**{field: value})


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("GET", "/"), ("POST", "/mutate/x")], ids=["unknown", "root", "below-mutate"])
def test_app_unknown_path_plain_text_404(method, path):
    response = call_app(create_app(WebhookState()), method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == f"not found: {path}; endpoints: POST /mutate, GET /healthz, /readyz, /metrics\n"


def test_app_wrong_method_plain_text_405():
    response = call_app(create_app(WebhookState()), "POST", "/healthz")
    assert response.status_code == 405
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "method not allowed\n"
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing Content-Type; expected application/json\n"),
        ({"content-type": ""}, "missing Content-Type; expected application/json\n"),
        ({"content-type": "text/plain"}, "unsupported content type 'text/plain'; expected application/json\n"),
    ],
    ids=["absent", "empty", "text"],
)
def test_app_content_type_message(headers, message):
    response = call_app(create_app(WebhookState()), "POST", "/mutate", content=b"{}", headers=headers)
    assert response.status_code == 415
    assert response.text == message
