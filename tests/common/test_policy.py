import pytest

from kubefence.common.policy import (
    DEFAULT_POLICY,
    HostPathSource,
    ImageSource,
    default_policy_text,
    load_policy,
)
from kubefence.common.settings import ConfigError


def test_default_policy_file_matches_defaults():
    assert load_policy(default_policy_text()) == DEFAULT_POLICY


def test_empty_document_is_default_policy():
    assert load_policy("") == DEFAULT_POLICY
    assert load_policy("{}") == DEFAULT_POLICY


def test_default_policy_values():
    assert DEFAULT_POLICY.runtime_classes == ("nono-runc", "kata-nono-sandbox")
    assert DEFAULT_POLICY.kata_runtime_classes == ("kata-nono-sandbox",)
    assert DEFAULT_POLICY.default_profile == "default"
    assert DEFAULT_POLICY.on_invalid_profile == "reject"
    assert DEFAULT_POLICY.exempt_namespaces == ("kube-system", "kube-public", "kube-node-lease")
    assert DEFAULT_POLICY.nono_volume == HostPathSource("/opt/nono-nri")
    assert DEFAULT_POLICY.nono_volume.volume_source() == {"hostPath": {"path": "/opt/nono-nri", "type": "Directory"}}


def test_policy_namespace_rules_first_match_wins():
    policy = load_policy(
        """
namespaces:
  - match: "agents-*"
    defaultProfile: swival
    allowedProfiles: [swival]
    enforce: true
  - match: agents-special
    defaultProfile: codex
"""
    )
    assert policy.profiles_for("agents-special") == ("swival", ("swival",))
    assert policy.rule_for("agents-special").enforce is True
    assert policy.rule_for("web") is None
    assert policy.profiles_for("web") == ("default", DEFAULT_POLICY.allowed_profiles)


def test_policy_image_volume():
    policy = load_policy("nonoVolume: {image: {reference: 'registry.example/nono:1.0', pullPolicy: Always}}")
    assert policy.nono_volume == ImageSource("registry.example/nono:1.0", "Always")
    assert policy.nono_volume.volume_source() == {
        "image": {"reference": "registry.example/nono:1.0", "pullPolicy": "Always"}
    }


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param("runtimeClass: [a]", "runtimeClass: unknown key 'runtimeClass'", id="unknown-key"),
        pytest.param("- a", "expected a mapping", id="not-mapping"),
        pytest.param("runtimeClasses: []", "runtimeClasses: must not be empty", id="no-classes"),
        pytest.param("runtimeClasses: [Nono_Runc]", "runtimeClasses[0]: invalid RuntimeClass name 'Nono_Runc'", id="bad-class"),
        pytest.param("kataRuntimeClasses: [kata]", "kataRuntimeClasses[0]: 'kata' is not listed", id="kata-not-opted-in"),
        pytest.param("allowedProfiles: [default, '--allow-all']", "allowedProfiles[1]: invalid nono profile '--allow-all'", id="bad-allowed"),
        pytest.param("allowedProfiles: [default, default]", "allowedProfiles[1]: duplicate value 'default'", id="duplicate"),
        pytest.param("defaultProfile: swival\nallowedProfiles: [default]", "defaultProfile: nono profile 'swival' is not allowed", id="default-not-allowed"),
        pytest.param("onInvalidProfile: allow", "onInvalidProfile: invalid value 'allow'", id="bad-fallback"),
        pytest.param("exemptNamespaces: kube-system", "exemptNamespaces: expected a list of strings, got 'kube-system'", id="string-not-list"),
        pytest.param("namespaces: [{defaultProfile: default}]", "namespaces[0].match: missing", id="rule-without-match"),
        pytest.param("namespaces: [{match: a, enforce: 'yes'}]", "namespaces[0].enforce: expected true or false, got 'yes'", id="enforce-not-bool"),
        pytest.param("namespaces: [{match: a, allowedProfiles: [x]}]", "namespaces[0].defaultProfile: nono profile 'default' is not allowed", id="rule-default-not-allowed"),
        pytest.param("namespaces: [{match: 'A/B'}]", "namespaces[0].match: invalid namespace name or glob 'A/B'", id="bad-glob"),
        pytest.param("ephemeralContainers: allow", "ephemeralContainers: invalid value 'allow'", id="bad-ephemeral"),
        pytest.param("nonoVolume: {}", "nonoVolume: expected exactly one of", id="empty-volume"),
        pytest.param("nonoVolume: {hostPath: {path: /a}, image: {reference: x}}", "nonoVolume: expected exactly one of", id="two-sources"),
        pytest.param("nonoVolume: {hostPath: {path: '/opt/../etc'}}", "nonoVolume.hostPath.path: invalid host path '/opt/../etc'", id="dotdot-host-path"),
        pytest.param("nonoVolume: {hostPath: {type: DirectoryOrCreate}}", "nonoVolume.hostPath.type: invalid value 'DirectoryOrCreate'", id="host-path-type"),
        pytest.param("nonoVolume: {image: {pullPolicy: Always}}", "nonoVolume.image.reference: missing", id="image-without-reference"),
        pytest.param("pluginName: ''", "pluginName: must not be empty", id="empty-plugin-name"),
        pytest.param("a: [", "invalid YAML", id="bad-yaml"),
    ],
)
def test_policy_rejects_invalid(document, expected):
    with pytest.raises(ConfigError) as caught:
        load_policy(document, "policy.yaml")
    assert str(caught.value).startswith("policy.yaml: ")
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("a: [\n  b: }\n", "policy.yaml: invalid YAML at line 2, column 6: expected the node content, but found '}'"),
        ("a: 'open\n", "policy.yaml: invalid YAML at line 2, column 1: found unexpected end of stream"),
        (b"a: \x80", "policy.yaml: not UTF-8 text (invalid byte at offset 3)"),
    ],
    ids=["flow", "quote", "not-utf8"],
)
def test_load_policy_yaml_error_one_line(document, expected):
    with pytest.raises(ConfigError) as caught:
        load_policy(document, "policy.yaml")
    assert str(caught.value) == expected
