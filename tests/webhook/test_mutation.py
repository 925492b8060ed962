"""The pure admission decision: policy-dependent cases, UPDATE handling, request errors and the response bytes."""

import base64
import json

import jsonpatch
import kubernetes_validate
import pytest
from .webhook_support import KUBERNETES_VERSION, make_pod, make_review

from kubefence.common.policy import DEFAULT_POLICY, load_policy
from kubefence.webhook import ReviewError, build_response, decide
from kubefence.webhook.mutation import escape_pointer_token, normalize_path

MOUNT = {"name": "kubefence-nono", "mountPath": "/nono", "readOnly": True}
HOST_VOLUME = {"name": "kubefence-nono", "hostPath": {"path": "/opt/nono-nri", "type": "Directory"}}

IMAGE_POLICY = load_policy(
    """
nonoVolume:
  image:
    reference: registry.example/nono:1.0.0
    pullPolicy: IfNotPresent
"""
)
IMAGE_VOLUME = {"name": "kubefence-nono", "image": {"reference": "registry.example/nono:1.0.0", "pullPolicy": "IfNotPresent"}}

ENFORCE_POLICY = load_policy(
    """
namespaces:
  - match: "agents-*"
    defaultProfile: swival
    allowedProfiles: [swival, opencode]
    enforce: true
"""
)


def request_of(pod, **options) -> dict:
    return make_review(pod, **options)["request"]


def apply(pod: dict, decision) -> dict:
    patched = jsonpatch.apply_patch(pod, decision.patch, in_place=False)
    kubernetes_validate.validate(patched, KUBERNETES_VERSION, strict=True)
    return patched


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/nono", "/nono"),
        ("/nono/", "/nono"),
        ("//nono", "/nono"),
        ("/./nono/.", "/nono"),
        ("/a/../nono", "/nono"),
        ("/../../nono", "/nono"),
        ("nono", "/nono"),
        ("/nonolib", "/nonolib"),
        ("/", "/"),
        ("", "/"),
    ],
    ids=["plain", "trailing", "double", "dots", "dot-dot", "above-root", "relative", "prefix-not-parent", "root", "empty"],
)
def test_normalize_path_cases(path, expected):
    assert normalize_path(path) == expected


def test_normalize_path_nonolib_allowed():
    pod = make_pod(
        [{"name": "agent", "image": "busybox", "volumeMounts": [{"name": "lib", "mountPath": "/nonolib"}]}],
        volumes=[{"name": "lib", "emptyDir": {}}],
    )
    decision = decide(request_of(pod), DEFAULT_POLICY)
    assert decision.allowed
    assert decision.decision == "inject"


def test_escape_pointer_token_cases():
    assert escape_pointer_token("nono.sh/profile") == "nono.sh~1profile"
    assert escape_pointer_token("a~b/c") == "a~0b~1c"


def test_decide_own_namespace_exempt():
    pod = make_pod(namespace="kubefence-system")
    decision = decide(request_of(pod), DEFAULT_POLICY, own_namespace="kubefence-system")
    assert (decision.allowed, decision.decision, decision.reason, decision.patch) == (True, "skip", "exempt-namespace", [])


def test_decide_generate_name_as_pod():
    pod = make_pod()
    del pod["metadata"]["name"]
    pod["metadata"]["generateName"] = "eval-run-"
    assert decide(request_of(pod), DEFAULT_POLICY).pod == "eval-run-"


def test_decide_enforce_sets_runtime_class():
    pod = make_pod(namespace="agents-blue", runtime_class=None)
    decision = decide(request_of(pod), ENFORCE_POLICY)
    assert decision.allowed
    assert decision.runtime_class == "nono-runc"
    assert decision.profile == "swival"
    assert decision.patch[0] == {"op": "add", "path": "/spec/runtimeClassName", "value": "nono-runc"}
    patched = apply(pod, decision)
    assert patched["spec"]["runtimeClassName"] == "nono-runc"
    assert patched["metadata"]["annotations"]["nono.sh/profile"] == "swival"


