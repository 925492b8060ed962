"""The annotation guard: a ValidatingAdmissionPolicy that freezes the sandbox annotations of opted-in pods.

The CEL expressions are evaluated with cel-python on old and new Pod pairs.
NOTE: the API server evaluates them with cel-go. They use only has(), `in`,
`==`, the conditional operator, `!`, `&&`, `||`, map indexing,
string.startsWith() and map.all(), which both implement the same way for
these inputs. The API server evaluates variables lazily, and evaluating all
of them first gives the same results because none of them can fail.
"""

import celpy
import kubernetes_validate
import pytest

from .test_chart_render import CUSTOM_RUNTIME_CLASSES, KUBERNETES_VERSION

PROFILE = "nono.sh/profile"
MARKER = "required-plugins.noderesource.dev"


def _guard(rendered) -> tuple[dict, dict]:
    """Return the pod UPDATE policy and its binding."""
    suffix = "-annotation-guard"
    return rendered.one("ValidatingAdmissionPolicy", suffix), rendered.one("ValidatingAdmissionPolicyBinding", suffix)


def _binding_guard(rendered) -> tuple[dict, dict]:
    """Return the pods/binding policy and its binding."""
    suffix = "-annotation-guard-binding"
    return rendered.one("ValidatingAdmissionPolicy", suffix), rendered.one("ValidatingAdmissionPolicyBinding", suffix)


def _pod(runtime_class: str | None, annotations: dict | None, labels: dict | None = None) -> dict:
    metadata: dict = {"name": "agent", "namespace": "agents"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    spec: dict = {"containers": [{"name": "main", "image": "busybox:1.37"}]}
    if runtime_class is not None:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _evaluate(expression: str, activation: dict):
    environment = celpy.Environment()
    program = environment.program(environment.compile(expression))
    return program.evaluate(activation)


class GuardResult:
    """What the policy decides for one UPDATE: whether it applies, and the messages of failed validations."""

    def __init__(self, policy: dict, old_pod: dict, new_pod: dict):
        spec = policy["spec"]
        activation = {
            "object": celpy.json_to_cel(new_pod),
            "oldObject": celpy.json_to_cel(old_pod),
            "request": celpy.json_to_cel({"operation": "UPDATE", "namespace": "agents"}),
        }
        self.matched = all(bool(_evaluate(condition["expression"], activation)) for condition in spec["matchConditions"])
        self.denials: list[str] = []
        if not self.matched:
            return  # The API server evaluates neither variables nor validations.
        variables = {
            celpy.celtypes.StringType(variable["name"]): _evaluate(variable["expression"], activation)
            for variable in spec["variables"]
        }
        activation["variables"] = celpy.celtypes.MapType(variables)
        for validation in spec["validations"]:
            if not bool(_evaluate(validation["expression"], activation)):
                self.denials.append(validation["message"])

    @property
    def admitted(self) -> bool:
        return not self.matched or not self.denials


@pytest.fixture(scope="module")
def default_policy(render):
    return _guard(render())[0]


# --- rendering ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [{}, {"kata": {"enabled": False}}, {"runtimeClasses": CUSTOM_RUNTIME_CLASSES}],
    ids=["defaults", "kata-disabled", "custom-runtime-classes"],
)
def test_annotation_guard_objects_validate(render, values):
    rendered = render(values)

    for policy, binding in (_guard(rendered), _binding_guard(rendered)):
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
        kubernetes_validate.validate(binding, KUBERNETES_VERSION, strict=True)
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert binding["apiVersion"] == "admissionregistration.k8s.io/v1"


def test_annotation_guard_binding_denies(render):
    rendered = render()
    policy, binding = _guard(rendered)
    binding_policy, binding_binding = _binding_guard(rendered)

    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["metadata"]["name"] == "kf-kubefence-kubefence-system-annotation-guard"
    assert binding_binding["spec"] == {"policyName": binding_policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert binding_policy["metadata"]["name"] == "kf-kubefence-kubefence-system-annotation-guard-binding"


def test_annotation_guard_matches_pod_updates_only(render):
    spec = _guard(render())[0]["spec"]

    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}
    ]


@pytest.mark.parametrize(
    "values",
    [{}, {"policy": {"exemptNamespaces": ["tenant-infra"]}}],
    ids=["defaults", "policy-exemption"],
)
def test_annotation_guard_namespaces_match_webhook(render, values):
    rendered = render(values)
    policy = _guard(rendered)[0]
    webhook = rendered.one("MutatingWebhookConfiguration")["webhooks"][0]

    assert policy["spec"]["matchConstraints"]["namespaceSelector"] == webhook["namespaceSelector"]
    binding_policy = _binding_guard(rendered)[0]
    assert binding_policy["spec"]["matchConstraints"]["namespaceSelector"] == webhook["namespaceSelector"]


