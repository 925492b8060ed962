"""Every AdmissionReview sample in tests/data/admission through the real HTTPS server.

The expectations are those of the samples' README. Every response is HTTP
200 and an AdmissionReview v1 response echoing the uid, with `patchType`
and `patch` only when there are operations. The patch applies with a
standard RFC 6902 library, and the patched pod passes the Kubernetes Pod
schema.
"""

import base64
import json

import jsonpatch
import kubernetes_validate
import pytest
from .webhook_support import ADMISSION, KUBERNETES_VERSION, decode_patch, load_sample

MOUNT = {"name": "kubefence-nono", "mountPath": "/nono", "readOnly": True}
VOLUME = {"name": "kubefence-nono", "hostPath": {"path": "/opt/nono-nri", "type": "Directory"}}
REQUIRED_PLUGINS = ("required-plugins.noderesource.dev", '["kubefence"]')


def review_response(webhook, name: str) -> tuple[dict, dict]:
    """Send sample `name`; return the request and the AdmissionReview response member."""
    review = load_sample(name)
    http = webhook.mutate((ADMISSION / name).read_bytes())
    assert http.status_code == 200, http.text
    body = http.json()
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == review["request"]["uid"]
    if "patch" in body["response"] or "patchType" in body["response"]:
        assert body["response"]["patchType"] == "JSONPatch"
        assert isinstance(json.loads(base64.b64decode(body["response"]["patch"])), list)
    return review["request"], body["response"]


def patched_pod(request: dict, response: dict) -> dict:
    pod = jsonpatch.apply_patch(request["object"], decode_patch(response), in_place=False)
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    return pod


def ops_by_path(response: dict) -> dict[str, dict]:
    return {op["path"]: op for op in decode_patch(response)}


@pytest.mark.parametrize(
    "name",
    ["01-not-opted-in.json", "10-kube-system-pod.json", "11-other-runtime-class.json"],
    ids=["not-opted-in", "kube-system", "other-runtime-class"],
)
def test_sample_untouched_pods_get_no_patch(webhook, name):
    request, response = review_response(webhook, name)
    assert response["allowed"] is True
    assert "patch" not in response
    assert "patchType" not in response
    assert patched_pod(request, response) == request["object"]


def test_sample_02_creates_annotations_map_in_one_op(webhook):
    request, response = review_response(webhook, "02-opted-in-no-annotations-map.json")
    assert response["allowed"] is True
    ops = ops_by_path(response)
    annotation_ops = [op for op in decode_patch(response) if op["path"].startswith("/metadata/annotations")]
    assert annotation_ops == [ops["/metadata/annotations"]]
    assert ops["/metadata/annotations"]["op"] == "add"
    assert isinstance(ops["/metadata/annotations"]["value"], dict)
    assert ops["/metadata/annotations"]["value"]["nono.sh/profile"] == "default"
    assert ops["/spec/volumes"]["value"] == [VOLUME]
    assert ops["/spec/containers/0/volumeMounts"]["value"] == [MOUNT]
    pod = patched_pod(request, response)
    assert pod["metadata"]["annotations"]["nono.sh/profile"] == "default"
    assert pod["metadata"]["annotations"][REQUIRED_PLUGINS[0]] == REQUIRED_PLUGINS[1]


def test_sample_03_keeps_profile_and_escapes_path(webhook):
    request, response = review_response(webhook, "03-opted-in-existing-annotations.json")
    assert response["allowed"] is True
    ops = ops_by_path(response)
    assert ops["/metadata/annotations/nono.sh~1profile"]["value"] == "claude-code"
    assert "/metadata/annotations" not in ops
    assert not any("owner" in path for path in ops)
    pod = patched_pod(request, response)
    assert pod["metadata"]["annotations"]["nono.sh/profile"] == "claude-code"
    assert pod["metadata"]["annotations"]["example.org/owner"] == "team-blue"
    assert pod["spec"]["volumes"] == [VOLUME]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("04-invalid-profile-flag-injection.json", "--allow-all"),
        ("05-invalid-profile-path.json", "../../etc/passwd"),
        ("06-invalid-profile-too-long.json", "a" * 65),
    ],
    ids=["flag-injection", "path", "too-long"],
)
def test_sample_invalid_profile_denied(webhook, name, value):
    _, response = review_response(webhook, name)
    assert response["allowed"] is False
    assert "patch" not in response
    message = response["status"]["message"]
    assert repr(value) in message
    assert "1 to 64 characters of letters, digits and '-'" in message
    assert response["status"]["code"] == 403


def test_sample_07_creates_arrays(webhook):
    request, response = review_response(webhook, "07-no-volumes-with-init.json")
    ops = ops_by_path(response)
    assert ops["/spec/volumes"] == {"op": "add", "path": "/spec/volumes", "value": [VOLUME]}
    assert ops["/spec/initContainers/0/volumeMounts"]["value"] == [MOUNT]
    assert ops["/spec/containers/0/volumeMounts"]["value"] == [MOUNT]
    pod = patched_pod(request, response)
    assert pod["spec"]["initContainers"][0]["volumeMounts"] == [MOUNT]
    assert pod["spec"]["containers"][0]["volumeMounts"] == [MOUNT]


