"""What the kubelet and the runtime would hand to NRI, computed from a pod manifest."""

import pytest

from kubefence import kubelet_sim
from kubefence.nri.model import Container, Mount

IMAGE = kubelet_sim.Image(entrypoint=("/entry",), cmd=("default-cmd",), env=("PATH=/bin",))


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        pytest.param({"command": ["sh", "-c"], "args": ["x"]}, ("sh", "-c", "x"), id="command-and-args"),
        pytest.param({"command": ["sh"]}, ("sh",), id="command-replaces-cmd"),
        pytest.param({"args": ["a", "b"]}, ("/entry", "a", "b"), id="args-replace-cmd"),
        pytest.param({}, ("/entry", "default-cmd"), id="image-defaults"),
    ],
)
def test_container_args_kubernetes_rules(container, expected):
    assert kubelet_sim.container_args(container, IMAGE) == expected


def test_container_env_image_then_container():
    container = {"name": "c", "env": [{"name": "A", "value": "1"}, {"name": "PATH", "value": "/x"}]}

    assert kubelet_sim.container_env(container, IMAGE) == ("PATH=/bin", "A=1", "PATH=/x")


@pytest.mark.parametrize(
    "container",
    [
        pytest.param({"name": "c", "env": [{"name": "A", "valueFrom": {"fieldRef": {}}}]}, id="value-from"),
        pytest.param({"name": "c", "envFrom": [{"configMapRef": {"name": "x"}}]}, id="env-from"),
    ],
)
def test_container_env_unsupported_raises(container):
    with pytest.raises(kubelet_sim.UnsupportedPodError, match="not supported"):
        kubelet_sim.container_env(container, IMAGE)


def test_container_mounts_hostpath_and_emptydir():
    pod = {"spec": {"volumes": [
        {"name": "nono", "hostPath": {"path": "/opt/nono-nri", "type": "Directory"}},
        {"name": "work", "emptyDir": {}},
    ]}}
    container = {"volumeMounts": [
        {"name": "nono", "mountPath": "/nono", "readOnly": True},
        {"name": "work", "mountPath": "/workspace", "subPath": "a"},
    ]}

    mounts = kubelet_sim.container_mounts(pod, container, {"work": "/var/empty/work"})

    assert mounts == (
        Mount("/nono", "bind", "/opt/nono-nri", ("rbind", "rprivate", "ro")),
        Mount("/workspace", "bind", "/var/empty/work/a", ("rbind", "rprivate", "rw")),
    )


@pytest.mark.parametrize(
    ("volumes", "message"),
    [
        pytest.param([], "names no volume", id="missing-volume"),
        pytest.param([{"name": "v", "secret": {"secretName": "s"}}], "only hostPath and emptyDir", id="secret"),
        pytest.param([{"name": "v", "emptyDir": {}}], "has no host directory", id="empty-dir-unbacked"),
    ],
)
def test_container_mounts_unsupported_raises(volumes, message):
    pod = {"spec": {"volumes": volumes}}
    container = {"volumeMounts": [{"name": "v", "mountPath": "/v"}]}

    with pytest.raises(kubelet_sim.UnsupportedPodError, match=message):
        kubelet_sim.container_mounts(pod, container, {})


@pytest.mark.parametrize(
    ("spec", "handlers", "expected"),
    [
        pytest.param({"runtimeClassName": "nono-runc"}, None, "nono-runc", id="same-name"),
        pytest.param({"runtimeClassName": "nono-runc"}, {"nono-runc": "runc-nono"}, "runc-nono", id="mapped"),
        pytest.param({}, None, kubelet_sim.DEFAULT_HANDLER, id="no-runtime-class"),
    ],
)
def test_sandbox_runtime_handler(spec, handlers, expected):
    pod = {"metadata": {"name": "p", "namespace": "ns", "annotations": {"a": "b"}}, "spec": spec}

    sandbox = kubelet_sim.sandbox(pod, "sandbox-1", handlers)

    assert sandbox.runtime_handler == expected
    assert (sandbox.id, sandbox.name, sandbox.namespace) == ("sandbox-1", "p", "ns")
    assert sandbox.annotations == {"a": "b"}


def test_apply_to_spec_sets_process_and_mounts():
    spec = {"process": {"args": ["old"], "env": ["OLD=1"], "cwd": "/"}, "mounts": [{"destination": "/proc"}]}
    container = Container(
        id="c", args=("/nono/nono", "wrap", "--", "sh"), env=("A=1",),
        mounts=(Mount("/nono", "bind", "/opt/nono-nri", ("rbind", "ro")),),
    )

    kubelet_sim.apply_to_spec(spec, container, working_dir="/workspace")

    assert spec["process"]["args"] == ["/nono/nono", "wrap", "--", "sh"]
    assert spec["process"]["env"] == ["A=1"]
    assert spec["process"]["cwd"] == "/workspace"
    assert spec["mounts"][-1] == {"destination": "/nono", "type": "bind", "source": "/opt/nono-nri", "options": ["rbind", "ro"]}
