"""`kubefence review` as a user runs it: a child process on the manifests in tests/data/pods."""

import json
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from .webhook_support import KUBERNETES_VERSION, PODS

MOUNT = {"name": "kubefence-nono", "mountPath": "/nono", "readOnly": True}


def review(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kubefence", "review", *args],
        capture_output=True, text=True, input=stdin, timeout=60,
    )


def reports(result: subprocess.CompletedProcess) -> list[dict]:
    return list(yaml.safe_load_all(result.stdout))


@pytest.mark.parametrize(
    ("manifest", "profile", "runtime_class"),
    [("agent-sandboxed.yaml", "default", "nono-runc"), ("agent-kata.yaml", "default", "kata-nono-sandbox")],
    ids=["runc", "kata"],
)
def test_review_opted_in_pod(manifest, profile, runtime_class):
    result = review(str(PODS / manifest))
    assert result.returncode == 0, result.stderr
    [report] = reports(result)
    assert report["allowed"] is True
    assert report["decision"] == "inject"
    assert report["profile"] == profile
    assert report["runtimeClass"] == runtime_class
    assert report["patch"]
    pod = report["patchedPod"]
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    assert pod["metadata"]["annotations"]["nono.sh/profile"] == profile
    for container in pod["spec"]["containers"]:
        assert MOUNT in container["volumeMounts"]


def test_review_plain_pod_untouched():
    result = review(str(PODS / "plain.yaml"))
    assert result.returncode == 0, result.stderr
    [report] = reports(result)
    assert (report["decision"], report["reason"], report["patch"]) == ("skip", "not-opted-in", [])
    assert report["patchedPod"] == yaml.safe_load((PODS / "plain.yaml").read_text())


def test_review_job_uses_pod_template():
    result = review(str(PODS / "job-generate-name.yaml"))
    assert result.returncode == 0, result.stderr
    [report] = reports(result)
    assert report["subject"] == "pod template of Job eval-run"
    assert report["namespace"] == "agents"
    pod = report["patchedPod"]
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["generateName"] == "eval-run-"
    assert "name" not in pod["metadata"]
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    assert pod["spec"]["initContainers"][0]["volumeMounts"] == [MOUNT]
    assert pod["spec"]["containers"][0]["volumeMounts"] == [MOUNT]


def test_review_denied_exit_1(tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        (PODS / "agent-sandboxed.yaml").read_text().replace("nono.sh/profile: default", "nono.sh/profile: '--allow-all'")
    )
    result = review(str(manifest))
    assert result.returncode == 1
    [report] = reports(result)
    assert report["allowed"] is False
    assert report["decision"] == "reject"
    assert "'--allow-all'" in report["message"]
    assert report["patchedPod"] is None


