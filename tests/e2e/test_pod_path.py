"""From a pod manifest to a process confined by Landlock, through every kubefence component.

Each test sends a pod to `kubefence webhook` over TLS and applies the
returned JSON Patch, or skips admission as a pod does when the webhook is
bypassed. It then creates the container through `kubefence nri` on the
NRI runtime simulator, with the args, env and mounts the kubelet and the
runtime would compute. The result goes into a `runc spec` config, and runc
runs it. Inside, the container tries file accesses and prints one
line for each. kube-apiserver, the kubelet and containerd are played by
the test because none of them can run here (see e2e_harness.py).
"""

import copy
import errno
import json
import os
import signal
import uuid
from dataclasses import dataclass

import pytest
import yaml

from kubefence import kubelet_sim
from kubefence.common.contracts import NONO_MOUNT_PATH, PROFILE_ANNOTATION, wrapper_prefix

from . import e2e_harness

pytestmark = pytest.mark.e2e

PERMISSION_DENIED = os.strerror(errno.EACCES)

# Tries each access and prints "<access>: allowed" or "<access>: denied (<error>)".
PROBE = """\
try() { if error=$(sh -c "$2" 2>&1 >/dev/null); then echo "$1: allowed"; else echo "$1: denied (${error##*: })"; fi; }
try "read /etc/hosts" "cat /etc/hosts"
try "write /tmp/out" "echo x > /tmp/out"
try "read /srv/secret.txt" "cat /srv/secret.txt"
try "write /etc/new" "echo x > /etc/new"
"""

# The probe's result under the built-in "default" profile.
CONFINED = {
    "read /etc/hosts": "allowed",
    "write /tmp/out": "allowed",
    "read /srv/secret.txt": f"denied ({PERMISSION_DENIED})",
    "write /etc/new": f"denied ({PERMISSION_DENIED})",
}
UNCONFINED = {access: "allowed" for access in CONFINED}

BUSYBOX = kubelet_sim.Image(cmd=("sh",))


def agent_pod(command=("/bin/sh", "-c", PROBE), args=None, env=(), annotations=None, runtime_class="nono-runc"):
    """Return an agent pod manifest that runs `command` in a busybox container."""
    metadata = {"name": f"agent-{uuid.uuid4().hex[:8]}", "namespace": "agents"}
    metadata["annotations"] = {PROFILE_ANNOTATION: "default"} if annotations is None else dict(annotations)
    container = {"name": "agent", "image": "busybox", "command": list(command)}
    if args is not None:
        container["args"] = list(args)
    if env:
        container["env"] = [{"name": name, "value": value} for name, value in env]
    spec = {"restartPolicy": "Never", "containers": [container]}
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def probe_results(stdout):
    results = {}
    for line in stdout.splitlines():
        access, separator, outcome = line.partition(": ")
        if separator and access in CONFINED:
            results[access] = outcome
    return results


@dataclass
class PodRun:
    """Where a pod went: admission, the NRI create and the container run."""

    admission: e2e_harness.Admission | None
    request: object = None
    create: object = None
    result: object = None

    @property
    def stage(self) -> str:
        """Where the pod ended: "admission", "create" (both rejections) or "ran"."""
        if self.admission is not None and not self.admission.allowed:
            return "admission"
        if self.create is not None and not self.create.ok:
            return "create"
        return "ran"

    @property
    def rejected(self) -> str:
        """The rejection message of admission or of the create, or "" when the pod ran."""
        if self.admission is not None and not self.admission.allowed:
            return f"admission: {self.admission.message}"
        if self.create is not None and not self.create.ok:
            return f"create: {self.create.error}"
        return ""


@pytest.fixture(scope="module")
def webhook(container_host, nono_host_dir, tmp_path_factory):
    policy = {"nonoVolume": {"hostPath": {"path": str(nono_host_dir), "type": "Directory"}}}
    server = e2e_harness.Webhook(tmp_path_factory.mktemp("webhook"), yaml.safe_dump(policy))
    yield server
    # uvicorn ends a SIGTERM shutdown by raising the signal again, so the
    # status is -SIGTERM rather than 0.
    assert server.close() in (0, -signal.SIGTERM), server.log_path.read_text()


