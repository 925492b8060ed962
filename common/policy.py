"""The cluster-wide sandbox policy that the admission webhook enforces.

The policy is a YAML document with camelCase keys (see `default-policy.yaml`
next to this module for every key and its default). `load_policy` validates
it completely: unknown keys, wrong types and values that break a rule are
errors naming the field and the value. An empty document is the default
policy.
"""

import fnmatch
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import yaml

from kubefence.common import contracts
from kubefence.common.profiles import InvalidProfileError, validate_profile
from kubefence.common.settings import (
    ConfigError,
    check_mapping,
    field_path,
    get_bool,
    get_str,
    get_str_list,
)

# RuntimeClass and namespace names are DNS labels or subdomains.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE_GLOB = re.compile(r"[a-z0-9*?\[\]!-]{1,63}")

ON_INVALID_PROFILE = ("reject", "default")
EPHEMERAL_CONTAINERS = ("inject", "reject")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")

DEFAULT_EXEMPT_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# Profiles built into nono that `nono wrap` accepts. The `*-dev` profiles
# turn on proxy mode, which `wrap` rejects, so they are left out.
DEFAULT_ALLOWED_PROFILES = ("default", "claude-code", "codex", "opencode", "openclaw", "swival")


@dataclass(frozen=True)
class HostPathSource:
    """The /nono volume as a hostPath volume of type Directory."""

    path: str = contracts.DEFAULT_HOST_DIR

    def volume_source(self) -> dict[str, Any]:
        return {"hostPath": {"path": self.path, "type": "Directory"}}


@dataclass(frozen=True)
class ImageSource:
    """The /nono volume as an OCI image volume (Kubernetes 1.31+ `image` volumes)."""

    reference: str
    pull_policy: str = "IfNotPresent"

    def volume_source(self) -> dict[str, Any]:
        return {"image": {"reference": self.reference, "pullPolicy": self.pull_policy}}


@dataclass(frozen=True)
class NamespaceRule:
    """Settings for the namespaces whose name matches `match` (a name or an fnmatch glob)."""

    match: str
    # None: the cluster-wide value applies.
    default_profile: str | None = None
    allowed_profiles: tuple[str, ...] | None = None
    # True: every pod in these namespaces is sandboxed. A pod with no
    # runtimeClassName gets the first opted-in class, and a pod that asks
    # for a class that is not opted in is rejected.
    enforce: bool = False

    def matches(self, namespace: str) -> bool:
        return fnmatch.fnmatchcase(namespace, self.match)


@dataclass(frozen=True)
class Policy:
    """The cluster-wide policy. Every default is the shipped default."""

    # RuntimeClass names that opt a pod into the sandbox, in order of preference.
    runtime_classes: tuple[str, ...] = ("nono-runc", "kata-nono-sandbox")
    # The subset of `runtime_classes` that runs pods in Kata Containers.
    kata_runtime_classes: tuple[str, ...] = ("kata-nono-sandbox",)
    default_profile: str = "default"
    allowed_profiles: tuple[str, ...] = DEFAULT_ALLOWED_PROFILES
    # What an invalid or disallowed `nono.sh/profile` value gets: rejected,
    # or replaced by the default profile (logged and counted).
    on_invalid_profile: Literal["reject", "default"] = "reject"
    # Namespaces the webhook never changes. The webhook adds its own namespace.
    exempt_namespaces: tuple[str, ...] = DEFAULT_EXEMPT_NAMESPACES
    # Per-namespace rules; the first rule that matches a namespace applies.
    namespaces: tuple[NamespaceRule, ...] = ()
    # What an UPDATE of pods/ephemeralcontainers on an opted-in pod gets.
    ephemeral_containers: Literal["inject", "reject"] = "inject"
    nono_volume: HostPathSource | ImageSource = field(default_factory=HostPathSource)
    # The NRI plugin name written into the required-plugins annotation.
    plugin_name: str = contracts.DEFAULT_PLUGIN_NAME

    def rule_for(self, namespace: str) -> NamespaceRule | None:
        for rule in self.namespaces:
            if rule.matches(namespace):
                return rule
        return None

    def profiles_for(self, namespace: str) -> tuple[str, tuple[str, ...]]:
        """Return the default profile and the allowed profiles for `namespace`."""
        rule = self.rule_for(namespace)
        default = self.default_profile
        allowed = self.allowed_profiles
        if rule is not None:
            if rule.allowed_profiles is not None:
                allowed = rule.allowed_profiles
            if rule.default_profile is not None:
                default = rule.default_profile
        return default, allowed


