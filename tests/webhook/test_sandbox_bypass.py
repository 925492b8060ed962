"""Negative tests: every way a pod could supply its own /nono or reach the trusted volume is denied.

Each case goes through the real HTTPS server with the default policy
(hostPath /opt/nono-nri) and must come back as a denial whose message names
the offending value, with the reason in the decision log line.
"""

import pytest
from .webhook_support import decode_patch, make_pod, make_review

TRUSTED = {"hostPath": {"path": "/opt/nono-nri", "type": "Directory"}}
MOUNT = {"name": "kubefence-nono", "mountPath": "/nono", "readOnly": True}


def container(*mounts: dict, name: str = "agent", **fields) -> dict:
    result = {"name": name, "image": "python:3.12-slim", **fields}
    if mounts:
        result["volumeMounts"] = list(mounts)
    return result


def scratch_at(path: str, **mount_fields) -> dict:
    """A pod with an emptyDir mounted at `path`."""
    return make_pod(
        [container({"name": "scratch", "mountPath": path, **mount_fields})],
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )


def trusted_mounted(**mount_fields) -> dict:
    """A pod with the trusted volume, mounted as given."""
    return make_pod(
        [container({**MOUNT, **mount_fields})],
        volumes=[{"name": "kubefence-nono", **TRUSTED}],
    )


def with_volume(volume: dict, mount_path: str = "/data") -> dict:
    return make_pod(
        [container({"name": volume["name"], "mountPath": mount_path})],
        volumes=[volume],
    )


BYPASSES = [
    # Own volume at /nono or a spelling of it.
    ("own-volume-at-nono", scratch_at("/nono"), "reserved-mount-path", "'/nono'"),
    ("own-volume-below-nono", scratch_at("/nono/bin"), "reserved-mount-path", "'/nono/bin'"),
    ("double-slash", scratch_at("//nono"), "reserved-mount-path", "'//nono'"),
    ("trailing-slash", scratch_at("/nono/"), "reserved-mount-path", "'/nono/'"),
    ("dot-segment", scratch_at("/./nono"), "reserved-mount-path", "'/./nono'"),
    ("dot-dot-segment", scratch_at("/tmp/../nono"), "reserved-mount-path", "'/tmp/../nono'"),
    ("relative-path", scratch_at("nono"), "reserved-mount-path", "'nono'"),
    ("root-contains-nono", scratch_at("/"), "reserved-mount-path", "'/'"),
    ("subpath-at-nono", scratch_at("/nono", subPath="bin"), "reserved-mount-path", "'/nono'"),
    (
        "init-container-at-nono",
        make_pod(
            initContainers=[container({"name": "scratch", "mountPath": "/nono/nono"}, name="prep")],
            volumes=[{"name": "scratch", "emptyDir": {}}],
        ),
        "reserved-mount-path",
        "'prep'",
    ),
    (
        "device-at-nono",
        make_pod(
            [container(volumeDevices=[{"name": "disk", "devicePath": "/nono/nono"}])],
            volumes=[{"name": "disk", "persistentVolumeClaim": {"claimName": "disk"}}],
        ),
        "reserved-device-path",
        "'/nono/nono'",
    ),
    # The trusted volume mounted any other way than read-only at /nono.
    ("trusted-read-write", trusted_mounted(readOnly=False), "trusted-volume-misuse", "'kubefence-nono'"),
    ("trusted-read-only-missing", trusted_mounted(readOnly=None), "trusted-volume-misuse", "'kubefence-nono'"),
    ("trusted-elsewhere", trusted_mounted(mountPath="/usr/local/bin"), "trusted-volume-misuse", "'/usr/local/bin'"),
    ("trusted-subpath", trusted_mounted(subPath="nono"), "trusted-volume-misuse", "'subPath'"),
    ("trusted-subpath-expr", trusted_mounted(subPathExpr="$(POD)"), "trusted-volume-misuse", "'subPathExpr'"),
    (
        "trusted-propagation",
        trusted_mounted(mountPropagation="HostToContainer"),
        "trusted-volume-misuse",
        "'HostToContainer'",
    ),
    (
        "mount-of-injected-name-read-write",
        make_pod([container({"name": "kubefence-nono", "mountPath": "/data"})]),
        "trusted-volume-misuse",
        "'/data'",
    ),
    # A volume named like the injected one, with another source.
    (
        "reserved-name-empty-dir",
        with_volume({"name": "kubefence-nono", "emptyDir": {}}, "/nono"),
        "reserved-volume-name",
        "'kubefence-nono'",
    ),
    (
        "reserved-name-other-host-type",
        with_volume({"name": "kubefence-nono", "hostPath": {"path": "/opt/nono-nri", "type": "DirectoryOrCreate"}}),
        "reserved-volume-name",
        "'DirectoryOrCreate'",
    ),
    (
        "reserved-name-other-host-path",
        with_volume({"name": "kubefence-nono", "hostPath": {"path": "/tmp/evil", "type": "Directory"}}),
        "reserved-volume-name",
        "'/tmp/evil'",
    ),
    # Other volumes reaching the trusted host directory.
    (
        "host-dir-other-name",
        with_volume({"name": "tools", "hostPath": {"path": "/opt/nono-nri", "type": ""}}),
        "trusted-source-misuse",
        "'/opt/nono-nri'",
    ),
    ("host-dir-parent", with_volume({"name": "opt", "hostPath": {"path": "/opt"}}), "trusted-source-misuse", "'/opt'"),
    ("host-root", with_volume({"name": "root", "hostPath": {"path": "/"}}), "trusted-source-misuse", "'/'"),
    (
        "host-dir-child",
        with_volume({"name": "bin", "hostPath": {"path": "/opt/nono-nri/bin"}}),
        "trusted-source-misuse",
        "'/opt/nono-nri/bin'",
    ),
    (
        "host-dir-other-spelling",
        with_volume({"name": "tools", "hostPath": {"path": "/opt//nono-nri/./", "type": "Directory"}}),
        "trusted-source-misuse",
        "'/opt//nono-nri/./'",
    ),
    # Kata guests: no user annotations that configure the VM or its agent policy.
    (
        "kata-agent-policy",
        make_pod(
            runtime_class="kata-nono-sandbox",
            annotations={"io.katacontainers.config.agent.policy": "cGFja2FnZSBhZ2VudF9wb2xpY3k="},
        ),
        "kata-annotation",
        "'io.katacontainers.config.agent.policy'",
    ),
    # The fail-closed marker: garbage in it is not passed on.
    (
        "required-plugins-not-json",
        make_pod(annotations={"required-plugins.noderesource.dev": "kubefence"}),
        "invalid-required-plugins",
        "'kubefence'",
    ),
    # Profile rule: flag, path, and an empty value.
    ("profile-flag", make_pod(annotations={"nono.sh/profile": "-v"}), "invalid-profile", "'-v'"),
    ("profile-empty", make_pod(annotations={"nono.sh/profile": ""}), "invalid-profile", "''"),
    ("profile-underscore", make_pod(annotations={"nono.sh/profile": "my_profile"}), "invalid-profile", "'my_profile'"),
    ("profile-not-allowed", make_pod(annotations={"nono.sh/profile": "claude-dev"}), "invalid-profile", "'claude-dev'"),
]