def test_decide_enforce_rejects_other_runtime_class():
    pod = make_pod(namespace="agents-blue", runtime_class="runc")
    decision = decide(request_of(pod), ENFORCE_POLICY)
    assert not decision.allowed
    assert decision.reason == "runtime-class-not-opted-in"
    assert "'runc'" in decision.message
    assert "nono-runc, kata-nono-sandbox" in decision.message


def test_decide_enforce_leaves_other_namespaces():
    pod = make_pod(namespace="agents", runtime_class=None)
    decision = decide(request_of(pod), ENFORCE_POLICY)
    assert (decision.decision, decision.reason, decision.patch) == ("skip", "not-opted-in", [])


def test_decide_namespace_allow_list_rejects():
    pod = make_pod(namespace="agents-blue", annotations={"nono.sh/profile": "claude-code"})
    decision = decide(request_of(pod), ENFORCE_POLICY)
    assert not decision.allowed
    assert decision.reason == "invalid-profile"
    assert "'claude-code'" in decision.message
    assert "swival, opencode" in decision.message


def test_decide_profile_fallback_to_default():
    policy = load_policy("onInvalidProfile: default\n")
    pod = make_pod(annotations={"nono.sh/profile": "--allow-all"})
    decision = decide(request_of(pod), policy)
    assert decision.allowed
    assert decision.reason == "profile-fallback"
    assert decision.profile_fallback is True
    assert decision.profile == "default"
    assert "'--allow-all'" in decision.warnings[0]
    assert {"op": "replace", "path": "/metadata/annotations/nono.sh~1profile", "value": "default"} in decision.patch
    assert apply(pod, decision)["metadata"]["annotations"]["nono.sh/profile"] == "default"


def test_decide_image_source_injected():
    pod = make_pod()
    decision = decide(request_of(pod), IMAGE_POLICY)
    assert {"op": "add", "path": "/spec/volumes", "value": [IMAGE_VOLUME]} in decision.patch
    assert apply(pod, decision)["spec"]["volumes"] == [IMAGE_VOLUME]


@pytest.mark.parametrize(
    ("volume", "mount_path", "reason"),
    [
        ({"name": "tools", "image": {"reference": "registry.example/nono:1.0.0", "pullPolicy": "Never"}}, "/tools", "trusted-source-misuse"),
        ({"name": "evil", "image": {"reference": "registry.example/evil:1", "pullPolicy": "IfNotPresent"}}, "/nono", "reserved-mount-path"),
        ({"name": "kubefence-nono", "hostPath": {"path": "/opt/nono-nri", "type": "Directory"}}, "/nono", "reserved-volume-name"),
    ],
    ids=["trusted-image-other-pull-policy", "own-image-at-nono", "reserved-name-host-path"],
)
def test_decide_image_source_bypass_denied(volume, mount_path, reason):
    pod = make_pod(
        [{"name": "agent", "image": "busybox", "volumeMounts": [{"name": volume["name"], "mountPath": mount_path, "readOnly": True}]}],
        volumes=[volume],
    )
    decision = decide(request_of(pod), IMAGE_POLICY)
    assert not decision.allowed
    assert decision.reason == reason


def injected_pod(**extra) -> dict:
    pod = make_pod(
        [{"name": "agent", "image": "busybox", "volumeMounts": [dict(MOUNT)]}],
        annotations={"nono.sh/profile": "default", "required-plugins.noderesource.dev": '["kubefence"]'},
        volumes=[dict(HOST_VOLUME)],
    )
    pod["spec"].update(extra)
    return pod


def ephemeral_request(old: dict, new: dict) -> dict:
    return request_of(new, operation="UPDATE", sub_resource="ephemeralcontainers", old_pod=old)


def test_decide_ephemeral_container_mounted():
    old = injected_pod(ephemeralContainers=[{"name": "debug-1", "image": "busybox", "volumeMounts": [dict(MOUNT)]}])
    new = injected_pod(
        ephemeralContainers=[
            {"name": "debug-1", "image": "busybox", "volumeMounts": [dict(MOUNT)]},
            {"name": "debug-2", "image": "busybox", "targetContainerName": "agent"},
        ]
    )
    decision = decide(ephemeral_request(old, new), DEFAULT_POLICY)
    assert decision.allowed
    assert decision.reason == "ephemeral-containers"
    assert decision.profile == "default"
    assert decision.patch == [{"op": "add", "path": "/spec/ephemeralContainers/1/volumeMounts", "value": [MOUNT]}]
    apply(new, decision)