_POLICY_KEYS = (
    "runtimeClasses",
    "kataRuntimeClasses",
    "defaultProfile",
    "allowedProfiles",
    "onInvalidProfile",
    "exemptNamespaces",
    "namespaces",
    "ephemeralContainers",
    "nonoVolume",
    "pluginName",
)
_RULE_KEYS = ("match", "defaultProfile", "allowedProfiles", "enforce")


def _check_dns_names(names: tuple[str, ...], where: str, what: str) -> None:
    for index, name in enumerate(names):
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise ConfigError(
                [f"{field_path(where, index)}: invalid {what} {name!r}: expected a lowercase DNS subdomain name"]
            )


def _check_profiles(names: tuple[str, ...], where: str) -> None:
    for index, name in enumerate(names):
        try:
            validate_profile(name)
        except InvalidProfileError as error:
            raise ConfigError([f"{field_path(where, index)}: {error}"]) from None


def _check_default_in_allowed(default: str, allowed: tuple[str, ...], where: str) -> None:
    try:
        validate_profile(default, allowed)
    except InvalidProfileError as error:
        raise ConfigError([f"{where}: {error}"]) from None


def _read_volume(value: Any, where: str) -> HostPathSource | ImageSource:
    document = check_mapping(value, where, ("hostPath", "image"))
    if len(document) != 1:
        raise ConfigError([f"{where}: expected exactly one of 'hostPath' or 'image', got {dict(document)!r}"])
    if "hostPath" in document:
        at = field_path(where, "hostPath")
        host_path = check_mapping(document["hostPath"], at, ("path", "type"))
        path = get_str(host_path.get("path", contracts.DEFAULT_HOST_DIR), field_path(at, "path"))
        if not path.startswith("/") or "/../" in f"{path}/" or "//" in path:
            raise ConfigError([f"{field_path(at, 'path')}: invalid host path {path!r}: expected a clean absolute path"])
        # Directory (not DirectoryOrCreate) so that a node without the
        # binary fails the pod instead of mounting an empty directory.
        get_str(host_path.get("type", "Directory"), field_path(at, "type"), choices=("Directory",))
        return HostPathSource(path=path)
    at = field_path(where, "image")
    image = check_mapping(document["image"], at, ("reference", "pullPolicy"))
    if "reference" not in image:
        raise ConfigError([f"{field_path(at, 'reference')}: missing; expected an OCI image reference"])
    reference = get_str(image["reference"], field_path(at, "reference"))
    if any(character.isspace() for character in reference):
        raise ConfigError([f"{field_path(at, 'reference')}: invalid image reference {reference!r}"])
    pull_policy = get_str(image.get("pullPolicy", "IfNotPresent"), field_path(at, "pullPolicy"), choices=PULL_POLICIES)
    return ImageSource(reference=reference, pull_policy=pull_policy)


def _read_rule(value: Any, where: str) -> NamespaceRule:
    document = check_mapping(value, where, _RULE_KEYS)
    if "match" not in document:
        raise ConfigError([f"{field_path(where, 'match')}: missing; expected a namespace name or glob"])
    match = get_str(document["match"], field_path(where, "match"))
    if not _NAMESPACE_GLOB.fullmatch(match):
        raise ConfigError([f"{field_path(where, 'match')}: invalid namespace name or glob {match!r}"])
    default = None
    allowed = None
    if "allowedProfiles" in document:
        allowed = get_str_list(document["allowedProfiles"], field_path(where, "allowedProfiles"))
        _check_profiles(allowed, field_path(where, "allowedProfiles"))
    if "defaultProfile" in document:
        default = get_str(document["defaultProfile"], field_path(where, "defaultProfile"))
    enforce = get_bool(document.get("enforce", False), field_path(where, "enforce"))
    return NamespaceRule(match=match, default_profile=default, allowed_profiles=allowed, enforce=enforce)