def test_annotation_guard_disabled_renders_nothing(render):
    rendered = render({"annotationGuard": {"enabled": False}})

    assert rendered.of_kind("ValidatingAdmissionPolicy") == []
    assert rendered.of_kind("ValidatingAdmissionPolicyBinding") == []
    assert "WARNING: annotationGuard.enabled is false" in rendered.notes


def test_annotation_guard_enabled_in_notes(render):
    notes = render().notes

    assert "WARNING: annotationGuard.enabled" not in notes
    assert "kf-kubefence-kubefence-system-annotation-guard" in notes


def test_annotation_guard_messages_name_annotation(render):
    validations = _guard(render())[0]["spec"]["validations"]

    assert [validation["reason"] for validation in validations] == ["Forbidden"] * 3
    for validation, key in zip(validations, (PROFILE, MARKER, "io.katacontainers.*")):
        assert key in validation["message"]
        assert "create it again" in validation["message"]


def test_annotation_guard_kata_disabled_drops_kata_check(render):
    spec = _guard(render({"kata": {"enabled": False}}))[0]["spec"]

    assert len(spec["validations"]) == 2
    assert [variable["name"] for variable in spec["variables"]] == ["oldAnnotations", "newAnnotations"]
    assert "kata-nono-sandbox" not in spec["matchConditions"][0]["expression"]


# --- CEL on old and new pods ------------------------------------------------------------

OPTED_IN = {PROFILE: "default", MARKER: '["kubefence"]'}
KATA_OPTED_IN = {**OPTED_IN, "io.katacontainers.config.agent.policy": "cGFja2FnZQ=="}

# (id, runtime class, old annotations, new annotations, old labels, new labels, admitted)
UPDATE_CASES = [
    ("profile-changed", "nono-runc", OPTED_IN, {**OPTED_IN, PROFILE: "codex"}, None, None, False),
    ("profile-removed", "nono-runc", OPTED_IN, {MARKER: OPTED_IN[MARKER]}, None, None, False),
    ("profile-added", "nono-runc", {MARKER: OPTED_IN[MARKER]}, OPTED_IN, None, None, False),
    ("marker-removed", "nono-runc", OPTED_IN, {PROFILE: "default"}, None, None, False),
    ("marker-changed", "nono-runc", OPTED_IN, {**OPTED_IN, MARKER: "[]"}, None, None, False),
    ("all-annotations-removed", "nono-runc", OPTED_IN, None, None, None, False),
    ("kata-key-added-on-kata", "kata-nono-sandbox", OPTED_IN, {**OPTED_IN, "io.katacontainers.config.agent.policy": "eA=="}, None, None, False),
    ("kata-key-changed-on-kata", "kata-nono-sandbox", KATA_OPTED_IN, {**KATA_OPTED_IN, "io.katacontainers.config.agent.policy": "eA=="}, None, None, False),
    ("kata-key-removed-on-kata", "kata-nono-sandbox", KATA_OPTED_IN, OPTED_IN, None, None, False),
    ("profile-changed-on-kata", "kata-nono-sandbox", OPTED_IN, {**OPTED_IN, PROFILE: "codex"}, None, None, False),
    ("kata-key-on-runc", "nono-runc", OPTED_IN, {**OPTED_IN, "io.katacontainers.config.agent.policy": "eA=="}, None, None, True),
    ("label-change", "nono-runc", OPTED_IN, OPTED_IN, {"app": "a"}, {"app": "b"}, True),
    ("unrelated-annotation-change", "nono-runc", OPTED_IN, {**OPTED_IN, "team": "blue"}, None, None, True),
    ("unrelated-annotation-on-kata", "kata-nono-sandbox", KATA_OPTED_IN, {**KATA_OPTED_IN, "team": "blue"}, None, None, True),
    ("kata-prefix-lookalike-on-kata", "kata-nono-sandbox", OPTED_IN, {**OPTED_IN, "io.katacontainersx/a": "1"}, None, None, True),
    ("no-annotations-both-sides", "nono-runc", None, None, {"app": "a"}, {"app": "b"}, True),
    ("empty-annotations-to-none", "nono-runc", {}, None, None, None, True),
    ("unchanged", "kata-nono-sandbox", KATA_OPTED_IN, KATA_OPTED_IN, None, None, True),
]


@pytest.mark.parametrize(
    ("runtime_class", "old_annotations", "new_annotations", "old_labels", "new_labels", "admitted"),
    [case[1:] for case in UPDATE_CASES],
    ids=[case[0] for case in UPDATE_CASES],
)
def test_annotation_guard_update(default_policy, runtime_class, old_annotations, new_annotations, old_labels, new_labels, admitted):
    old_pod = _pod(runtime_class, old_annotations, old_labels)
    new_pod = _pod(runtime_class, new_annotations, new_labels)

    result = GuardResult(default_policy, old_pod, new_pod)

    assert result.matched is True
    assert result.admitted is admitted