def start_node(tmp_path_factory, nono_host_dir, **settings):
    pytest.importorskip("kubefence.nri.runtime_sim", reason="the NRI runtime simulator is not installed")
    return e2e_harness.Node(tmp_path_factory.mktemp("node"), {"nono_host_dir": str(nono_host_dir), **settings})


@pytest.fixture(scope="module")
def node(container_host, nono_host_dir, tmp_path_factory):
    """The NRI plugin with on_missing_profile = "reject" (the default)."""
    plugin = start_node(tmp_path_factory, nono_host_dir)
    yield plugin
    assert plugin.close() == 0, plugin.log_path.read_text()


@pytest.fixture(scope="module")
def fallback_node(container_host, nono_host_dir, tmp_path_factory):
    """The NRI plugin with on_missing_profile = "default"."""
    plugin = start_node(tmp_path_factory, nono_host_dir, on_missing_profile="default")
    yield plugin
    assert plugin.close() == 0, plugin.log_path.read_text()


@pytest.fixture
def run_pod(runc, bundle, base_spec, webhook, node):
    """Return a function that takes a pod through admission, NRI and runc."""

    def run(pod, *, through_webhook=True, on_node=node, image_files=None, container_list="containers"):
        pod = copy.deepcopy(pod)
        admission = None
        if through_webhook:
            admission = webhook.review(pod)
            if not admission.allowed:
                return PodRun(admission)
            pod = admission.pod

        empty_dirs = {}
        for volume in pod["spec"].get("volumes") or ():
            if "emptyDir" in volume:
                directory = bundle / "volumes" / volume["name"]
                directory.mkdir(parents=True)
                empty_dirs[volume["name"]] = str(directory)
        sandbox = kubelet_sim.sandbox(pod, f"sandbox-{uuid.uuid4().hex[:12]}")
        container = pod["spec"][container_list][0]
        request = kubelet_sim.create_request(
            pod, container, sandbox.id, f"container-{uuid.uuid4().hex[:12]}", BUSYBOX, empty_dirs
        )
        create = on_node.create(sandbox, request)
        if not create.ok:
            return PodRun(admission, request, create)

        for path, text in (image_files or {}).items():
            target = bundle / "rootfs" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        kubelet_sim.apply_to_spec(base_spec, create.final, container.get("workingDir"))
        return PodRun(admission, request, create, runc.run(bundle, base_spec))

    return run


def test_pod_path_workload_is_pid1_with_original_args(run_pod, node):
    command = ["/bin/sh", "-c", "cat /proc/1/cmdline; exit 0", "agent"]
    pod = agent_pod(command=command, args=["two words", "--"])

    run = run_pod(pod)

    assert run.rejected == ""
    assert run.admission.patch, "the webhook returned no patch for an opted-in pod"
    assert list(run.create.final.args) == wrapper_prefix("default") + command + ["two words", "--"]
    assert run.result.exit_code == 0, run.result.stderr
    assert run.result.stdout.split("\0")[:-1] == command + ["two words", "--"]


def test_pod_path_decision_logged(run_pod, node):
    pod = agent_pod()

    run = run_pod(pod)

    lines = node.decision_lines(run.request.id)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["decision"] == "inject"
    assert line["profile"] == "default"
    assert line["namespace"] == "agents"
    assert line["pod"] == pod["metadata"]["name"]
    assert line["container"] == "agent"
    assert line["runtime_handler"] == "nono-runc"
    validations = node.decision_lines(run.request.id, event="validation decision")
    assert [line["decision"] for line in validations] == ["inject"]


def test_pod_path_admission_logged(run_pod, webhook):
    pod = agent_pod()

    run_pod(pod)

    lines = [line for line in e2e_harness.log_lines(webhook.log_path) if line.get("pod") == pod["metadata"]["name"]]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["decision"] == "inject"
    assert line["profile"] == "default"
    assert line["namespace"] == "agents"
    assert line["runtime_class"] == "nono-runc"