def parse_policy(document: Any) -> Policy:
    """Build a Policy from a parsed YAML document, or raise ConfigError."""
    data = check_mapping(document, "", _POLICY_KEYS)
    defaults = Policy()
    values: dict[str, Any] = {}

    if "runtimeClasses" in data:
        values["runtime_classes"] = get_str_list(data["runtimeClasses"], "runtimeClasses")
    runtime_classes = values.get("runtime_classes", defaults.runtime_classes)
    _check_dns_names(runtime_classes, "runtimeClasses", "RuntimeClass name")

    if "kataRuntimeClasses" in data:
        values["kata_runtime_classes"] = get_str_list(
            data["kataRuntimeClasses"], "kataRuntimeClasses", allow_empty=True
        )
    kata = values.get("kata_runtime_classes", tuple(c for c in defaults.kata_runtime_classes if c in runtime_classes))
    for index, name in enumerate(kata):
        if name not in runtime_classes:
            raise ConfigError(
                [f"kataRuntimeClasses[{index}]: {name!r} is not listed in runtimeClasses ({', '.join(runtime_classes)})"]
            )
    values["kata_runtime_classes"] = kata

    if "allowedProfiles" in data:
        values["allowed_profiles"] = get_str_list(data["allowedProfiles"], "allowedProfiles")
    allowed = values.get("allowed_profiles", defaults.allowed_profiles)
    _check_profiles(allowed, "allowedProfiles")

    if "defaultProfile" in data:
        values["default_profile"] = get_str(data["defaultProfile"], "defaultProfile")
    _check_default_in_allowed(values.get("default_profile", defaults.default_profile), allowed, "defaultProfile")

    if "onInvalidProfile" in data:
        values["on_invalid_profile"] = get_str(data["onInvalidProfile"], "onInvalidProfile", choices=ON_INVALID_PROFILE)

    if "exemptNamespaces" in data:
        values["exempt_namespaces"] = get_str_list(data["exemptNamespaces"], "exemptNamespaces", allow_empty=True)
        _check_dns_names(values["exempt_namespaces"], "exemptNamespaces", "namespace name")

    if "namespaces" in data:
        if not isinstance(data["namespaces"], list):
            raise ConfigError([f"namespaces: expected a list of rules, got {data['namespaces']!r}"])
        rules = []
        for index, item in enumerate(data["namespaces"]):
            where = field_path("namespaces", index)
            rule = _read_rule(item, where)
            rule_allowed = rule.allowed_profiles if rule.allowed_profiles is not None else allowed
            rule_default = rule.default_profile if rule.default_profile is not None else values.get(
                "default_profile", defaults.default_profile
            )
            _check_default_in_allowed(rule_default, rule_allowed, field_path(where, "defaultProfile"))
            rules.append(rule)
        values["namespaces"] = tuple(rules)

    if "ephemeralContainers" in data:
        values["ephemeral_containers"] = get_str(
            data["ephemeralContainers"], "ephemeralContainers", choices=EPHEMERAL_CONTAINERS
        )

    if "nonoVolume" in data:
        values["nono_volume"] = _read_volume(data["nonoVolume"], "nonoVolume")

    if "pluginName" in data:
        values["plugin_name"] = get_str(data["pluginName"], "pluginName")

    return Policy(**values)


def yaml_error_message(error: yaml.YAMLError) -> str:
    """Return a one-line message for a PyYAML error: its first line and, when known, the line and column.

    PyYAML's own message spans several lines (context, the quoted source
    line and a caret), which does not fit in a log field or a CLI error.
    """
    if isinstance(error, yaml.reader.ReaderError) and error.encoding:
        return f"not {error.encoding.upper()} text (invalid byte at offset {error.position})"
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or (str(error).splitlines() or [type(error).__name__])[0]
    return f"invalid YAML{where}: {problem}"


def load_policy(text: str | bytes, source: str = "") -> Policy:
    """Parse and validate a YAML policy document. Errors carry `source` in the message."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([yaml_error_message(error)], source) from None
    try:
        return parse_policy(document)
    except ConfigError as error:
        raise ConfigError(error.problems, source) from None


def default_policy_text() -> str:
    """Return the shipped default policy as YAML, with a comment on every key."""
    return resources.files("kubefence.common").joinpath("default-policy.yaml").read_text()


DEFAULT_POLICY = Policy()
