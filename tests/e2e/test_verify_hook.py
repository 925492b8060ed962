"""The createContainer hook `kubefence-verify` under real runc, through the webhook and the NRI plugin.

An image can ship /nono as a symlink, for example `/nono -> /data/tools`,
while the pod mounts an ordinary volume at /data/tools that holds its own
executable `nono`. The webhook and the plugin see only mount destinations
and accept the pod. runc mounts the trusted directory through the symlink
(at /data/tools) and the deeper pod volume on top of it, so /nono/nono
would be the pod's file, running without Landlock. With `verify_hook` on,
the plugin adds the hook that node-setup installed, and the hook fails the
create before pivot_root. The hook also stops the reverse case, an image
symlink `/data -> /nono` with a pod file mount at /data/nono, which lands on
/nono/nono. kube-apiserver, the kubelet and containerd are
played by the test (see e2e_harness.py).
"""

import copy
import errno
import os
import signal
import uuid
from pathlib import Path

import pytest
import yaml

from kubefence import kubelet_sim, oci
from kubefence.common.contracts import NONO_MOUNT_PATH, PROFILE_ANNOTATION, VERIFY_HOOK_NAME, wrapper_prefix
from kubefence.nri import nodesetup

from . import e2e_harness

pytestmark = pytest.mark.e2e

STANDIN = Path(__file__).with_name("nono_standin.py")
PERMISSION_DENIED = os.strerror(errno.EACCES)
BUSYBOX = kubelet_sim.Image(cmd=("sh",))

# The pod's own `nono`: it runs the workload's writes with no sandbox at all.
FAKE_NONO = """#!/bin/sh
echo "fake nono ran with: $*"
echo pwned > /etc/written-outside-the-sandbox && echo "write /etc: allowed"
"""


@pytest.fixture(scope="module")
def hook_host_dir(container_host, tmp_path_factory) -> Path:
    """A trusted host directory with the nono stand-in and the hook script node-setup installs."""
    host_dir = tmp_path_factory.mktemp("nono-host-hook") / "opt-nono-nri"
    oci.install_nono_standin(host_dir, STANDIN)
    nodesetup.install_verify_hook(host_dir)
    return host_dir


@pytest.fixture(scope="module")
def webhook(hook_host_dir, tmp_path_factory):
    policy = {"nonoVolume": {"hostPath": {"path": str(hook_host_dir), "type": "Directory"}}}
    server = e2e_harness.Webhook(tmp_path_factory.mktemp("webhook"), yaml.safe_dump(policy))
    yield server
    assert server.close() in (0, -signal.SIGTERM), server.log_path.read_text()


@pytest.fixture(scope="module")
def node(hook_host_dir, tmp_path_factory):
    """`kubefence nri` with verify_hook on, registered to the runtime simulator."""
    pytest.importorskip("kubefence.nri.runtime_sim", reason="the NRI runtime simulator is not installed")
    plugin = e2e_harness.Node(
        tmp_path_factory.mktemp("node"), {"nono_host_dir": str(hook_host_dir), "verify_hook": True}
    )
    yield plugin
    assert plugin.close() == 0, plugin.log_path.read_text()