def test_review_json_output():
    result = review(str(PODS / "agent-sandboxed.yaml"), "--output", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["decision"] == "inject"


def test_review_stdin():
    result = review("-", stdin=(PODS / "agent-sandboxed.yaml").read_text())
    assert result.returncode == 0, result.stderr
    assert reports(result)[0]["decision"] == "inject"


def test_review_namespace_option_exempt():
    result = review(str(PODS / "agent-sandboxed.yaml"), "--namespace", "kube-system")
    assert result.returncode == 0, result.stderr
    [report] = reports(result)
    assert (report["namespace"], report["reason"]) == ("kube-system", "exempt-namespace")


def test_review_webhook_namespace_exempt():
    result = review(str(PODS / "agent-sandboxed.yaml"), "--webhook-namespace", "agents")
    assert reports(result)[0]["reason"] == "exempt-namespace"


def test_review_update_passes():
    result = review(str(PODS / "agent-sandboxed.yaml"), "--operation", "UPDATE")
    assert result.returncode == 0, result.stderr
    [report] = reports(result)
    assert (report["decision"], report["reason"], report["patch"]) == ("skip", "sandbox-unchanged", [])


def test_review_policy_file(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("namespaces:\n  - match: agents\n    defaultProfile: swival\n    allowedProfiles: [swival]\n")
    result = review(str(PODS / "agent-kata.yaml"), "--policy", str(policy))
    assert result.returncode == 0, result.stderr
    assert reports(result)[0]["profile"] == "swival"


def test_review_multiple_documents(tmp_path):
    manifest = tmp_path / "all.yaml"
    manifest.write_text((PODS / "plain.yaml").read_text() + "\n---\n" + (PODS / "agent-sandboxed.yaml").read_text())
    result = review(str(manifest))
    assert result.returncode == 0, result.stderr
    assert [report["decision"] for report in reports(result)] == ["skip", "inject"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "kind 'ConfigMap' has no pod to review"),
        ("kind: Pod\nmetadata: [\n", "invalid YAML"),
        ("- a\n- b\n", "expected a Kubernetes object"),
        ("", "no Kubernetes object found"),
        ("kind: Pod\nmetadata: {name: p}\nspec: {runtimeClassName: nono-runc, containers: oops}\n", "object.spec.containers"),
        ("kind: Job\nmetadata: {name: j}\nspec: {}\n", "has no pod template at spec.template"),
    ],
    ids=["configmap", "bad-yaml", "list", "empty", "containers-string", "job-without-template"],
)
def test_review_bad_manifest_exit_2(tmp_path, content, message):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(content)
    result = review(str(manifest))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("kubefence review: error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_review_missing_file_exit_2(tmp_path):
    result = review(str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr
    assert "No such file" in result.stderr


def test_review_invalid_policy_exit_2(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("allowedProfiles: [default]\ndefaultProfile: codex\n")
    result = review(str(PODS / "agent-sandboxed.yaml"), "--policy", str(policy))
    assert result.returncode == 2
    assert "defaultProfile" in result.stderr
    assert "'codex'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("webhook", ["--host", "--port", "--tls-cert-file", "--tls-private-key-file", "--policy", "--namespace", "--log-level"]),
        ("review", ["--policy", "--namespace", "--operation", "--output"]),
    ],
    ids=["webhook", "review"],
)
def test_cli_help_lists_options(command, options):
    result = subprocess.run(
        [sys.executable, "-m", "kubefence", command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for option in options:
        assert option in result.stdout


BINARY = b"\xff\xfe\x00bin"


def test_review_binary_manifest_exit_2(tmp_path):
    manifest = tmp_path / "bin.yaml"
    manifest.write_bytes(BINARY)
    result = review(str(manifest))
    assert result.returncode == 2
    assert result.stderr == f"kubefence review: error: {manifest}: not UTF-8 text (invalid byte at offset 0)\n"
    assert result.stdout == ""


def test_review_binary_stdin_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "kubefence", "review", "-"], capture_output=True, input=BINARY, timeout=60
    )
    assert result.returncode == 2
    assert b"-: not UTF-8 text" in result.stderr
    assert b"Traceback" not in result.stderr


def test_review_binary_policy_exit_2(tmp_path):
    policy = tmp_path / "bin-policy.yaml"
    # Without a byte order mark, so that PyYAML cannot take it for UTF-16.
    policy.write_bytes(b"defaultProfile: \x80\x81bin")
    result = review(str(PODS / "agent-sandboxed.yaml"), "--policy", str(policy))
    assert result.returncode == 2
    assert result.stderr == f"kubefence review: error: {policy}: not UTF-8 text (invalid byte at offset 16)\n"


def test_review_policy_yaml_error_one_line(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaultProfile: [\n  a: }\n")
    result = review(str(PODS / "agent-sandboxed.yaml"), "--policy", str(policy))
    assert result.returncode == 2
    assert result.stderr == (
        f"kubefence review: error: {policy}: invalid YAML at line 2, column 6: "
        "expected the node content, but found '}'\n"
    )
    assert "agent-sandboxed.yaml" not in result.stderr


def test_review_manifest_yaml_error_one_line(tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("kind: Pod\nmetadata: [\n  a: }\n")
    result = review(str(manifest))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"kubefence review: error: {manifest}: invalid YAML at line 3, column 6: ")


def test_review_help_names_positional_consistently():
    result = subprocess.run(
        [sys.executable, "-m", "kubefence", "review", "--help"], capture_output=True, text=True, timeout=60
    )
    description = " ".join(result.stdout.split())
    assert "usage: kubefence review [-h]" in description
    assert "POD.yaml" in description.split("positional arguments:")[0].split("]", 1)[1]
    assert "each object in POD.yaml ('-' reads standard input)" in description
    assert " FILE (" not in description