def test_sample_08_appends_where_arrays_exist(webhook):
    request, response = review_response(webhook, "08-some-volumes.json")
    ops = ops_by_path(response)
    assert ops["/spec/volumes/-"]["value"] == VOLUME
    assert "/spec/volumes" not in ops
    assert ops["/spec/containers/0/volumeMounts"]["value"] == [MOUNT]
    assert ops["/spec/containers/1/volumeMounts/-"]["value"] == MOUNT
    pod = patched_pod(request, response)
    assert pod["spec"]["containers"][1]["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp/s"}, MOUNT]
    assert [volume["name"] for volume in pod["spec"]["volumes"]] == ["scratch", "kubefence-nono"]


def test_sample_09_dry_run_response_identical(webhook):
    dry = load_sample("09-dry-run.json")
    assert dry["request"]["dryRun"] is True
    real = json.loads(json.dumps(dry))
    real["request"]["dryRun"] = False
    dry_response = webhook.mutate(dry)
    real_response = webhook.mutate(real)
    assert dry_response.status_code == real_response.status_code == 200
    assert dry_response.content == real_response.content
    assert "patch" in dry_response.json()["response"]


def test_sample_12_huge_pod_same_few_ops(webhook):
    request, response = review_response(webhook, "12-huge-pod.json")
    assert len((ADMISSION / "12-huge-pod.json").read_bytes()) > 200_000
    paths = [op["path"] for op in decode_patch(response)]
    containers = len(request["object"]["spec"]["containers"])
    assert paths == [
        "/metadata/annotations",
        "/spec/volumes",
        *[f"/spec/containers/{index}/volumeMounts" for index in range(containers)],
    ]
    patched_pod(request, response)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("13-unknown-review-version.json", "unsupported AdmissionReview apiVersion 'admission.k8s.io/v9'"),
        ("14-missing-object.json", "missing request.object"),
        ("15-not-json.txt", "not valid JSON"),
    ],
    ids=["unknown-version", "missing-object", "not-json"],
)
def test_sample_bad_request_400(webhook, name, reason):
    response = webhook.mutate((ADMISSION / name).read_bytes())
    assert response.status_code == 400
    assert reason in response.text
    assert len(response.text) < 300
    assert "Traceback" not in response.text


def test_sample_15_text_plain_415(webhook):
    response = webhook.mutate((ADMISSION / "15-not-json.txt").read_bytes(), content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in response.text


def test_sample_16_injection_recognised(webhook):
    """The injection is recognised by volume source, mount path and read-only flag: no patch."""
    request, response = review_response(webhook, "16-reinvocation-already-injected.json")
    assert response == {"uid": request["uid"], "allowed": True}


def test_sample_16_recognised_under_other_name(webhook):
    review = load_sample("16-reinvocation-already-injected.json")
    pod = review["request"]["object"]
    pod["metadata"]["annotations"][REQUIRED_PLUGINS[0]] = REQUIRED_PLUGINS[1]
    pod["spec"]["volumes"][0]["name"] = "nono-bin"
    pod["spec"]["containers"][0]["volumeMounts"][0]["name"] = "nono-bin"
    http = webhook.mutate(review)
    assert http.json()["response"] == {"uid": review["request"]["uid"], "allowed": True}


INJECTING_SAMPLES = [
    "02-opted-in-no-annotations-map.json",
    "03-opted-in-existing-annotations.json",
    "07-no-volumes-with-init.json",
    "08-some-volumes.json",
    "09-dry-run.json",
    "12-huge-pod.json",
    "16-reinvocation-already-injected.json",
]


@pytest.mark.parametrize("name", INJECTING_SAMPLES, ids=lambda name: name.split("-", 1)[0])
def test_sample_reinvocation_no_ops(webhook, name):
    request, response = review_response(webhook, name)
    review = load_sample(name)
    review["request"]["object"] = patched_pod(request, response)
    again = webhook.mutate(review)
    assert again.status_code == 200
    assert again.json()["response"] == {"uid": review["request"]["uid"], "allowed": True}


@pytest.mark.parametrize("name", INJECTING_SAMPLES, ids=lambda name: name.split("-", 1)[0])
def test_sample_reinvocation_new_container_mounted(webhook, name):
    request, response = review_response(webhook, name)
    review = load_sample(name)
    pod = patched_pod(request, response)
    pod["spec"]["containers"].append({"name": "added-later", "image": "busybox:1.36"})
    review["request"]["object"] = pod
    again = webhook.mutate(review).json()["response"]
    index = len(pod["spec"]["containers"]) - 1
    expected = [{"op": "add", "path": f"/spec/containers/{index}/volumeMounts", "value": [MOUNT]}]
    if REQUIRED_PLUGINS[0] not in pod["metadata"]["annotations"]:
        # A pod injected by hand without the marker gets it with the next change.
        expected.insert(
            0, {"op": "add", "path": "/metadata/annotations/required-plugins.noderesource.dev", "value": REQUIRED_PLUGINS[1]}
        )
    assert decode_patch(again) == expected
    patched_pod(review["request"], again)
