"""The Helm chart, rendered offline by the real Helm engine and checked object by object.

Every rendered object is validated against the Kubernetes schemas of one
pinned release. cert-manager objects are skipped there, because
kubernetes-validate ships only the built-in Kubernetes schemas.
"""

import json
import os
import re
import stat
import subprocess
import tomllib

import celpy
import kubernetes_validate
import pytest
from helm_python import HelmRenderError, HelmValuesError, lint

from kubefence.common.policy import NamespaceRule, Policy, ImageSource, HostPathSource, load_policy
from kubefence.nri import nodesetup

# Kubernetes release whose schemas every rendered object must satisfy.
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "kubefence-system"
CHART = "charts/kubefence"
CHART_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2] / CHART

DEFAULT_PROFILES = ("default", "claude-code", "codex", "opencode", "openclaw", "swival")

CUSTOM_RUNTIME_CLASSES = [
    {"name": "sandbox-a", "handler": "runc-sandbox", "kata": False, "create": True},
    {"name": "sandbox-b", "handler": "runc-sandbox-b", "kata": False, "create": False},
    {"name": "kata-fc", "handler": "kata-fc", "kata": True, "create": True},
]
ENFORCED_NAMESPACES = [
    {"match": "agents-*", "defaultProfile": "swival", "allowedProfiles": ["swival"], "enforce": True},
    {"match": "ci", "enforce": True},
    {"match": "tenant-?", "allowedProfiles": ["default", "codex"]},
    {"match": "team-[!x]", "enforce": True},
]
# Namespace rules with their own allowed lists, which replace the cluster
# list in their namespaces: `codex` repeats a cluster profile, `reviewer`
# and `builder` exist only here, and `reviewer` appears in two rules.
NAMESPACE_ALLOWED_PROFILES = [
    {"match": "agents", "defaultProfile": "codex", "allowedProfiles": ["codex", "reviewer"]},
    {"match": "build-*", "allowedProfiles": ["default", "builder", "reviewer"]},
    {"match": "tenant-?", "defaultProfile": "swival"},
]

# Value sets the chart must render, lint and validate with. Each id names the toggled value.
VALUE_SETS = {
    "defaults": {},
    "kata-disabled": {"kata": {"enabled": False}},
    "cert-manager": {"certManager": {"enabled": True}},
    "image-volume": {"nonoVolume": {"type": "image", "image": {"reference": "ghcr.io/example/nono:0.76.0"}}},
    "custom-runtime-classes": {"runtimeClasses": CUSTOM_RUNTIME_CLASSES},
    "enforced-namespaces": {"policy": {"namespaces": ENFORCED_NAMESPACES}},
    "node-components-disabled": {"nri": {"enabled": False}, "nodeSetup": {"enabled": False}},
    "restart-containerd": {"nodeSetup": {"restartContainerd": True, "privileged": False}},
    "annotation-guard-disabled": {"annotationGuard": {"enabled": False}},
    "namespace-allowed-profiles": {"policy": {"namespaces": NAMESPACE_ALLOWED_PROFILES}},
    "pinned-digests": {
        "image": {
            "webhook": {"repository": "registry.example/kf-webhook", "digest": "sha256:" + "a" * 64},
            "nri": {"repository": "registry.example/kf-nri", "tag": "1.2.3"},
        }
    },
}


@pytest.fixture(params=sorted(VALUE_SETS), ids=sorted(VALUE_SETS))
def value_set(request):
    return request.param, VALUE_SETS[request.param]


def _container(pod_spec: dict, name: str, init: bool = False) -> dict:
    containers = pod_spec["initContainers" if init else "containers"]
    return next(container for container in containers if container["name"] == name)


def _policy(rendered) -> Policy:
    config_map = rendered.one("ConfigMap", "-webhook-policy")
    return load_policy(config_map["data"]["policy.yaml"], source="policy ConfigMap")


def _nri_config(rendered) -> dict:
    return tomllib.loads(rendered.one("ConfigMap", "-nri")["data"]["config.toml"])


# --- lint and schemas ----------------------------------------------------------


def test_chart_lint_passes(value_set):
    _, values = value_set

    report = lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBERNETES_VERSION}")

    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; 1 (info) only suggests an icon.
    assert [message for message in report["messages"] if message["severity"] >= 2] == []


def test_chart_objects_validate(render, value_set):
    _, values = value_set
    rendered = render(values)

    checked = 0
    for obj in rendered.objects:
        if obj["apiVersion"].startswith("cert-manager.io/"):
            continue  # No schema for cert-manager CRDs in kubernetes-validate.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 5


def test_kubernetes_validate_rejects_unknown_field(render):
    """Shows the schema check above can fail: strict mode rejects a field Kubernetes does not know."""
    deployment = render().one("Deployment", "-webhook")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFs"] = True

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "values",
    [
        {"webhok": {"replicas": 3}},
        {"webhook": {"replica": 3}},
        {"runtimeClasses": [{"name": "x", "handler": "x", "kata": False, "create": True, "overhead": {}}]},
        {"policy": {"namespaces": [{"match": "a", "enforced": True}]}},
        {"nri": {"tolerations": [{"operator": "Exists", "effects": "NoSchedule"}]}},
        {"certs": {"resources": {"limit": {"cpu": 1}}}},
    ],
    ids=["top-level", "webhook", "runtime-class-entry", "namespace-rule", "toleration", "resources"],
)
def test_schema_unknown_key_fails_render(render, values):
    with pytest.raises(HelmValuesError) as caught:
        render(values)

    assert "additional properties" in str(caught.value)


