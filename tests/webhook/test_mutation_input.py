"""The decision on hostile input: wrong types in every field it reads, oversized lists, unnamed containers and forbidden environment names."""

import copy

import pytest
from .webhook_support import make_pod, make_review

from kubefence.common.policy import DEFAULT_POLICY
from kubefence.webhook import ReviewError, decide
from kubefence.webhook.mutation import (
    MAX_CONTAINERS_PER_LIST,
    MAX_MOUNTS_PER_CONTAINER,
    MAX_VOLUMES,
    AdmissionDecision,
)

MOUNT = {"name": "kubefence-nono", "mountPath": "/nono", "readOnly": True}
HOST_VOLUME = {"name": "kubefence-nono", "hostPath": {"path": "/opt/nono-nri", "type": "Directory"}}

# Values of every JSON type but the expected one, put in place of each field.
WRONG_VALUES = [[], ["x"], [{"a": 1}], {}, {"k": ["v"]}, 5, 1.5, True, None, "", "text"]


def full_pod() -> dict:
    """A pod that sets every field the decision reads."""
    container = {
        "name": "agent",
        "image": "busybox",
        "volumeMounts": [dict(MOUNT), {"name": "scratch", "mountPath": "/scratch"}],
        "volumeDevices": [{"name": "disk", "devicePath": "/dev/xvda"}],
        "env": [{"name": "PATH", "value": "/bin"}],
    }
    return make_pod(
        [container],
        annotations={"nono.sh/profile": "default", "required-plugins.noderesource.dev": '["kubefence"]'},
        volumes=[dict(HOST_VOLUME), {"name": "scratch", "emptyDir": {}}, {"name": "disk", "hostPath": {"path": "/d"}}],
        initContainers=[copy.deepcopy(container) | {"name": "init"}],
        ephemeralContainers=[copy.deepcopy(container) | {"name": "debug"}],
    )