@pytest.mark.parametrize(
    ("new_annotations", "runtime_class", "named"),
    [
        ({**OPTED_IN, PROFILE: "codex"}, "nono-runc", PROFILE),
        ({PROFILE: "default"}, "nono-runc", MARKER),
        ({**KATA_OPTED_IN, "io.katacontainers.hypervisor.path": "/x"}, "kata-nono-sandbox", "io.katacontainers.*"),
    ],
    ids=["profile", "marker", "kata"],
)
def test_annotation_guard_denial_names_annotation(default_policy, new_annotations, runtime_class, named):
    old_annotations = KATA_OPTED_IN if runtime_class == "kata-nono-sandbox" else OPTED_IN

    result = GuardResult(default_policy, _pod(runtime_class, old_annotations), _pod(runtime_class, new_annotations))

    assert len(result.denials) == 1
    assert named in result.denials[0]


@pytest.mark.parametrize(
    ("values", "runtime_class", "matched"),
    [
        ({}, "nono-runc", True),
        ({}, "kata-nono-sandbox", True),
        ({}, "runc", False),
        ({}, None, False),
        ({}, "nono-runc-other", False),
        ({"kata": {"enabled": False}}, "kata-nono-sandbox", False),
        ({"runtimeClasses": CUSTOM_RUNTIME_CLASSES}, "sandbox-b", True),
        ({"runtimeClasses": CUSTOM_RUNTIME_CLASSES}, "nono-runc", False),
    ],
    ids=["runc-class", "kata-class", "plain-runc", "no-class", "similar-name", "kata-disabled", "custom-class", "custom-default-gone"],
)
def test_annotation_guard_match_condition(render, values, runtime_class, matched):
    """Only pods of an opted-in class are checked; any other pod may change its annotations freely."""
    policy = _guard(render(values))[0]
    old_pod = _pod(runtime_class, OPTED_IN)
    new_pod = _pod(runtime_class, {**OPTED_IN, PROFILE: "codex"})

    result = GuardResult(policy, old_pod, new_pod)

    assert result.matched is matched
    assert result.admitted is not matched


def test_annotation_guard_custom_kata_class(render):
    """The Kata check follows the `kata: true` entries of runtimeClasses."""
    policy = _guard(render({"runtimeClasses": CUSTOM_RUNTIME_CLASSES}))[0]
    added = {**OPTED_IN, "io.katacontainers.config.agent.policy": "eA=="}

    on_kata = GuardResult(policy, _pod("kata-fc", OPTED_IN), _pod("kata-fc", added))
    on_runc = GuardResult(policy, _pod("sandbox-a", OPTED_IN), _pod("sandbox-a", added))

    assert on_kata.admitted is False
    assert on_runc.admitted is True


# --- pods/binding ------------------------------------------------------------------------


def test_annotation_guard_binding_matches_binding_create(render):
    spec = _binding_guard(render())[0]["spec"]

    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/binding"], "scope": "Namespaced"}
    ]
    assert "matchConditions" not in spec


# (id, Binding annotations or None, admitted)
BINDING_CASES = [
    ("no-annotations", None, True),
    ("empty-annotations", {}, True),
    ("unrelated-annotation", {"scheduler.example/zone": "a"}, True),
    ("kata-prefix-lookalike", {"io.katacontainersx/a": "1"}, True),
    ("profile", {PROFILE: "codex"}, False),
    ("marker", {MARKER: "[]"}, False),
    ("kata-key", {"io.katacontainers.config.agent.policy": "eA=="}, False),
    ("profile-among-others", {"scheduler.example/zone": "a", PROFILE: "default"}, False),
]


@pytest.mark.parametrize(
    ("annotations", "admitted"),
    [case[1:] for case in BINDING_CASES],
    ids=[case[0] for case in BINDING_CASES],
)
def test_annotation_guard_binding_annotations(render, annotations, admitted):
    """The API server merges a Binding's annotations into the pod, so the sandbox keys are denied there."""
    spec = _binding_guard(render())[0]["spec"]
    metadata: dict = {"name": "agent", "namespace": "agents"}
    if annotations is not None:
        metadata["annotations"] = annotations
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": metadata, "target": {"kind": "Node", "name": "node-1"}}
    activation = {
        "object": celpy.json_to_cel(binding),
        "oldObject": celpy.json_to_cel(None),
        "request": celpy.json_to_cel({"operation": "CREATE", "namespace": "agents", "subResource": "binding"}),
    }

    [validation] = spec["validations"]

    assert bool(_evaluate(validation["expression"], activation)) is admitted
    for key in (PROFILE, MARKER, "io.katacontainers.*"):
        assert key in validation["message"]