@pytest.mark.parametrize(
    "values",
    [
        {"policy": {"defaultProfile": "--allow=/"}},
        {"webhook": {"timeoutSeconds": 31}},
        {"certs": {"rotate": "everything"}},
        {"nodeSetup": {"nonoSha256": "abc"}},
        {"nri": {"pluginIndex": "1"}},
        {"hostDir": "/opt/nono nri"},
        {"nodeSetup": {"containerdConfig": "/etc/containerd/../x.toml; reboot"}},
        {"nri": {"verifyHook": "yes"}},
    ],
    ids=[
        "profile-flag", "timeout-above-30", "rotate-unknown", "short-digest", "one-digit-index", "path-space",
        "path-shell", "verify-hook-string",
    ],
)
def test_schema_invalid_value_fails_render(render, values):
    with pytest.raises(HelmValuesError):
        render(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"policy": {"defaultProfile": "codex", "allowedProfiles": ["default"]}}, 'policy.defaultProfile: "codex" is not in'),
        (
            {"policy": {"namespaces": [{"match": "ci", "defaultProfile": "swival"}], "allowedProfiles": ["default"]}},
            'policy.namespaces[0]: default profile "swival" is not in',
        ),
        (
            {"policy": {"namespaces": [{"match": "ci", "allowedProfiles": ["codex"]}]}},
            'policy.namespaces[0]: default profile "default" is not in',
        ),
        (
            {"runtimeClasses": [
                {"name": "a", "handler": "a", "kata": False, "create": True},
                {"name": "a", "handler": "b", "kata": False, "create": True},
            ]},
            "runtimeClasses: duplicate name",
        ),
    ],
    ids=["default-not-allowed", "rule-default-not-allowed", "rule-allowed-excludes-default", "duplicate-class"],
)
def test_policy_invalid_combination_fails_render(render, values, message):
    with pytest.raises(HelmRenderError) as caught:
        render(values)

    assert message in str(caught.value)


def test_pdb_min_available_below_replicas(render):
    with pytest.raises(HelmRenderError) as caught:
        render({"webhook": {"replicas": 1}})

    assert "webhook.minAvailable (1) must be lower than webhook.replicas (1)" in str(caught.value)


def test_image_volume_without_reference_fails(render):
    with pytest.raises(HelmRenderError) as caught:
        render({"nonoVolume": {"type": "image"}})

    assert "nonoVolume.image.reference: required" in str(caught.value)


def test_kata_only_classes_with_kata_disabled_fails(render):
    only_kata = [{"name": "kata-nono-sandbox", "handler": "kata", "kata": True, "create": True}]

    with pytest.raises(HelmRenderError) as caught:
        render({"runtimeClasses": only_kata, "kata": {"enabled": False}})

    assert "runtimeClasses: no entry left" in str(caught.value)


# --- MutatingWebhookConfiguration --------------------------------------------


def test_webhook_configuration_settings(render):
    configuration = render().one("MutatingWebhookConfiguration")
    [webhook] = configuration["webhooks"]

    assert configuration["metadata"]["name"] == f"kf-kubefence-{NAMESPACE}"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["sideEffects"] == "None"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["clientConfig"] == {
        "service": {"name": "kf-kubefence-webhook", "namespace": NAMESPACE, "path": "/mutate", "port": 443}
    }
    assert webhook["rules"] == [
        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"},
        {
            "operations": ["UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods/ephemeralcontainers"],
            "scope": "Namespaced",
        },
    ]


@pytest.mark.parametrize("cert_manager", [False, True], ids=["hook", "cert-manager"])
def test_webhook_configuration_has_no_ca_bundle(render, cert_manager):
    configuration = render({"certManager": {"enabled": cert_manager}}).one("MutatingWebhookConfiguration")

    for webhook in configuration["webhooks"]:
        assert "caBundle" not in webhook["clientConfig"]


def test_webhook_configuration_timeout_from_values(render):
    configuration = render({"webhook": {"timeoutSeconds": 10}}).one("MutatingWebhookConfiguration")

    assert configuration["webhooks"][0]["timeoutSeconds"] == 10


@pytest.mark.parametrize("namespace", [NAMESPACE, "security"], ids=["kubefence-system", "security"])
def test_namespace_selector_excludes_system_and_release(render, namespace):
    configuration = render(namespace=namespace).one("MutatingWebhookConfiguration")

    assert configuration["webhooks"][0]["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "kube-public", "kube-node-lease", namespace],
            }
        ]
    }