def test_decide_ephemeral_already_mounted_no_ops():
    pod = injected_pod(ephemeralContainers=[{"name": "debug", "image": "busybox", "volumeMounts": [dict(MOUNT)]}])
    decision = decide(ephemeral_request(injected_pod(), pod), DEFAULT_POLICY)
    assert (decision.allowed, decision.patch, decision.reason) == (True, [], "already-injected")


def test_decide_ephemeral_rejected_by_policy():
    policy = load_policy("ephemeralContainers: reject\n")
    new = injected_pod(ephemeralContainers=[{"name": "debug", "image": "busybox"}])
    decision = decide(ephemeral_request(injected_pod(), new), policy)
    assert not decision.allowed
    assert decision.reason == "ephemeral-containers-rejected"
    assert "'debug'" in decision.message


def test_decide_ephemeral_own_nono_denied():
    new = injected_pod(
        ephemeralContainers=[{"name": "debug", "image": "busybox", "volumeMounts": [{"name": "scratch", "mountPath": "/nono"}]}]
    )
    decision = decide(ephemeral_request(injected_pod(), new), DEFAULT_POLICY)
    assert not decision.allowed
    assert decision.reason == "reserved-mount-path"


def test_decide_ephemeral_without_volume_denied():
    old = make_pod()
    new = make_pod(ephemeralContainers=[{"name": "debug", "image": "busybox"}])
    decision = decide(ephemeral_request(old, new), DEFAULT_POLICY)
    assert not decision.allowed
    assert decision.reason == "missing-nono-volume"


def test_decide_ephemeral_not_opted_in_skipped():
    old = make_pod(runtime_class=None)
    new = make_pod(runtime_class=None, ephemeralContainers=[{"name": "debug", "image": "busybox"}])
    decision = decide(ephemeral_request(old, new), DEFAULT_POLICY)
    assert (decision.allowed, decision.decision, decision.patch) == (True, "skip", [])


@pytest.mark.parametrize(
    ("operation", "sub_resource"),
    [("UPDATE", "status"), ("CREATE", "binding"), ("DELETE", None), ("CONNECT", "exec")],
    ids=["update-status", "create-binding", "delete", "connect-exec"],
)
def test_decide_other_operations_pass_unchanged(operation, sub_resource):
    pod = make_pod(annotations={"nono.sh/profile": "--allow-all"}, volumes=[{"name": "x", "emptyDir": {}}])
    request = request_of(pod, operation=operation, sub_resource=sub_resource, old_pod=pod)
    decision = decide(request, DEFAULT_POLICY)
    assert (decision.allowed, decision.decision, decision.reason, decision.patch) == (
        True, "skip", "operation-not-handled", []
    )


def update_request(old: dict, new: dict) -> dict:
    return request_of(new, operation="UPDATE", old_pod=old)


def test_decide_update_labels_pass_unchanged():
    old = injected_pod()
    new = injected_pod()
    new["metadata"]["labels"] = {"team": "blue"}
    new["metadata"]["annotations"]["example.org/owner"] = "blue"
    decision = decide(update_request(old, new), DEFAULT_POLICY)
    assert (decision.allowed, decision.decision, decision.reason, decision.patch) == (True, "skip", "sandbox-unchanged", [])


@pytest.mark.parametrize(
    ("change", "runtime_class"),
    [
        (lambda annotations: annotations.update({"nono.sh/profile": "codex"}), "nono-runc"),
        (lambda annotations: annotations.pop("nono.sh/profile"), "nono-runc"),
        (lambda annotations: annotations.pop("required-plugins.noderesource.dev"), "nono-runc"),
        (lambda annotations: annotations.update({"io.katacontainers.config.agent.policy": "x"}), "kata-nono-sandbox"),
    ],
    ids=["profile-changed", "profile-removed", "marker-removed", "kata-annotation-added"],
)
def test_decide_update_annotation_change_passes_unchanged(change, runtime_class):
    """The runtime records sandbox annotations at creation, so later changes do not reach the NRI plugin."""
    old = injected_pod(runtimeClassName=runtime_class)
    new = injected_pod(runtimeClassName=runtime_class)
    change(new["metadata"]["annotations"])
    decision = decide(update_request(old, new), DEFAULT_POLICY)
    assert decision.allowed
    assert decision.decision == "skip"
    assert decision.patch == []