def paths(value, prefix=()):
    """Yield the path of every member and item inside `value`."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        items = ()
    for key, item in items:
        yield (*prefix, key)
        yield from paths(item, (*prefix, key))


def replaced(document: dict, path: tuple, value) -> dict:
    document = copy.deepcopy(document)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = copy.deepcopy(value)
    return document


def request_to_fuzz(kind: str) -> dict:
    pod = full_pod()
    old = copy.deepcopy(pod)
    old["spec"]["ephemeralContainers"] = []
    reviews = {
        "create": lambda: make_review(pod),
        "ephemeral": lambda: make_review(pod, operation="UPDATE", sub_resource="ephemeralcontainers", old_pod=pod),
        "ephemeral-added": lambda: make_review(pod, operation="UPDATE", sub_resource="ephemeralcontainers", old_pod=old),
        "update": lambda: make_review(pod, operation="UPDATE", old_pod=pod),
    }
    return reviews[kind]()["request"]


@pytest.mark.parametrize("kind", ["create", "ephemeral", "ephemeral-added", "update"])
def test_decide_wrong_types_never_crash(kind):
    request = request_to_fuzz(kind)
    baseline = decide(request, DEFAULT_POLICY)
    assert baseline.allowed, baseline.message
    failures = []
    for path in paths(request):
        for value in WRONG_VALUES:
            try:
                outcome = decide(replaced(request, path, value), DEFAULT_POLICY)
            except ReviewError:
                continue
            except Exception as error:  # noqa: BLE001 - the test collects every crash
                failures.append(f"{'.'.join(map(str, path))} = {value!r}: {type(error).__name__}: {error}")
                continue
            if not isinstance(outcome, AdmissionDecision):
                failures.append(f"{'.'.join(map(str, path))} = {value!r}: returned {outcome!r}")
    assert failures == []


@pytest.mark.parametrize(
    ("path", "named"),
    [
        (("spec", "volumes", 1, "name"), "object.spec.volumes[1].name"),
        (("spec", "containers", 0, "env", 0, "name"), "object.spec.containers[0].env[0].name"),
        (("spec", "containers", 0, "env", 0), "object.spec.containers[0].env[0]"),
    ],
    ids=["volume-name", "env-name", "env-entry"],
)
def test_decide_unhashable_field_names_field(path, named):
    request = make_review(full_pod())["request"]
    with pytest.raises(ReviewError) as error:
        decide(replaced(request, ("object", *path), ["x"]), DEFAULT_POLICY)
    assert named in str(error.value)


def test_decide_old_ephemeral_name_list_raises():
    pod = full_pod()
    old = replaced(pod, ("spec", "ephemeralContainers", 0, "name"), {"a": 1})
    request = make_review(pod, operation="UPDATE", sub_resource="ephemeralcontainers", old_pod=old)["request"]
    with pytest.raises(ReviewError) as error:
        decide(request, DEFAULT_POLICY)
    assert "request.oldObject.spec.ephemeralContainers[0].name" in str(error.value)


@pytest.mark.parametrize("key", ["containers", "initContainers", "ephemeralContainers"])
@pytest.mark.parametrize("name", [None, "", ["agent"], {"n": 1}, 7], ids=["missing", "empty", "list", "object", "int"])
def test_decide_container_without_name_denied(key, name):
    pod = full_pod()
    container = {"image": "busybox"} if name is None else {"name": name, "image": "busybox"}
    pod["spec"][key].append(container)
    decision = decide(make_review(pod)["request"], DEFAULT_POLICY)
    assert not decision.allowed
    assert decision.reason == "invalid-container-name"
    assert f"object.spec.{key}[1]" in decision.message
    assert decision.patch == []


def test_decide_ephemeral_without_name_denied():
    pod = full_pod()
    old = copy.deepcopy(pod)
    pod["spec"]["ephemeralContainers"].append({})
    request = make_review(pod, operation="UPDATE", sub_resource="ephemeralcontainers", old_pod=old)["request"]
    decision = decide(request, DEFAULT_POLICY)
    assert decision.reason == "invalid-container-name"
    assert "object.spec.ephemeralContainers[1]" in decision.message


def test_decide_many_empty_containers_denied_without_patch():
    pod = make_pod([{} for _ in range(200_000)])
    decision = decide(make_review(pod)["request"], DEFAULT_POLICY)
    assert not decision.allowed
    assert decision.reason == "too-many-items"
    assert decision.patch == []
    assert "object.spec.containers has 200000 entries" in decision.message
    assert "not of Kubernetes" in decision.message


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (
            lambda pod: pod["spec"].update(containers=[{"name": f"c{i}", "image": "b"} for i in range(MAX_CONTAINERS_PER_LIST + 1)]),
            "object.spec.containers",
        ),
        (
            lambda pod: pod["spec"].update(initContainers=[{"name": f"c{i}", "image": "b"} for i in range(MAX_CONTAINERS_PER_LIST + 1)]),
            "object.spec.initContainers",
        ),
        (
            lambda pod: pod["spec"].update(volumes=[{"name": f"v{i}", "emptyDir": {}} for i in range(MAX_VOLUMES + 1)]),
            "object.spec.volumes",
        ),
        (
            lambda pod: pod["spec"]["containers"][0].update(
                volumeMounts=[{"name": "scratch", "mountPath": f"/m{i}"} for i in range(MAX_MOUNTS_PER_CONTAINER + 1)]
            ),
            "object.spec.containers[0].volumeMounts",
        ),
        (
            lambda pod: pod["spec"]["containers"][0].update(
                volumeDevices=[{"name": "disk", "devicePath": f"/dev/d{i}"} for i in range(MAX_MOUNTS_PER_CONTAINER + 1)]
            ),
            "object.spec.containers[0].volumeDevices",
        ),
    ],
    ids=["containers", "init-containers", "volumes", "mounts", "devices"],
)
def test_decide_list_above_limit_denied(mutate, named):
    pod = full_pod()
    mutate(pod)
    decision = decide(make_review(pod)["request"], DEFAULT_POLICY)
    assert not decision.allowed
    assert decision.reason == "too-many-items"
    assert decision.message.startswith(f"{named} has ")


def test_decide_list_at_limit_allowed():
    pod = make_pod([{"name": f"c{i}", "image": "b"} for i in range(MAX_CONTAINERS_PER_LIST)])
    decision = decide(make_review(pod)["request"], DEFAULT_POLICY)
    assert decision.allowed
    assert len(decision.patch) == MAX_CONTAINERS_PER_LIST + 2


def test_decide_limits_skip_pods_not_opted_in():
    pod = make_pod([{} for _ in range(MAX_CONTAINERS_PER_LIST + 1)], runtime_class=None)
    decision = decide(make_review(pod)["request"], DEFAULT_POLICY)
    assert decision.allowed
    assert decision.reason == "not-opted-in"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ([{"name": "NONO_ALLOW", "value": "/"}], "NONO_ALLOW"),
        ([{"name": "NONO_PROFILE_EXTRA", "value": "x"}], "NONO_PROFILE_EXTRA"),
        ([{"name": "LD_PRELOAD", "value": "/tmp/x.so"}], "LD_PRELOAD"),
        ([{"name": "LD_LIBRARY_PATH", "value": "/tmp"}], "LD_LIBRARY_PATH"),
        ([{"name": "GLIBC_TUNABLES", "value": "x"}], "GLIBC_TUNABLES"),
        ([{"name": "LD_AUDIT", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}], "LD_AUDIT"),
        ([{"name": "TMPDIR", "value": "/a"}, {"name": "TMPDIR", "value": "/b"}], "set more than once: TMPDIR"),
        ([{"name": "HOME", "value": "/a"}, {"name": "HOME", "value": "/b"}], "set more than once: HOME"),
        ([{"name": "XDG_CONFIG_HOME", "value": "/a"}, {"name": "XDG_CONFIG_HOME", "value": "/b"}], "XDG_CONFIG_HOME"),
        ([{"name": "NONO_PROFILE", "value": "a"}, {"name": "NONO_PROFILE", "value": "b"}], "set more than once: NONO_PROFILE"),
    ],
    ids=["nono-allow", "nono-other", "ld-preload", "ld-library-path", "glibc-tunables", "value-from",
         "tmpdir-twice", "home-twice", "xdg-twice", "profile-twice"],
)
@pytest.mark.parametrize("key", ["containers", "initContainers", "ephemeralContainers"])
def test_decide_forbidden_env_denied(key, env, named):
    pod = full_pod()
    pod["spec"][key][0]["env"] = env
    decision = decide(make_review(pod)["request"], DEFAULT_POLICY)
    assert not decision.allowed
    assert decision.reason == "forbidden-environment"
    assert named in decision.message
    assert decision.message.startswith(f"{key} ")


def test_decide_forbidden_env_in_added_ephemeral_denied():
    pod = full_pod()
    old = copy.deepcopy(pod)
    pod["spec"]["ephemeralContainers"].append({"name": "debug-2", "image": "busybox", "env": [{"name": "LD_PRELOAD", "value": "x"}]})
    request = make_review(pod, operation="UPDATE", sub_resource="ephemeralcontainers", old_pod=old)["request"]
    decision = decide(request, DEFAULT_POLICY)
    assert decision.reason == "forbidden-environment"
    assert "'debug-2'" in decision.message


@pytest.mark.parametrize(
    "env",
    [
        [{"name": "nono_allow", "value": "/"}],
        [{"name": "NONO_PROFILE", "value": "default"}],
        [{"name": "HOME", "value": "/root"}, {"name": "TMPDIR", "value": "/var/tmp"}],
        [{"name": "MY_LD_PATH", "value": "x"}],
    ],
    ids=["lower-case", "profile-once", "pinned-once", "ld-not-prefix"],
)
def test_decide_allowed_env_passes(env):
    pod = full_pod()
    pod["spec"]["containers"][0]["env"] = env
    assert decide(make_review(pod)["request"], DEFAULT_POLICY).allowed


def test_decide_forbidden_env_not_opted_in_skipped():
    pod = make_pod([{"name": "a", "image": "b", "env": [{"name": "LD_PRELOAD", "value": "x"}]}], runtime_class=None)
    assert decide(make_review(pod)["request"], DEFAULT_POLICY).reason == "not-opted-in"