def test_namespace_selector_adds_policy_exemptions(render):
    values = {"policy": {"exemptNamespaces": ["kube-system", "monitoring"]}}

    selector = render(values).one("MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]

    # The system namespaces stay excluded even when the policy list omits them.
    assert selector["matchExpressions"][0]["values"] == [
        "kube-system", "kube-public", "kube-node-lease", "monitoring", NAMESPACE
    ]


def _match(expression: str, pod_spec: dict, namespace: str) -> bool:
    """Evaluate a matchConditions expression with cel-python.

    NOTE: the API server evaluates with cel-go. The expressions here use only
    has(), `in`, `==`, `||`, `&&` and string.matches(), which both implement
    the same way for these inputs.
    """
    environment = celpy.Environment()
    program = environment.program(environment.compile(expression))
    activation = {
        "object": celpy.json_to_cel({"apiVersion": "v1", "kind": "Pod", "spec": pod_spec}),
        "request": celpy.json_to_cel({"namespace": namespace, "operation": "CREATE"}),
    }
    return bool(program.evaluate(activation))


MATCH_CASES = [
    # (values set, pod spec, namespace, expected)
    ("defaults", {"runtimeClassName": "nono-runc"}, "agents", True),
    ("defaults", {"runtimeClassName": "kata-nono-sandbox"}, "agents", True),
    ("defaults", {"runtimeClassName": "runc"}, "agents", False),
    ("defaults", {}, "agents", False),
    ("defaults", {"runtimeClassName": "nono-runc-other"}, "agents", False),
    ("kata-disabled", {"runtimeClassName": "kata-nono-sandbox"}, "agents", False),
    ("kata-disabled", {"runtimeClassName": "nono-runc"}, "agents", True),
    ("custom-runtime-classes", {"runtimeClassName": "sandbox-b"}, "default", True),
    ("custom-runtime-classes", {"runtimeClassName": "nono-runc"}, "default", False),
    ("enforced-namespaces", {}, "agents-7", True),
    ("enforced-namespaces", {"runtimeClassName": "runc"}, "agents-prod", True),
    ("enforced-namespaces", {}, "ci", True),
    ("enforced-namespaces", {}, "cix", False),
    ("enforced-namespaces", {}, "my-agents-1", False),
    # Matched by a rule without enforce: only an opted-in class reaches the webhook.
    ("enforced-namespaces", {}, "tenant-a", False),
    ("enforced-namespaces", {"runtimeClassName": "nono-runc"}, "tenant-a", True),
    ("enforced-namespaces", {}, "team-a", True),
    ("enforced-namespaces", {}, "team-x", False),
    ("enforced-namespaces", {}, "team-ab", False),
]


@pytest.mark.parametrize(
    ("value_name", "pod_spec", "namespace", "expected"),
    MATCH_CASES,
    ids=[f"{case[0]}-{case[1].get('runtimeClassName', 'no-class')}-{case[2]}" for case in MATCH_CASES],
)
def test_match_condition_selects_candidates(render, value_name, pod_spec, namespace, expected):
    [condition] = render(VALUE_SETS[value_name]).one("MutatingWebhookConfiguration")["webhooks"][0]["matchConditions"]

    assert _match(condition["expression"], pod_spec, namespace) is expected


def test_match_condition_ephemeral_update_sees_pod(render):
    """For UPDATE of pods/ephemeralcontainers the object is the whole Pod, so the class test applies."""
    [condition] = render().one("MutatingWebhookConfiguration")["webhooks"][0]["matchConditions"]
    pod_spec = {"runtimeClassName": "nono-runc", "ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}

    assert _match(condition["expression"], pod_spec, "agents") is True


def test_cert_manager_mode_injects_ca(render):
    rendered = render({"certManager": {"enabled": True}})

    configuration = rendered.one("MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/kf-kubefence-webhook"
    }
    assert rendered.of_kind("Job") == []
    assert rendered.of_kind("Role") == []
    assert rendered.of_kind("ClusterRole") == []
    serving = next(
        obj for obj in rendered.of_kind("Certificate") if obj["metadata"]["name"] == "kf-kubefence-webhook"
    )
    assert serving["spec"]["secretName"] == "kf-kubefence-webhook-tls"
    assert serving["spec"]["dnsNames"][0] == f"kf-kubefence-webhook.{NAMESPACE}.svc"


def test_hook_mode_has_no_inject_annotation(render):
    configuration = render().one("MutatingWebhookConfiguration")

    assert "annotations" not in configuration["metadata"]


# --- certificate hook RBAC ---------------------------------------------------------


def test_cert_hook_role_is_minimal(render):
    role = render().one("Role", "-certs")

    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["kf-kubefence-webhook-ca", "kf-kubefence-webhook-tls"],
            "verbs": ["get", "update", "patch"],
        },
        # create cannot be restricted by resourceNames in Kubernetes RBAC.
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]


def test_cert_hook_cluster_role_is_minimal(render):
    rendered = render()
    cluster_role = rendered.one("ClusterRole", "-certs-" + NAMESPACE)
    configuration = rendered.one("MutatingWebhookConfiguration")

    assert cluster_role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [configuration["metadata"]["name"]],
            "verbs": ["get", "patch"],
        }
    ]


def test_cert_hook_bindings_target_job_account(render):
    rendered = render()
    job = rendered.one("Job", "-certs")
    account = job["spec"]["template"]["spec"]["serviceAccountName"]

    for kind in ("RoleBinding", "ClusterRoleBinding"):
        binding = rendered.one(kind)
        role_kind = kind.removesuffix("Binding")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": rendered.one(role_kind)["metadata"]["name"],
        }