def test_decide_update_kata_annotation_on_runc_allowed():
    old = injected_pod()
    new = injected_pod()
    new["metadata"]["annotations"]["io.katacontainers.config.agent.policy"] = "x"
    assert decide(update_request(old, new), DEFAULT_POLICY).allowed


def test_decide_update_not_opted_in_skipped():
    old = make_pod(runtime_class=None, annotations={"nono.sh/profile": "default"})
    new = make_pod(runtime_class=None, annotations={"nono.sh/profile": "--allow-all"})
    decision = decide(update_request(old, new), DEFAULT_POLICY)
    assert (decision.allowed, decision.reason) == (True, "not-opted-in")


def test_decide_update_exempt_namespace_skipped():
    old = injected_pod()
    new = injected_pod()
    for pod in (old, new):
        pod["metadata"]["namespace"] = "kube-system"
    new["metadata"]["annotations"]["nono.sh/profile"] = "codex"
    decision = decide(update_request(old, new), DEFAULT_POLICY)
    assert (decision.allowed, decision.reason) == (True, "exempt-namespace")


def test_decide_delete_without_object_skipped():
    request = request_of(None, operation="DELETE", old_pod=make_pod())
    assert decide(request, DEFAULT_POLICY).decision == "skip"


def test_decide_other_kind_skipped():
    request = request_of(make_pod())
    request["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert decide(request, DEFAULT_POLICY).reason == "not-a-pod"


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda request: request.update(object=[1, 2]), "request.object"),
        (lambda request: request["object"]["spec"].update(containers="agent"), "object.spec.containers"),
        (lambda request: request["object"]["spec"].update(volumes=["scratch"]), "object.spec.volumes[0]"),
        (lambda request: request["object"]["metadata"].update(annotations=["a"]), "object.metadata.annotations"),
        (lambda request: request["object"]["metadata"].update(name=7), "object.metadata.name"),
        (lambda request: request["object"]["spec"].update(runtimeClassName=["nono-runc"]), "runtimeClassName"),
        (
            lambda request: request["object"]["spec"]["containers"][0].update(volumeMounts={"name": "x"}),
            "volumeMounts",
        ),
        (lambda request: request.pop("object"), "missing request.object"),
        (
            lambda request: request["object"]["spec"]["containers"][0].update(volumeMounts=[{"name": "x", "mountPath": 1}]),
            "volumeMounts[0].mountPath",
        ),
    ],
    ids=["object-list", "containers-string", "volume-string", "annotations-list", "name-int", "runtime-class-list",
         "mounts-object", "no-object", "mount-path-int"],
)
def test_decide_malformed_request_raises(mutate, named):
    request = request_of(make_pod())
    mutate(request)
    with pytest.raises(ReviewError) as error:
        decide(request, DEFAULT_POLICY)
    assert named in str(error.value)


def test_build_response_allowed_without_ops():
    decision = decide(request_of(make_pod(runtime_class=None)), DEFAULT_POLICY)
    body = json.loads(build_response("uid-1", decision))
    assert body == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "uid-1", "allowed": True}}


def test_build_response_patch_base64():
    decision = decide(request_of(make_pod()), DEFAULT_POLICY)
    response = json.loads(build_response("uid-2", decision))["response"]
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == decision.patch


def test_build_response_denial_status():
    decision = decide(request_of(make_pod(annotations={"nono.sh/profile": "-x"})), DEFAULT_POLICY)
    response = json.loads(build_response("uid-3", decision))["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == decision.message
    assert "patch" not in response


def test_build_response_warnings():
    policy = load_policy("onInvalidProfile: default\n")
    decision = decide(request_of(make_pod(annotations={"nono.sh/profile": "-x"})), policy)
    response = json.loads(build_response("uid-4", decision))["response"]
    assert response["warnings"] == list(decision.warnings)
    assert len(response["warnings"]) == 1