def test_pod_path_forbidden_access_denied(run_pod):
    run = run_pod(agent_pod())

    assert run.rejected == ""
    results = probe_results(run.result.stdout)
    assert results["read /srv/secret.txt"] == f"denied ({PERMISSION_DENIED})"
    assert results["write /etc/new"] == f"denied ({PERMISSION_DENIED})"


def test_pod_path_granted_access_works(run_pod):
    run = run_pod(agent_pod())

    assert run.rejected == ""
    results = probe_results(run.result.stdout)
    assert results["read /etc/hosts"] == "allowed"
    assert results["write /tmp/out"] == "allowed"


def test_pod_path_nono_mount_is_trusted_and_read_only(run_pod, nono_host_dir):
    run = run_pod(agent_pod())

    mounts = [mount for mount in run.create.final.mounts if mount.destination == NONO_MOUNT_PATH]
    assert len(mounts) == 1, run.create.final.mounts
    assert mounts[0].source == str(nono_host_dir)
    assert "ro" in mounts[0].options


def test_pod_path_init_container_confined(run_pod):
    pod = agent_pod()
    pod["spec"]["initContainers"] = [{"name": "fetch", "image": "busybox", "command": ["/bin/sh", "-c", PROBE]}]

    run = run_pod(pod, container_list="initContainers")

    assert run.rejected == ""
    assert list(run.create.final.args[:5]) == wrapper_prefix("default")
    assert probe_results(run.result.stdout) == CONFINED


def test_pod_path_not_opted_in_unconfined(run_pod):
    pod = agent_pod(runtime_class=None, annotations={})

    run = run_pod(pod)

    assert run.rejected == ""
    assert run.admission.patch == []
    assert run.create.adjustment.is_empty()
    assert run.create.final.args == run.request.args
    assert run.create.final.env == run.request.env
    assert NONO_MOUNT_PATH not in [mount.destination for mount in run.create.final.mounts]
    assert run.result.exit_code == 0, run.result.stderr
    assert probe_results(run.result.stdout) == UNCONFINED


# A /nono/nono that confines nothing: it drops `wrap --profile P --` and
# runs the command.
FAKE_NONO = "#!/bin/sh\nshift 4\nexec \"$@\"\n"

# A user profile that grants write access to /etc under the built-in name.
WIDE_PROFILE = json.dumps({
    "security": {"groups": ["system_read_linux", "system_write_linux"]},
    "filesystem": {"allow": ["/etc"]},
})


def fake_nono_dir(host_dir):
    """Create a host directory holding FAKE_NONO as `nono` and return its path."""
    host_dir.mkdir(parents=True)
    (host_dir / "nono").write_text(FAKE_NONO)
    os.chmod(host_dir / "nono", 0o755)
    return str(host_dir)