def test_cert_hook_job_arguments(render):
    rendered = render({"certs": {"rotate": "leaf", "renewBefore": "240h"}})
    container = rendered.one("Job", "-certs")["spec"]["template"]["spec"]["containers"][0]

    assert container["command"] == ["kubefence"]
    assert container["args"] == [
        "certs", "ensure",
        "--namespace", NAMESPACE,
        "--service", rendered.one("Service")["metadata"]["name"],
        "--ca-secret", "kf-kubefence-webhook-ca",
        "--tls-secret", "kf-kubefence-webhook-tls",
        "--webhook-config", rendered.one("MutatingWebhookConfiguration")["metadata"]["name"],
        "--rotate", "leaf",
        "--renew-before", "240h",
        "--key-type", "ecdsa-p256",
    ]


def test_cert_hook_objects_are_ordered_hooks(render):
    rendered = render()
    kinds = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Job")

    weights = {}
    for kind in kinds:
        annotations = rendered.one(kind)["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade,post-install,post-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        weights[kind] = int(annotations["helm.sh/hook-weight"])
    assert max(weights[kind] for kind in kinds[:-1]) < weights["Job"]
    assert weights["Role"] < weights["RoleBinding"]
    assert weights["ClusterRole"] < weights["ClusterRoleBinding"]


def test_only_cert_hook_mounts_token(render):
    rendered = render()

    for kind in ("Deployment", "DaemonSet", "Job"):
        for obj in rendered.of_kind(kind):
            spec = obj["spec"]["template"]["spec"]
            expected = kind == "Job"
            assert spec["automountServiceAccountToken"] is expected, obj["metadata"]["name"]


# --- webhook Deployment ---------------------------------------------------------------


def test_webhook_deployment_hardening(render):
    rendered = render()
    deployment = rendered.one("Deployment", "-webhook")
    spec = deployment["spec"]["template"]["spec"]
    container = _container(spec, "webhook")

    assert deployment["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]) == {"requests", "limits"}
    # Pod Security "restricted" also requires a seccomp profile and no host access.
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all("hostPath" not in volume for volume in spec["volumes"])
    assert not any(spec.get(key) for key in ("hostPID", "hostIPC", "hostNetwork"))
    anti_affinity = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti_affinity["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert anti_affinity["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    budget = rendered.one("PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def test_webhook_container_command_line(render):
    spec = render().one("Deployment", "-webhook")["spec"]["template"]["spec"]
    container = _container(spec, "webhook")

    assert [container["command"][0], *container["args"]] == (
        "kubefence webhook --host 0.0.0.0 --port 8443 --tls-cert-file /etc/kubefence/tls/tls.crt "
        "--tls-private-key-file /etc/kubefence/tls/tls.key --policy /etc/kubefence/policy/policy.yaml"
    ).split()
    namespace_env = next(env for env in container["env"] if env["name"] == "POD_NAMESPACE")
    assert namespace_env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/etc/kubefence/tls"]["readOnly"] is True
    assert mounts["/etc/kubefence/policy"]["readOnly"] is True
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes[mounts["/etc/kubefence/tls"]["name"]]["secret"]["secretName"] == "kf-kubefence-webhook-tls"


def test_webhook_probes_use_https_endpoints(render):
    container = _container(render().one("Deployment", "-webhook")["spec"]["template"]["spec"], "webhook")

    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert container["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]


def test_webhook_service_targets_https(render):
    service = render().one("Service")

    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]


@pytest.mark.parametrize("image_key", ["webhook", "nri"])
def test_image_digest_wins_over_tag(render, image_key):
    values = {"image": {image_key: {"repository": "registry.example/kf", "tag": "9.9.9", "digest": "sha256:" + "b" * 64}}}
    rendered = render(values)
    kind, name = ("Deployment", "webhook") if image_key == "webhook" else ("DaemonSet", "nri-plugin")
    suffix = "-webhook" if image_key == "webhook" else "-nri"

    container = _container(rendered.one(kind, suffix)["spec"]["template"]["spec"], name)

    assert container["image"] == "registry.example/kf@sha256:" + "b" * 64


def test_image_tag_defaults_to_app_version(render, chart):
    container = _container(render().one("Deployment", "-webhook")["spec"]["template"]["spec"], "webhook")

    assert container["image"] == f"ghcr.io/kubefence/kubefence-webhook:{chart.metadata['appVersion']}"


# --- policy ConfigMap ------------------------------------------------------------------


EXPECTED_POLICIES = {
    "defaults": Policy(),
    "kata-disabled": Policy(runtime_classes=("nono-runc",), kata_runtime_classes=()),
    "cert-manager": Policy(),
    "image-volume": Policy(nono_volume=ImageSource(reference="ghcr.io/example/nono:0.76.0")),
    "custom-runtime-classes": Policy(
        runtime_classes=("sandbox-a", "sandbox-b", "kata-fc"), kata_runtime_classes=("kata-fc",)
    ),
    "enforced-namespaces": Policy(
        namespaces=(
            NamespaceRule(match="agents-*", default_profile="swival", allowed_profiles=("swival",), enforce=True),
            NamespaceRule(match="ci", enforce=True),
            NamespaceRule(match="tenant-?", allowed_profiles=("default", "codex")),
            NamespaceRule(match="team-[!x]", enforce=True),
        )
    ),
    "node-components-disabled": Policy(),
    "restart-containerd": Policy(),
    "pinned-digests": Policy(),
}


@pytest.mark.parametrize("value_name", sorted(EXPECTED_POLICIES))
def test_policy_config_map_loads(render, value_name):
    policy = _policy(render(VALUE_SETS[value_name]))

    assert policy == EXPECTED_POLICIES[value_name]


def test_policy_config_map_matches_shipped_default(render):
    assert _policy(render()) == Policy()
    assert _policy(render()).nono_volume == HostPathSource(path="/opt/nono-nri")


def test_policy_values_reach_policy(render):
    values = {
        "policy": {
            "defaultProfile": "codex",
            "allowedProfiles": ["codex", "swival"],
            "onInvalidProfile": "default",
            "ephemeralContainers": "reject",
        },
        "hostDir": "/var/lib/nono",
        "nri": {"pluginName": "kubefence-test"},
    }

    policy = _policy(render(values))

    assert policy.default_profile == "codex"
    assert policy.allowed_profiles == ("codex", "swival")
    assert policy.on_invalid_profile == "default"
    assert policy.ephemeral_containers == "reject"
    assert policy.nono_volume == HostPathSource(path="/var/lib/nono")
    assert policy.plugin_name == "kubefence-test"


def test_policy_change_rolls_webhook(render):
    first = render().one("Deployment", "-webhook")["spec"]["template"]["metadata"]["annotations"]
    second = render({"policy": {"onInvalidProfile": "default"}}).one("Deployment", "-webhook")
    second = second["spec"]["template"]["metadata"]["annotations"]

    assert first["checksum/policy"] != second["checksum/policy"]


# --- one set of runtime classes for both sides -----------------------------------------------


@pytest.mark.parametrize("value_name", ["defaults", "kata-disabled", "custom-runtime-classes"])
def test_nri_handlers_match_webhook_runtime_classes(render, value_name):
    values = VALUE_SETS[value_name]
    rendered = render(values)
    classes = values.get("runtimeClasses", [
        {"name": "nono-runc", "handler": "nono-runc", "kata": False, "create": True},
        {"name": "kata-nono-sandbox", "handler": "kata-nono-sandbox", "kata": True, "create": True},
    ])
    kata_enabled = values.get("kata", {}).get("enabled", True)
    in_force = [entry for entry in classes if kata_enabled or not entry["kata"]]

    policy = _policy(rendered)
    config = _nri_config(rendered)
    runtime_class_objects = {obj["metadata"]["name"]: obj["handler"] for obj in rendered.of_kind("RuntimeClass")}

    assert policy.runtime_classes == tuple(entry["name"] for entry in in_force)
    assert config["runtime_handlers"] == [entry["handler"] for entry in in_force]
    assert runtime_class_objects == {entry["name"]: entry["handler"] for entry in in_force if entry["create"]}
    for name, handler in runtime_class_objects.items():
        assert name in policy.runtime_classes
        assert handler in config["runtime_handlers"]


def test_runtime_classes_kata_disabled_dropped(render):
    rendered = render({"kata": {"enabled": False}})

    assert [obj["metadata"]["name"] for obj in rendered.of_kind("RuntimeClass")] == ["nono-runc"]
    assert _policy(rendered).kata_runtime_classes == ()
    assert _nri_config(rendered)["runtime_handlers"] == ["nono-runc"]
    assert rendered.notes.lstrip().startswith("WARNING: kata.enabled is false")


# --- NRI DaemonSet ---------------------------------------------------------------------------


def test_nri_config_keys(render):
    config = _nri_config(render())

    assert config == {
        "socket_path": "/var/run/nri/nri.sock",
        "plugin_name": "kubefence",
        "plugin_index": "90",
        "runtime_handlers": ["nono-runc", "kata-nono-sandbox"],
        "default_profile": "default",
        "allowed_profiles": list(DEFAULT_PROFILES),
        "on_missing_profile": "reject",
        "nono_host_dir": "/opt/nono-nri",
        "state_dir": "/var/lib/kubefence-nri",
        "validator": True,
        "verify_hook": True,
        "metrics_address": "0.0.0.0:9090",
    }


def test_nri_allowed_profiles_union_of_namespace_rules(render):
    """The plugin's one list admits every profile some namespace rule allows, once, in first-seen order."""
    config = _nri_config(render(VALUE_SETS["namespace-allowed-profiles"]))

    assert config["allowed_profiles"] == [*DEFAULT_PROFILES, "reviewer", "builder"]
    assert config["default_profile"] == "default"


def test_nri_allowed_profiles_cover_webhook_policy(render):
    """Every profile the webhook admits in some namespace passes the plugin's list."""
    rendered = render(VALUE_SETS["namespace-allowed-profiles"])
    policy = _policy(rendered)
    config = _nri_config(rendered)

    for namespace in ("agents", "build-7", "tenant-a", "elsewhere"):
        default, allowed = policy.profiles_for(namespace)
        assert default in config["allowed_profiles"], namespace
        assert set(allowed) <= set(config["allowed_profiles"]), namespace
    assert policy.profiles_for("agents")[1] == ("codex", "reviewer")


def test_nri_config_loads_with_namespace_profiles(render, tmp_path):
    """The plugin's own config loader accepts the union list and keeps the cluster default."""
    from kubefence.nri.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(render(VALUE_SETS["namespace-allowed-profiles"]).one("ConfigMap", "-nri")["data"]["config.toml"])

    config = load_config(str(path), {})

    assert config.allowed_profiles == (*DEFAULT_PROFILES, "reviewer", "builder")
    assert config.default_profile == "default"

def test_nri_config_verify_hook_off(render):
    assert _nri_config(render({"nri": {"verifyHook": False}}))["verify_hook"] is False


def test_nri_config_verify_hook_off_for_image_volume(render):
    values = {"nonoVolume": {"type": "image", "image": {"reference": "ghcr.io/example/nono:1"}}}
    assert _nri_config(render(values))["verify_hook"] is False


def test_nri_config_verify_hook_accepted_by_plugin(render, tmp_path):
    from kubefence.nri.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(render().one("ConfigMap", "-nri")["data"]["config.toml"])
    assert load_config(str(path)).verify_hook is True


def test_nri_config_optional_keys(render, tmp_path):
    """seccompProfile and validator reach the plugin's own loader with the types it accepts."""
    from kubefence.nri.config import load_config

    rendered = render({"nri": {"seccompProfile": "restricted", "validator": False}})
    config = _nri_config(rendered)
    assert config["seccomp_profile"] == "restricted"
    assert config["validator"] is False

    path = tmp_path / "config.toml"
    path.write_text(rendered.one("ConfigMap", "-nri")["data"]["config.toml"])
    loaded = load_config(str(path))
    assert loaded.seccomp_profile == "restricted"
    assert loaded.validator is False


def test_nri_config_validator_on_by_default(render):
    assert _nri_config(render())["validator"] is True


def test_nri_daemonset_never_overlaps(render):
    daemon_set = render().one("DaemonSet", "-nri")

    assert daemon_set["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }


@pytest.mark.parametrize("socket_path", ["/var/run/nri/nri.sock", "/run/custom/nri/plugin.sock"])
def test_nri_socket_directory_mounted(render, socket_path):
    spec = render({"nri": {"socketPath": socket_path}}).one("DaemonSet", "-nri")["spec"]["template"]["spec"]
    container = _container(spec, "nri-plugin")
    socket_dir = os.path.dirname(socket_path)

    mount = next(mount for mount in container["volumeMounts"] if mount["name"] == "nri-socket-dir")
    volume = next(volume for volume in spec["volumes"] if volume["name"] == "nri-socket-dir")
    assert mount["mountPath"] == socket_dir
    assert volume["hostPath"] == {"path": socket_dir, "type": "DirectoryOrCreate"}
    for volume in spec["volumes"]:
        assert volume.get("hostPath", {}).get("path") != socket_path


def test_nri_daemonset_mounts_and_identity(render):
    spec = render().one("DaemonSet", "-nri")["spec"]["template"]["spec"]
    container = _container(spec, "nri-plugin")
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}

    assert [container["command"][0], *container["args"]] == ["kubefence", "nri", "--config", "/etc/kubefence/nri/config.toml"]
    assert mounts["nono-host-dir"] == {"name": "nono-host-dir", "mountPath": "/opt/nono-nri", "readOnly": True}
    assert volumes["nono-host-dir"]["hostPath"] == {"path": "/opt/nono-nri", "type": "Directory"}
    assert volumes["state"]["hostPath"] == {"path": "/var/lib/kubefence-nri", "type": "DirectoryOrCreate"}
    assert mounts["state"]["mountPath"] == "/var/lib/kubefence-nri"
    assert container["securityContext"]["runAsUser"] == 0
    assert container["securityContext"]["privileged"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def test_nri_probes_use_plugin_endpoint(render):
    container = _container(render().one("DaemonSet", "-nri")["spec"]["template"]["spec"], "nri-plugin")

    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
        assert "exec" not in container[probe]


@pytest.mark.parametrize("kind_suffix", ["-nri", "-node-setup"])
def test_node_daemonsets_tolerate_every_taint(render, kind_suffix):
    spec = render().one("DaemonSet", kind_suffix)["spec"]["template"]["spec"]

    assert spec["tolerations"] == [{"operator": "Exists"}]


def test_node_components_disabled_render_nothing(render):
    rendered = render(VALUE_SETS["node-components-disabled"])

    assert rendered.of_kind("DaemonSet") == []
    assert [obj["metadata"]["name"] for obj in rendered.of_kind("ConfigMap")] == ["kf-kubefence-webhook-policy"]
    assert "WARNING: nodeSetup.enabled is false" in rendered.notes
    assert "WARNING: nri.enabled is false" in rendered.notes


# --- node-setup DaemonSet -------------------------------------------------------------------------


def test_node_setup_daemonset_mounts(render):
    spec = render().one("DaemonSet", "-node-setup")["spec"]["template"]["spec"]
    container = _container(spec, "node-setup", init=True)
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume["hostPath"]["path"] for volume in spec["volumes"]}

    assert container["securityContext"]["privileged"] is True
    assert container["securityContext"]["runAsUser"] == 0
    assert mounts == {
        "containerd-config": "/host/etc/containerd",
        "containerd-socket-dir": "/host/run/containerd",
        "nono-host-dir": "/host/opt/nono-nri",
    }
    assert volumes == {
        "containerd-config": "/etc/containerd",
        "containerd-socket-dir": "/run/containerd",
        "nono-host-dir": "/opt/nono-nri",
    }
    assert "hostPID" not in spec
    pause = _container(spec, "pause")
    assert pause["securityContext"]["runAsNonRoot"] is True


def test_node_setup_unprivileged_gets_capabilities(render):
    spec = render({"nodeSetup": {"privileged": False}}).one("DaemonSet", "-node-setup")["spec"]["template"]["spec"]
    context = _container(spec, "node-setup", init=True)["securityContext"]

    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]}


def _run_setup_script(render, values: dict, tmp_path, stub_exit: int) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the init container's shell script with stand-ins for `kubefence` and `nsenter` on PATH.

    The stand-ins record their arguments and exit with `stub_exit` (kubefence)
    or 0 (nsenter); nothing touches the host.
    """
    spec = render(values).one("DaemonSet", "-node-setup")["spec"]["template"]["spec"]
    container = _container(spec, "node-setup", init=True)
    assert container["command"] == ["/bin/sh", "-c"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kubefence", "nsenter"):
        stub = bin_dir / name
        code = stub_exit if name == "kubefence" else 0
        stub.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "{tmp_path}/{name}.args"\nexit {code}\n')
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    result = subprocess.run(
        ["/bin/sh", "-c", container["args"][0]],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "NODE_NAME": "node-1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    recorded = tmp_path / "kubefence.args"
    arguments = recorded.read_text().splitlines() if recorded.exists() else []
    return result, arguments


@pytest.mark.parametrize(
    ("stub_exit", "expected_exit"),
    [(nodesetup.EXIT_OK, 0), (nodesetup.EXIT_RESTART_NEEDED, 0), (nodesetup.EXIT_FAILED, 1)],
    ids=["no-change", "restart-needed", "failed"],
)
def test_node_setup_script_exit_codes(render, tmp_path, stub_exit, expected_exit):
    result, _ = _run_setup_script(render, {}, tmp_path, stub_exit)

    assert result.returncode == expected_exit
    restart_message = "restart containerd there to apply it" in result.stderr
    assert restart_message is (stub_exit == nodesetup.EXIT_RESTART_NEEDED)
    assert not (tmp_path / "nsenter.args").exists()


def test_node_setup_script_arguments_parse(render, tmp_path):
    sha = "c" * 64
    _, arguments = _run_setup_script(render, {"nodeSetup": {"nonoSha256": sha, "containerdVersion": "2.2.2"}}, tmp_path, 0)
    parser = __import__("argparse").ArgumentParser(prog="kubefence")
    nodesetup.register(parser.add_subparsers())

    args = parser.parse_args(arguments)

    assert arguments[0] == "node-setup"
    assert args.host_dir == "/host/opt/nono-nri"
    assert args.nono_sha256 == sha
    assert args.no_binary is False
    assert args.containerd_config == "/host/etc/containerd/config.toml"
    assert args.containerd_version == "2.2.2"
    assert args.containerd_address == "/host/run/containerd/containerd.sock"
    assert args.runtime_handler == ["nono-runc"]


@pytest.mark.parametrize(
    ("value_name", "handlers"),
    [("custom-runtime-classes", ["runc-sandbox", "runc-sandbox-b"]), ("kata-disabled", ["nono-runc"])],
)
def test_node_setup_registers_runc_handlers(render, tmp_path, value_name, handlers):
    _, arguments = _run_setup_script(render, VALUE_SETS[value_name], tmp_path, 0)
    parser = __import__("argparse").ArgumentParser(prog="kubefence")
    nodesetup.register(parser.add_subparsers())

    args = parser.parse_args(arguments)

    # Kata handlers come from the Kata installation, so only runc-based ones are passed.
    assert args.runtime_handler == handlers


def test_node_setup_script_image_volume_skips_binary(render, tmp_path):
    _, arguments = _run_setup_script(render, VALUE_SETS["image-volume"], tmp_path, 0)

    assert "--no-binary" in arguments


def test_node_setup_restart_containerd(render, tmp_path):
    values = VALUE_SETS["restart-containerd"]
    spec = render(values).one("DaemonSet", "-node-setup")["spec"]["template"]["spec"]

    result, _ = _run_setup_script(render, values, tmp_path, nodesetup.EXIT_RESTART_NEEDED)

    assert spec["hostPID"] is True
    assert result.returncode == 0
    assert (tmp_path / "nsenter.args").read_text().splitlines() == [
        "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "systemctl", "restart", "containerd"
    ]


def test_node_setup_restart_skipped_without_change(render, tmp_path):
    result, _ = _run_setup_script(render, VALUE_SETS["restart-containerd"], tmp_path, nodesetup.EXIT_OK)

    assert result.returncode == 0
    assert not (tmp_path / "nsenter.args").exists()


# --- RuntimeClasses and NOTES -------------------------------------------------------------------


def test_runtime_class_create_false_skips_object(render):
    rendered = render({"runtimeClasses": CUSTOM_RUNTIME_CLASSES})

    assert sorted(obj["metadata"]["name"] for obj in rendered.of_kind("RuntimeClass")) == ["kata-fc", "sandbox-a"]
    assert "sandbox-b" in _policy(rendered).runtime_classes


def test_notes_warnings_come_first(render):
    notes = render({"kata": {"enabled": False}, "nodeSetup": {"enabled": False}}).notes.strip()
    lines = notes.splitlines()

    assert lines[0].startswith("WARNING: kata.enabled is false")
    first_step = notes.index("Next steps:")
    assert notes.rindex("WARNING:") < first_step


def test_notes_verification_commands(render):
    notes = render().notes

    assert "kubectl label namespace kubefence-system pod-security.kubernetes.io/enforce=privileged" in notes
    assert "kubectl -n kubefence-system rollout status deployment/kf-kubefence-webhook" in notes
    assert """--overrides='{"apiVersion":"v1","spec":{"runtimeClassName":"nono-runc"}}'""" in notes
    assert "nono\\.sh/profile" in notes
    assert "kubectl logs kubefence-check" in notes


# --- values.yaml documentation ------------------------------------------------------------


# Kubernetes structures whose fields the comment on the parent key covers.
_KUBERNETES_VALUE_KEYS = {"resources", "nodeSelector", "tolerations", "podAnnotations"}
_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<item>- )?(?P<key>[A-Za-z][A-Za-z0-9_.-]*):")


def _undocumented_keys(text: str) -> list[str]:
    """Return the dotted paths of values.yaml keys without a comment line right above them.

    Keys inside Kubernetes structures (resources, tolerations, ...) are
    covered by their parent's comment, and keys of later list items by the
    same key's comment in the first item.
    """
    missing = []
    stack: list[tuple[int, str]] = []
    documented_paths: set[str] = set()
    previous = ""
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if match:
            indent = len(match["indent"]) + (2 if match["item"] else 0)
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([key for _, key in stack] + [match["key"]])
            inside_kubernetes = any(key in _KUBERNETES_VALUE_KEYS for _, key in stack)
            commented = previous.lstrip().startswith("#")
            # A path seen twice is a key of a later list item.
            if commented:
                documented_paths.add(path)
            elif not inside_kubernetes and path not in documented_paths:
                missing.append(path)
            stack.append((indent, match["key"]))
        if line.strip():
            previous = line
    return missing


def test_values_every_key_commented():
    text = (CHART_ROOT / "values.yaml").read_text()

    assert _undocumented_keys(text) == []


def test_values_comment_check_finds_gap():
    """Shows the check above can fail."""
    text = "# Documented.\nimage:\n  # Documented.\n  tag: x\n  pullPolicy: Always\n"

    assert _undocumented_keys(text) == ["image.pullPolicy"]


# --- command lines against the kubefence CLI ------------------------------------------------


def _kubefence_parser():
    from kubefence import cli

    try:
        return cli.build_parser()
    except ModuleNotFoundError as error:
        pytest.skip(f"a subcommand module of kubefence.cli is not in this tree yet: {error.name}")


@pytest.mark.parametrize(
    ("kind", "suffix", "container"),
    [("Deployment", "-webhook", "webhook"), ("Job", "-certs", "certs"), ("DaemonSet", "-nri", "nri-plugin")],
    ids=["webhook", "certs-ensure", "nri"],
)
def test_chart_command_lines_parse(render, kind, suffix, container):
    """Every command the chart runs parses with the real kubefence CLI (once all subcommands are present)."""
    spec = render().one(kind, suffix)["spec"]["template"]["spec"]
    arguments = _container(spec, container)["args"]
    parser = _kubefence_parser()

    args = parser.parse_args(arguments)

    assert callable(args.func)


# Values that are maps with free keys (label-like); their values must be strings.
_FREE_KEY_MAPS = {"webhook.nodeSelector", "webhook.podAnnotations", "nri.nodeSelector", "nodeSetup.nodeSelector"}


def _object_schemas(schema: dict, path: str = ""):
    """Yield (dotted path, schema) for every object schema in a values schema."""
    if schema.get("type") == "object":
        yield path, schema
        for key, child in schema.get("properties", {}).items():
            yield from _object_schemas(child, f"{path}.{key}" if path else key)
    if schema.get("type") == "array":
        yield from _object_schemas(schema.get("items", {}), f"{path}[]")


def test_values_schema_closes_every_object():
    schema = json.loads((CHART_ROOT / "values.schema.json").read_text())

    for path, node in _object_schemas(schema):
        if path in _FREE_KEY_MAPS:
            assert node["additionalProperties"] == {"type": "string"}, path
        else:
            assert node["additionalProperties"] is False, path