def agent_pod(command, volume_mount=None, sub_path=""):
    container = {"name": "agent", "image": "busybox", "command": list(command)}
    spec = {"runtimeClassName": "nono-runc", "restartPolicy": "Never", "containers": [container]}
    if volume_mount:
        spec["volumes"] = [{"name": "tools", "emptyDir": {}}]
        container["volumeMounts"] = [{"name": "tools", "mountPath": volume_mount}]
        if sub_path:
            container["volumeMounts"][0]["subPath"] = sub_path
    metadata = {"name": f"agent-{uuid.uuid4().hex[:8]}", "namespace": "agents",
                "annotations": {PROFILE_ANNOTATION: "default"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def create(webhook, node, bundle, pod, fill_volume=None):
    """Admit `pod` (unless `webhook` is None), create its container through the plugin.

    Returns (request, create result).
    """
    if webhook is not None:
        admission = webhook.review(copy.deepcopy(pod))
        assert admission.allowed, admission.message
        pod = admission.pod
    empty_dirs = {}
    for volume in pod["spec"].get("volumes") or ():
        if "emptyDir" in volume:
            directory = bundle / "volumes" / volume["name"]
            directory.mkdir(parents=True)
            empty_dirs[volume["name"]] = str(directory)
            if fill_volume:
                fill_volume(directory)
    sandbox = kubelet_sim.sandbox(pod, f"sandbox-{uuid.uuid4().hex[:12]}")
    request = kubelet_sim.create_request(
        pod, pod["spec"]["containers"][0], sandbox.id, f"container-{uuid.uuid4().hex[:12]}", BUSYBOX, empty_dirs
    )
    return request, node.create(sandbox, request)


def expected_hook(host_dir):
    path = str(host_dir / VERIFY_HOOK_NAME)
    return {"path": path, "args": [path, str(host_dir)]}


def plant_fake_nono(directory):
    (directory / "nono").write_text(FAKE_NONO)
    os.chmod(directory / "nono", 0o755)


# The attacks run with the /nono mount that the plugin adds, as for a pod
# that did not pass the webhook, because the plugin's mounts get sorted by
# depth. containerd's CRI plugin (WithMounts) sorts a pod's own mounts by
# depth too, so the webhook's /nono volume also comes first there. The
# kubelet_sim module keeps the volumeMounts order, which would hide the attack.


def test_verify_hook_image_symlink_nono_fails_create(runc, bundle, base_spec, webhook, node, hook_host_dir):
    # The hostile image: /nono is a symlink into the directory the pod mounts a volume on.
    (bundle / "rootfs" / "nono").symlink_to("/data/tools")
    pod = agent_pod(["/bin/sh", "-c", "echo workload"], volume_mount="/data/tools")
    assert webhook.review(copy.deepcopy(pod)).allowed

    request, created = create(None, node, bundle, pod, fill_volume=plant_fake_nono)

    # Both kubefence components accept the pod: only the hook can see the symlink.
    assert created.ok, created.error
    assert [mount.destination for mount in created.final.mounts][:2] == [NONO_MOUNT_PATH, "/data/tools"]
    [decision] = node.decision_lines(request.id)
    assert decision["decision"] == "inject"
    kubelet_sim.apply_to_spec(base_spec, created.final)
    assert base_spec["hooks"]["createContainer"] == [expected_hook(hook_host_dir)]

    result = runc.run(bundle, base_spec)

    assert result.exit_code != 0, result.stdout
    assert "fake nono ran" not in result.stdout
    assert "/nono in the container image is a symlink" in result.stderr
    assert not (bundle / "rootfs" / "etc" / "written-outside-the-sandbox").exists()


def test_verify_hook_attack_runs_fake_nono_without_hook(runc, bundle, base_spec, node):
    """The same run with the hook taken out of the spec starts the pod's file: the attack is real here."""
    (bundle / "rootfs" / "nono").symlink_to("/data/tools")
    pod = agent_pod(["/bin/sh", "-c", "echo workload"], volume_mount="/data/tools")
    _, created = create(None, node, bundle, pod, fill_volume=plant_fake_nono)
    kubelet_sim.apply_to_spec(base_spec, created.final)
    del base_spec["hooks"]["createContainer"]

    result = runc.run(bundle, base_spec)

    assert "fake nono ran" in result.stdout, result.stderr
    assert (bundle / "rootfs" / "etc" / "written-outside-the-sandbox").exists()


def test_verify_hook_relative_symlink_nono_fails_create(runc, bundle, base_spec, node):
    (bundle / "rootfs" / "data" / "tools").mkdir(parents=True)
    (bundle / "rootfs" / "nono").symlink_to("data/tools")
    pod = agent_pod(["/bin/sh", "-c", "echo workload"], volume_mount="/data/tools")
    _, created = create(None, node, bundle, pod, fill_volume=plant_fake_nono)
    kubelet_sim.apply_to_spec(base_spec, created.final)

    result = runc.run(bundle, base_spec)

    assert result.exit_code != 0
    assert "fake nono ran" not in result.stdout
    assert "kubefence-verify: " in result.stderr


def test_verify_hook_file_over_nono_binary_fails_create(runc, bundle, base_spec, node):
    """An image symlink `/data -> /nono` turns a pod file mount at /data/nono into one over /nono/nono."""
    (bundle / "rootfs" / "data").symlink_to("/nono")
    pod = agent_pod(["/bin/sh", "-c", "echo workload"], volume_mount="/data/nono", sub_path="nono")
    _, created = create(None, node, bundle, pod, fill_volume=plant_fake_nono)
    assert created.ok, created.error
    kubelet_sim.apply_to_spec(base_spec, created.final)

    result = runc.run(bundle, base_spec)

    assert result.exit_code != 0
    assert "fake nono ran" not in result.stdout
    assert "is not the trusted" in result.stderr
    assert not (bundle / "rootfs" / "etc" / "written-outside-the-sandbox").exists()


def test_verify_hook_file_over_nono_without_hook(runc, bundle, base_spec, node):
    """Without the hook the same pod runs its own file as /nono/nono."""
    (bundle / "rootfs" / "data").symlink_to("/nono")
    pod = agent_pod(["/bin/sh", "-c", "echo workload"], volume_mount="/data/nono", sub_path="nono")
    _, created = create(None, node, bundle, pod, fill_volume=plant_fake_nono)
    kubelet_sim.apply_to_spec(base_spec, created.final)
    del base_spec["hooks"]["createContainer"]

    result = runc.run(bundle, base_spec)

    assert "fake nono ran" in result.stdout, result.stderr


def test_verify_hook_wrapped_container_starts_confined(runc, bundle, base_spec, webhook, node, hook_host_dir):
    command = ["/bin/sh", "-c", "cat /etc/hosts >/dev/null && echo read-ok; echo x > /etc/new"]
    pod = agent_pod(command)

    request, created = create(webhook, node, bundle, pod)

    assert created.ok, created.error
    assert list(created.final.args) == wrapper_prefix("default") + command
    kubelet_sim.apply_to_spec(base_spec, created.final)
    assert base_spec["hooks"]["createContainer"] == [expected_hook(hook_host_dir)]

    result = runc.run(bundle, base_spec)

    assert "read-ok" in result.stdout, result.stderr
    assert result.exit_code != 0
    assert PERMISSION_DENIED in result.stderr
    assert not (bundle / "rootfs" / "etc" / "new").exists()