@pytest.mark.parametrize(("case", "pod", "reason", "named"), BYPASSES, ids=[case[0] for case in BYPASSES])
def test_bypass_denied(webhook, case, pod, reason, named):
    uid = f"bypass-{case}"
    response = webhook.mutate(make_review(pod, uid=uid))
    assert response.status_code == 200, response.text
    result = response.json()["response"]
    assert result["uid"] == uid
    assert result["allowed"] is False
    assert "patch" not in result
    assert named in result["status"]["message"]
    [line] = webhook.decision_lines(uid)
    assert line["decision"] == "reject"
    assert line["reason"] == reason
    assert line["message"] == result["status"]["message"]


def test_bypass_hand_written_injection_gets_marker(webhook):
    """A pod that brings the injection but no profile and no fail-closed marker gets both."""
    pod = trusted_mounted()
    response = webhook.mutate(make_review(pod, uid="bypass-no-marker")).json()["response"]
    assert response["allowed"] is True
    assert decode_patch(response) == [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {"nono.sh/profile": "default", "required-plugins.noderesource.dev": '["kubefence"]'},
        }
    ]


def test_bypass_other_required_plugins_kept(webhook):
    pod = make_pod(annotations={"required-plugins.noderesource.dev": '["other"]'})
    ops = decode_patch(webhook.mutate(make_review(pod)).json()["response"])
    assert {
        "op": "replace",
        "path": "/metadata/annotations/required-plugins.noderesource.dev",
        "value": '["other","kubefence"]',
    } in ops


def test_bypass_kata_annotation_allowed_on_runc(webhook):
    """io.katacontainers.* annotations mean nothing to runc, so they pass on nono-runc pods."""
    pod = make_pod(annotations={"io.katacontainers.config.agent.policy": "x"})
    response = webhook.mutate(make_review(pod)).json()["response"]
    assert response["allowed"] is True




def test_bypass_complete_injection_without_marker_unchanged(webhook):
    """The whole injection with a valid profile gets no patch; the marker is added only with other changes."""
    pod = trusted_mounted()
    pod["metadata"]["annotations"] = {"nono.sh/profile": "default"}
    response = webhook.mutate(make_review(pod, uid="no-marker-complete")).json()["response"]
    assert response["allowed"] is True
    assert "patch" not in response