def own_nono_volume(host):
    pod = agent_pod()
    pod["spec"]["volumes"] = [{"name": "tools", "hostPath": {"path": fake_nono_dir(host / "tools"), "type": "Directory"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tools", "mountPath": NONO_MOUNT_PATH}]
    return pod, {}


def own_nono_subpath(host, mount_path="/nono"):
    pod = agent_pod()
    fake_nono_dir(host / "tools" / "nono")
    pod["spec"]["volumes"] = [{"name": "tools", "hostPath": {"path": str(host / "tools"), "type": "Directory"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tools", "mountPath": mount_path, "subPath": "nono"}]
    return pod, {}


# Each way a pod can try to widen its sandbox: a function of a scratch
# host directory that returns the pod and the files its image carries,
# and where the attempt ends through the webhook and with the webhook
# bypassed: rejected at "admission", rejected at "create" by the NRI
# plugin, or "ran" with the profile's grants unchanged.
WIDENING = {
    "own-nono-volume": (own_nono_volume, "admission", "create"),
    "own-nono-subpath": (own_nono_subpath, "admission", "create"),
    "own-nono-trailing-slash": (lambda host: own_nono_subpath(host, "/nono/"), "admission", "create"),
    "nono-allow": (lambda host: (agent_pod(env=[("NONO_ALLOW", "/etc")]), {}), "admission", "create"),
    "ld-preload": (lambda host: (agent_pod(env=[("LD_PRELOAD", "/srv/evil.so")]), {}), "admission", "create"),
    "tmpdir": (lambda host: (agent_pod(env=[("TMPDIR", "/etc")]), {}), "ran", "ran"),
    "xdg-config-home": (
        lambda host: (
            agent_pod(env=[("XDG_CONFIG_HOME", "/config")]),
            {"/config/nono/profiles/default.json": WIDE_PROFILE},
        ),
        "ran",
        "ran",
    ),
    "home": (
        lambda host: (
            agent_pod(env=[("HOME", "/home/agent")]),
            {"/home/agent/.config/nono/profiles/default.json": WIDE_PROFILE},
        ),
        "ran",
        "ran",
    ),
    "profile-path-annotation": (
        lambda host: (agent_pod(annotations={PROFILE_ANNOTATION: "/config/wide.json"}), {"/config/wide.json": WIDE_PROFILE}),
        "admission",
        "create",
    ),
    "allow-flag-annotation": (
        lambda host: (agent_pod(annotations={PROFILE_ANNOTATION: "--allow=/etc"}), {}),
        "admission",
        "create",
    ),
}


@pytest.mark.parametrize("through_webhook", [True, False], ids=["webhook", "webhook-bypassed"])
@pytest.mark.parametrize("case", list(WIDENING))
def test_pod_path_widening_never_wider(run_pod, tmp_path, case, through_webhook):
    build, through_webhook_outcome, bypassed_outcome = WIDENING[case]
    pod, image_files = build(tmp_path / "host")

    run = run_pod(pod, through_webhook=through_webhook, image_files=image_files)

    expected = through_webhook_outcome if through_webhook else bypassed_outcome
    assert run.stage == expected, run.rejected
    if expected == "ran":
        assert run.result.exit_code == 0, run.result.stderr
        assert probe_results(run.result.stdout) == CONFINED


# Profile annotations that reach the node when the webhook is bypassed.
HOSTILE_ANNOTATIONS = {
    "missing": {},
    "empty": {PROFILE_ANNOTATION: ""},
    "flag": {PROFILE_ANNOTATION: "--allow=/etc"},
    "two-words": {PROFILE_ANNOTATION: "default --allow /"},
    "path": {PROFILE_ANNOTATION: "../../etc/passwd"},
    "underscore": {PROFILE_ANNOTATION: "claude_code"},
    "not-allowed": {PROFILE_ANNOTATION: "python-dev"},
    "too-long": {PROFILE_ANNOTATION: "a" * 65},
}


@pytest.mark.parametrize("case", list(HOSTILE_ANNOTATIONS))
def test_pod_path_bypassed_annotation_rejected(run_pod, node, case):
    run = run_pod(agent_pod(annotations=HOSTILE_ANNOTATIONS[case]), through_webhook=False)

    assert run.rejected.startswith("create: ")
    assert run.result is None
    lines = node.decision_lines(run.request.id)
    assert [line["decision"] for line in lines] == ["reject"]


@pytest.mark.parametrize("case", list(HOSTILE_ANNOTATIONS))
def test_pod_path_bypassed_annotation_falls_back(run_pod, fallback_node, case):
    run = run_pod(agent_pod(annotations=HOSTILE_ANNOTATIONS[case]), through_webhook=False, on_node=fallback_node)

    assert run.rejected == ""
    assert list(run.create.final.args[:5]) == wrapper_prefix("default")
    assert probe_results(run.result.stdout) == CONFINED
    lines = fallback_node.decision_lines(run.request.id)
    assert [line["decision"] for line in lines] == ["inject"]
    assert lines[0]["profile"] == "default"


def test_pod_path_bypassed_valid_annotation_wrapped(run_pod):
    run = run_pod(agent_pod(annotations={PROFILE_ANNOTATION: "default"}), through_webhook=False)

    assert run.rejected == ""
    assert list(run.create.final.args[:5]) == wrapper_prefix("default")
    assert probe_results(run.result.stdout) == CONFINED
