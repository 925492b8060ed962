"""The admission decision: which pods get the nono sandbox, and the JSON Patch that sets it up.

Everything here is a pure function over plain data (the AdmissionReview
`request` as parsed JSON, and the Policy): no I/O, no logging, no clock.
The server and `kubefence review` call `decide`, then log and respond.

For a CREATE of an opted-in pod the patch

* sets the `nono.sh/profile` annotation to the resolved profile,
* sets `required-plugins.noderesource.dev` so that a runtime with the NRI
  default validator refuses the pod's containers while the kubefence NRI
  plugin is not registered,
* adds the `kubefence-nono` volume (the policy's trusted source) and a
  read-only `/nono` mount in every container and init container.

The operations are built from the few fields they touch, never by diffing
the pod, and they are idempotent: a pod that already carries the injection
(recognised by volume source, mount path and read-only flag) gets no
operation. Pods that try to supply their own `/nono`, or to reach the
trusted volume in another way, are denied.

Known limitations: mount paths are normalised lexically (`//`, `.`, `..`),
because symlinks inside the image or on the host are invisible here. The NRI
plugin re-checks the final mount on the node.
"""

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from kubefence.common import contracts
from kubefence.common.environment import env_name_problems
from kubefence.common.policy import HostPathSource, ImageSource, Policy
from kubefence.common.profiles import InvalidProfileError, validate_profile
from kubefence.webhook.errors import ReviewError

ADMISSION_API_VERSION = "admission.k8s.io/v1"

# The pod container lists, in the order their mounts are patched.
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

# Upper bounds of the webhook's own on the pod lists that the decision walks
# and patches. Kubernetes sets no such limits; these keep one review from
# building a patch of many megabytes, and are far above what real pods use.
MAX_CONTAINERS_PER_LIST = 1000
MAX_VOLUMES = 1000
MAX_MOUNTS_PER_CONTAINER = 1000


class Reason(StrEnum):
    """Why `decide` reached its decision: a bounded set, used as a metric label."""

    # skip
    NOT_A_POD = "not-a-pod"
    OPERATION_NOT_HANDLED = "operation-not-handled"
    EXEMPT_NAMESPACE = "exempt-namespace"
    NOT_OPTED_IN = "not-opted-in"
    SANDBOX_UNCHANGED = "sandbox-unchanged"
    # inject
    INJECTED = "injected"
    ALREADY_INJECTED = "already-injected"
    PROFILE_FALLBACK = "profile-fallback"
    EPHEMERAL_CONTAINERS = "ephemeral-containers"
    # reject
    INVALID_PROFILE = "invalid-profile"
    RUNTIME_CLASS_NOT_OPTED_IN = "runtime-class-not-opted-in"
    KATA_ANNOTATION = "kata-annotation"
    INVALID_REQUIRED_PLUGINS = "invalid-required-plugins"
    RESERVED_MOUNT_PATH = "reserved-mount-path"
    RESERVED_DEVICE_PATH = "reserved-device-path"
    RESERVED_VOLUME_NAME = "reserved-volume-name"
    TRUSTED_VOLUME_MISUSE = "trusted-volume-misuse"
    TRUSTED_SOURCE_MISUSE = "trusted-source-misuse"
    EPHEMERAL_CONTAINERS_REJECTED = "ephemeral-containers-rejected"
    MISSING_NONO_VOLUME = "missing-nono-volume"
    INVALID_CONTAINER_NAME = "invalid-container-name"
    TOO_MANY_ITEMS = "too-many-items"
    FORBIDDEN_ENVIRONMENT = "forbidden-environment"


@dataclass(frozen=True)
class AdmissionDecision:
    """The outcome of one admission request."""

    allowed: bool
    # "inject", "skip" or "reject".
    decision: str
    reason: str
    # RFC 6902 operations against `request.object`; empty when nothing changes.
    patch: list[dict[str, Any]] = field(default_factory=list)
    # Why the pod was denied, as the user sees it in kubectl; empty when allowed.
    message: str = ""
    # The resolved nono profile; empty when the pod is not sandboxed.
    profile: str = ""
    # The pod's RuntimeClass after the patch; empty when it has none.
    runtime_class: str = ""
    namespace: str = ""
    # The pod name, or its generateName prefix when the name is not set yet.
    pod: str = ""
    # Sent back as AdmissionReview warnings (kubectl prints them).
    warnings: tuple[str, ...] = ()
    # True when an invalid profile was replaced by the default (policy
    # onInvalidProfile: default).
    profile_fallback: bool = False


class _Denied(Exception):
    """Internal: a sandbox rule the pod breaks. `decide` turns it into a denial."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


# ---------------------------------------------------------------------------
# Reading the request


def _mapping(value: Any, where: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ReviewError(f"invalid {where}: expected an object, got {short_repr(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReviewError(f"invalid {where}: expected a list, got {short_repr(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"invalid {where}: expected a string, got {short_repr(value)}")
    return value


def short_repr(value: Any) -> str:
    """Return repr(value), cut to 80 characters for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _pod_name(metadata: Mapping[str, Any]) -> str:
    name = _string(metadata.get("name"), "object.metadata.name")
    return name or _string(metadata.get("generateName"), "object.metadata.generateName")


# ---------------------------------------------------------------------------
# Paths and the trusted volume


def normalize_path(path: str) -> str:
    """Return `path` as an absolute path without `//`, `.` or `..` (lexically, like the kernel would without symlinks).

    A relative path is taken from `/`, because the runtime resolves a mount
    destination inside the container's root.
    """
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _is_at_or_below(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _overlaps(path: str, root: str) -> bool:
    """True when `path` is `root`, below it, or one of its ancestors."""
    return _is_at_or_below(path, root) or _is_at_or_below(root, path) or path == "/"


def _volume_source(volume: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in volume.items() if key != "name"}


def _injected_mount(volume_name: str) -> dict[str, Any]:
    return {"name": volume_name, "mountPath": contracts.NONO_MOUNT_PATH, "readOnly": True}


def _is_injected_mount(mount: Mapping[str, Any], trusted_names: set[str]) -> bool:
    """True for a mount exactly like the injected one: a trusted volume, read-only at /nono, whole volume."""
    return (
        mount.get("name") in trusted_names
        and mount.get("mountPath") == contracts.NONO_MOUNT_PATH
        and mount.get("readOnly") is True
        and not mount.get("subPath")
        and not mount.get("subPathExpr")
        and mount.get("mountPropagation") in (None, "None")
    )


def escape_pointer_token(token: str) -> str:
    """Escape one JSON Pointer reference token (RFC 6901: `~` as `~0`, `/` as `~1`)."""
    return token.replace("~", "~0").replace("/", "~1")


@dataclass
class _PodView:
    """The fields of a pod that the decision reads, type-checked once."""

    # False when the object has no metadata member at all.
    has_metadata: bool
    metadata: Mapping[str, Any]
    annotations: Mapping[str, Any] | None
    spec: Mapping[str, Any]
    volumes: list[Any] | None
    containers: dict[str, list[Any] | None]
    # The first structural rule the pod breaks (a list above its limit, a
    # container without a name). Opted-in pods are denied with it before any
    # other rule runs, and the other fields of an offending list are unchecked.
    problem: _Denied | None = None


def _too_many(where: str, count: int, limit: int) -> _Denied:
    return _Denied(
        Reason.TOO_MANY_ITEMS,
        f"{where} has {count} entries, above the kubefence webhook's limit of {limit} "
        f"(a limit of this webhook, not of Kubernetes)",
    )


def _read_pod(pod: Mapping[str, Any]) -> _PodView:
    metadata = _mapping(pod.get("metadata"), "object.metadata")
    annotations = metadata.get("annotations")
    if annotations is not None:
        annotations = _mapping(annotations, "object.metadata.annotations")
    spec = _mapping(pod.get("spec"), "object.spec")
    problems: list[_Denied] = []
    volumes = spec.get("volumes")
    if volumes is not None:
        volumes = _list(volumes, "object.spec.volumes")
        if len(volumes) > MAX_VOLUMES:
            problems.append(_too_many("object.spec.volumes", len(volumes), MAX_VOLUMES))
        else:
            for index, volume in enumerate(volumes):
                _mapping(volume, f"object.spec.volumes[{index}]", required=True)
                _string(volume.get("name"), f"object.spec.volumes[{index}].name")
    containers: dict[str, list[Any] | None] = {}
    for key in CONTAINER_LISTS:
        items = spec.get(key)
        containers[key] = None
        if items is None:
            continue
        items = containers[key] = _list(items, f"object.spec.{key}")
        if len(items) > MAX_CONTAINERS_PER_LIST:
            problems.append(_too_many(f"object.spec.{key}", len(items), MAX_CONTAINERS_PER_LIST))
            continue
        for index, container in enumerate(items):
            problem = _read_container(container, f"object.spec.{key}[{index}]")
            if problem is not None:
                problems.append(problem)
    return _PodView(
        pod.get("metadata") is not None, metadata, annotations, spec, volumes, containers,
        problems[0] if problems else None,
    )


def _read_container(container: Any, where: str) -> _Denied | None:
    """Type-check the fields of one container that the decision reads; return the structural rule it breaks."""
    _mapping(container, where, required=True)
    name = container.get("name")
    if not isinstance(name, str) or not name:
        return _Denied(
            Reason.INVALID_CONTAINER_NAME,
            f"{where}: invalid name {short_repr(name)}; expected a non-empty string",
        )
    for mounts_key, path_key in (("volumeMounts", "mountPath"), ("volumeDevices", "devicePath")):
        mounts = _list(container.get(mounts_key), f"{where}.{mounts_key}")
        if len(mounts) > MAX_MOUNTS_PER_CONTAINER:
            return _too_many(f"{where}.{mounts_key}", len(mounts), MAX_MOUNTS_PER_CONTAINER)
        for number, mount in enumerate(mounts):
            at = f"{where}.{mounts_key}[{number}]"
            _mapping(mount, at, required=True)
            _string(mount.get("name"), f"{at}.name")
            _string(mount.get(path_key), f"{at}.{path_key}")
    for number, variable in enumerate(_list(container.get("env"), f"{where}.env")):
        # A pod may carry thousands of env entries: build the location only
        # for an entry that fails.
        if type(variable) is dict and isinstance(variable.get("name"), (str, type(None))):
            continue
        at = f"{where}.env[{number}]"
        _mapping(variable, at, required=True)
        _string(variable.get("name"), f"{at}.name")
    return None


# ---------------------------------------------------------------------------
# Sandbox rules


def _trusted_volume_names(pod: _PodView, policy: Policy) -> set[str]:
    """Check every pod volume against the trusted source; return the names of the trusted ones.

    Raises _Denied for a volume named like the injected one with another
    source, and for any other volume that reaches the trusted host directory
    or image under a different definition.
    """
    trusted_source = policy.nono_volume.volume_source()
    names: set[str] = set()
    for volume in pod.volumes or ():
        name = volume.get("name")
        source = _volume_source(volume)
        if source == trusted_source:
            names.add(name)
            continue
        if name == contracts.NONO_VOLUME_NAME:
            raise _Denied(
                Reason.RESERVED_VOLUME_NAME,
                f"volume {name!r} is reserved for the nono sandbox binary and must have the source "
                f"{trusted_source!r}; got {source!r}",
            )
        _check_trusted_source_reuse(volume, policy)
    return names


def _check_trusted_source_reuse(volume: Mapping[str, Any], policy: Policy) -> None:
    name = volume.get("name")
    trusted = policy.nono_volume
    if isinstance(trusted, HostPathSource) and isinstance(volume.get("hostPath"), Mapping):
        path = volume["hostPath"].get("path")
        if isinstance(path, str) and _overlaps(normalize_path(path), normalize_path(trusted.path)):
            raise _Denied(
                Reason.TRUSTED_SOURCE_MISUSE,
                f"volume {name!r}: hostPath {path!r} overlaps the nono host directory {trusted.path!r}; "
                f"only the injected volume may use it (hostPath {trusted.path!r}, type Directory)",
            )
    if isinstance(trusted, ImageSource) and isinstance(volume.get("image"), Mapping):
        if volume["image"].get("reference") == trusted.reference:
            raise _Denied(
                Reason.TRUSTED_SOURCE_MISUSE,
                f"volume {name!r}: image {trusted.reference!r} is the nono image; only the injected "
                f"volume may use it (pullPolicy {trusted.pull_policy!r})",
            )


def _check_container_mounts(pod: _PodView, trusted_names: set[str], lists: tuple[str, ...]) -> None:
    """Deny any mount or device that could put something else at /nono or write to the trusted volume."""
    root = contracts.NONO_MOUNT_PATH
    for key in lists:
        for container in pod.containers.get(key) or ():
            container_name = container.get("name")
            for mount in container.get("volumeMounts") or ():
                volume_name = mount.get("name")
                mount_path = mount.get("mountPath")
                if volume_name in trusted_names:
                    if not _is_injected_mount(mount, trusted_names):
                        raise _Denied(
                            Reason.TRUSTED_VOLUME_MISUSE,
                            f"{key} {container_name!r}: volume {volume_name!r} holds the nono sandbox binary "
                            f"and may only be mounted read-only at {root!r} without subPath, subPathExpr or "
                            f"mount propagation; got {dict(mount)!r}",
                        )
                    continue
                if not mount_path:
                    continue  # Kubernetes validation rejects a mount without a path.
                normalized = normalize_path(mount_path)
                if _is_at_or_below(normalized, root) or normalized == "/":
                    raise _Denied(
                        Reason.RESERVED_MOUNT_PATH,
                        f"{key} {container_name!r}: mountPath {mount_path!r} of volume {volume_name!r} "
                        f"is at, below or above {root!r}, which is reserved for the nono sandbox binary",
                    )
            for device in container.get("volumeDevices") or ():
                device_path = device.get("devicePath")
                if isinstance(device_path, str) and _is_at_or_below(normalize_path(device_path), root):
                    raise _Denied(
                        Reason.RESERVED_DEVICE_PATH,
                        f"{key} {container_name!r}: devicePath {device_path!r} is at or below {root!r}, "
                        f"which is reserved for the nono sandbox binary",
                    )


def _check_container_env(pod: _PodView) -> None:
    """Deny literal `env` names that the NRI plugin rejects on the node.

    Only `env` is visible here: names that `envFrom` brings in from a
    ConfigMap or Secret are checked by the plugin alone.
    """
    for key in CONTAINER_LISTS:
        for container in pod.containers.get(key) or ():
            names = [variable.get("name") or "" for variable in container.get("env") or ()]
            problems = env_name_problems(names)
            if problems:
                raise _Denied(
                    Reason.FORBIDDEN_ENVIRONMENT,
                    f"{key} {container.get('name')!r}: {'; '.join(problems)}",
                )


def _check_kata_annotations(annotations: Mapping[str, Any]) -> None:
    keys = sorted(key for key in annotations if str(key).startswith(contracts.KATA_ANNOTATION_PREFIX))
    if keys:
        raise _Denied(
            Reason.KATA_ANNOTATION,
            f"annotations {', '.join(repr(key) for key in keys)} are not allowed on Kata sandbox pods: "
            f"{contracts.KATA_ANNOTATION_PREFIX}* annotations configure the guest VM and its agent policy",
        )


def _required_plugins_value(annotations: Mapping[str, Any], plugin_name: str) -> str | None:
    """Return the required-plugins value to set, or None when the current one already names the plugin."""
    current = annotations.get(contracts.REQUIRED_PLUGINS_ANNOTATION)
    if current is None:
        return orjson.dumps([plugin_name]).decode()
    try:
        plugins = orjson.loads(current) if isinstance(current, str) else None
    except orjson.JSONDecodeError:
        plugins = None
    if not isinstance(plugins, list) or not all(isinstance(item, str) for item in plugins):
        raise _Denied(
            Reason.INVALID_REQUIRED_PLUGINS,
            f"annotation {contracts.REQUIRED_PLUGINS_ANNOTATION!r}: invalid value {short_repr(current)}; "
            f"expected a JSON list of NRI plugin names such as {orjson.dumps([plugin_name]).decode()!r}",
        )
    if plugin_name in plugins:
        return None
    return orjson.dumps([*plugins, plugin_name]).decode()


def _resolve_profile(
    annotations: Mapping[str, Any], namespace: str, policy: Policy
) -> tuple[str, str | None]:
    """Return the profile and, when it replaced an invalid value, a warning for the user."""
    default, allowed = policy.profiles_for(namespace)
    if contracts.PROFILE_ANNOTATION not in annotations:
        return default, None
    value = annotations[contracts.PROFILE_ANNOTATION]
    try:
        return validate_profile(value, allowed), None
    except InvalidProfileError as error:
        if policy.on_invalid_profile == "default":
            return default, f"annotation {contracts.PROFILE_ANNOTATION!r}: {error}; using the default profile {default!r}"
        raise _Denied(Reason.INVALID_PROFILE, f"annotation {contracts.PROFILE_ANNOTATION!r}: {error}") from None


# ---------------------------------------------------------------------------
# Patch operations


def _annotation_ops(pod: _PodView, values: dict[str, str]) -> list[dict[str, Any]]:
    if not values:
        return []
    if pod.annotations is None:
        # One operation that creates the map: never an index into a missing object.
        if not pod.has_metadata:
            return [{"op": "add", "path": "/metadata", "value": {"annotations": values}}]
        return [{"op": "add", "path": "/metadata/annotations", "value": values}]
    ops = []
    for key, value in values.items():
        op = "replace" if key in pod.annotations else "add"
        ops.append({"op": op, "path": f"/metadata/annotations/{escape_pointer_token(key)}", "value": value})
    return ops


def _mount_ops(pod: _PodView, lists: tuple[str, ...], trusted_names: set[str], volume_name: str) -> list[dict[str, Any]]:
    ops = []
    for key in lists:
        for index, container in enumerate(pod.containers.get(key) or ()):
            mounts = container.get("volumeMounts")
            if any(_is_injected_mount(existing, trusted_names) for existing in mounts or ()):
                continue
            # A new dict per operation, so that no two places in a patched pod share one object.
            mount = _injected_mount(volume_name)
            if mounts is None:
                ops.append({"op": "add", "path": f"/spec/{key}/{index}/volumeMounts", "value": [mount]})
            else:
                ops.append({"op": "add", "path": f"/spec/{key}/{index}/volumeMounts/-", "value": mount})
    return ops


# ---------------------------------------------------------------------------
# The decision


def decide(request: Mapping[str, Any], policy: Policy, own_namespace: str = "") -> AdmissionDecision:
    """Decide on one AdmissionReview `request` (the parsed `request` member) under `policy`.

    `own_namespace` is the webhook's namespace, always exempt. Raises
    ReviewError when the request lacks what a decision needs (the object of
    a CREATE or UPDATE) or has a field of the wrong type.
    """
    request = _mapping(request, "request", required=True)
    operation = _string(request.get("operation"), "request.operation")
    sub_resource = _string(request.get("subResource"), "request.subResource")
    kind = _mapping(request.get("kind"), "request.kind")
    namespace = _string(request.get("namespace"), "request.namespace")

    def skip(reason: Reason, **extra: Any) -> AdmissionDecision:
        return AdmissionDecision(allowed=True, decision="skip", reason=reason, namespace=namespace, **extra)

    if kind and (kind.get("group", "") != "" or kind.get("kind") != "Pod"):
        return skip(Reason.NOT_A_POD)
    if operation not in ("CREATE", "UPDATE"):
        return skip(Reason.OPERATION_NOT_HANDLED)
    if "object" not in request or request["object"] is None:
        raise ReviewError(f"missing request.object for a {operation} request")
    pod_object = _mapping(request["object"], "request.object", required=True)
    pod = _read_pod(pod_object)
    namespace = namespace or _string(pod.metadata.get("namespace"), "object.metadata.namespace")
    pod_name = _pod_name(pod.metadata)
    runtime_class = _string(pod.spec.get("runtimeClassName"), "object.spec.runtimeClassName")

    def skip_pod(reason: Reason) -> AdmissionDecision:
        return skip(reason, pod=pod_name, runtime_class=runtime_class)

    if operation == "CREATE" and sub_resource:
        return skip_pod(Reason.OPERATION_NOT_HANDLED)
    if operation == "UPDATE" and sub_resource not in ("", "ephemeralcontainers"):
        return skip_pod(Reason.OPERATION_NOT_HANDLED)
    if namespace in policy.exempt_namespaces or (own_namespace and namespace == own_namespace):
        return skip_pod(Reason.EXEMPT_NAMESPACE)

    if operation == "UPDATE" and sub_resource == "ephemeralcontainers":
        return _decide_ephemeral(request, pod, policy, namespace, pod_name, runtime_class)
    if operation == "UPDATE":
        return _decide_update(request, pod, policy, namespace, pod_name, runtime_class)
    return _decide_create(pod, policy, namespace, pod_name, runtime_class)


def _decide_create(pod: _PodView, policy: Policy, namespace: str, pod_name: str, runtime_class: str) -> AdmissionDecision:
    ops: list[dict[str, Any]] = []
    rule = policy.rule_for(namespace)

    def deny(reason: Reason, message: str, profile: str = "") -> AdmissionDecision:
        return AdmissionDecision(
            allowed=False, decision="reject", reason=reason, message=message,
            namespace=namespace, pod=pod_name, runtime_class=runtime_class, profile=profile,
        )

    # Opt-in: an opted-in RuntimeClass, or a namespace rule that enforces one.
    if runtime_class not in policy.runtime_classes:
        if rule is None or not rule.enforce:
            return AdmissionDecision(
                allowed=True, decision="skip", reason=Reason.NOT_OPTED_IN,
                namespace=namespace, pod=pod_name, runtime_class=runtime_class,
            )
        if runtime_class:
            return deny(
                Reason.RUNTIME_CLASS_NOT_OPTED_IN,
                f"namespace {namespace!r} requires the nono sandbox: runtimeClassName {runtime_class!r} is not "
                f"allowed here; use one of {', '.join(policy.runtime_classes)} or leave it unset",
            )
        runtime_class = policy.runtime_classes[0]
        ops.append({"op": "add", "path": "/spec/runtimeClassName", "value": runtime_class})
    if pod.problem is not None:
        return deny(pod.problem.reason, pod.problem.message)

    annotations = pod.annotations or {}
    try:
        # Profile: annotation, else the namespace or cluster default.
        profile, warning = _resolve_profile(annotations, namespace, policy)
        if runtime_class in policy.kata_runtime_classes:
            _check_kata_annotations(annotations)
        required_plugins = _required_plugins_value(annotations, policy.plugin_name)
        # /nono: only the trusted volume, only read-only at /nono.
        trusted_names = _trusted_volume_names(pod, policy)
        trusted_names.add(contracts.NONO_VOLUME_NAME)
        _check_container_mounts(pod, trusted_names, CONTAINER_LISTS)
        _check_container_env(pod)
    except _Denied as denied:
        return deny(denied.reason, denied.message)

    # The volume and the mounts, unless the pod already has them.
    volume_ops: list[dict[str, Any]] = []
    volume_name = _existing_trusted_volume(pod, policy)
    first_injection = volume_name is None
    if first_injection:
        volume_name = contracts.NONO_VOLUME_NAME
        volume = {"name": volume_name, **policy.nono_volume.volume_source()}
        if pod.volumes is None:
            volume_ops.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
        else:
            volume_ops.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
    volume_ops += _mount_ops(pod, ("initContainers", "containers"), trusted_names, volume_name)

    # The annotations. The first injection (the one that adds the volume)
    # always states the profile, so that patch alone shows what the pod
    # runs with. Later patches only correct a changed profile.
    annotation_values: dict[str, str] = {}
    if first_injection or annotations.get(contracts.PROFILE_ANNOTATION) != profile:
        annotation_values[contracts.PROFILE_ANNOTATION] = profile
    # The marker goes in with any other change. A pod that already carries
    # the whole injection gets no operations, marker or not, so a
    # reinvocation never changes an injected pod.
    # NOTE: a pod written with the whole injection by hand and without the
    # marker therefore keeps running without it. The NRI plugin still wraps
    # its containers whenever it is registered on the node.
    if required_plugins is not None and (ops or volume_ops or annotation_values):
        annotation_values[contracts.REQUIRED_PLUGINS_ANNOTATION] = required_plugins
    ops += _annotation_ops(pod, annotation_values)
    ops += volume_ops

    if warning is not None:
        reason = Reason.PROFILE_FALLBACK
    elif not ops:
        reason = Reason.ALREADY_INJECTED
    else:
        reason = Reason.INJECTED
    return AdmissionDecision(
        allowed=True, decision="inject", reason=reason, patch=ops, profile=profile,
        runtime_class=runtime_class, namespace=namespace, pod=pod_name,
        warnings=(warning,) if warning else (), profile_fallback=warning is not None,
    )


def _existing_trusted_volume(pod: _PodView, policy: Policy) -> str | None:
    trusted_source = policy.nono_volume.volume_source()
    for volume in pod.volumes or ():
        if _volume_source(volume) == trusted_source:
            return volume.get("name")
    return None


def _decide_update(
    request: Mapping[str, Any], pod: _PodView, policy: Policy, namespace: str, pod_name: str, runtime_class: str
) -> AdmissionDecision:
    """UPDATE of a pod other than its ephemeral containers: always passes unchanged.

    Pod annotations stay mutable, and the kubelet builds a recreated pod
    sandbox from the current ones. The Helm chart therefore guards
    `nono.sh/profile`, the required-plugins marker and Kata annotations of
    opted-in pods with a ValidatingAdmissionPolicy, which the API server
    evaluates for every pod UPDATE without calling this webhook.
    """
    common = {"namespace": namespace, "pod": pod_name, "runtime_class": runtime_class}
    if runtime_class not in policy.runtime_classes:
        return AdmissionDecision(allowed=True, decision="skip", reason=Reason.NOT_OPTED_IN, **common)
    profile = (pod.annotations or {}).get(contracts.PROFILE_ANNOTATION, "")
    common["profile"] = profile if isinstance(profile, str) else ""
    return AdmissionDecision(allowed=True, decision="skip", reason=Reason.SANDBOX_UNCHANGED, **common)


def _decide_ephemeral(
    request: Mapping[str, Any], pod: _PodView, policy: Policy, namespace: str, pod_name: str, runtime_class: str
) -> AdmissionDecision:
    """UPDATE of pods/ephemeralcontainers: mount /nono into the new ephemeral containers, or deny them."""
    common = {"namespace": namespace, "pod": pod_name, "runtime_class": runtime_class}
    if runtime_class not in policy.runtime_classes:
        return AdmissionDecision(allowed=True, decision="skip", reason=Reason.NOT_OPTED_IN, **common)

    annotations = pod.annotations or {}
    profile = annotations.get(contracts.PROFILE_ANNOTATION, "")
    profile = profile if isinstance(profile, str) else ""
    common["profile"] = profile

    def deny(reason: Reason, message: str) -> AdmissionDecision:
        return AdmissionDecision(allowed=False, decision="reject", reason=reason, message=message, **common)

    if pod.problem is not None:
        return deny(pod.problem.reason, pod.problem.message)
    old_names = _old_ephemeral_names(request)
    new_names = [container.get("name") for container in pod.containers.get("ephemeralContainers") or ()]
    added = [name for name in new_names if name not in old_names]

    if added and policy.ephemeral_containers == "reject":
        return deny(
            Reason.EPHEMERAL_CONTAINERS_REJECTED,
            f"ephemeral containers {', '.join(repr(name) for name in added)} are not allowed in nono sandbox "
            f"pods (policy ephemeralContainers: reject)",
        )
    try:
        trusted_names = _trusted_volume_names(pod, policy)
        volume_name = _existing_trusted_volume(pod, policy)
        trusted_names.add(contracts.NONO_VOLUME_NAME)
        _check_container_mounts(pod, trusted_names, CONTAINER_LISTS)
        _check_container_env(pod)
    except _Denied as denied:
        return deny(denied.reason, denied.message)

    ops = _mount_ops(pod, ("ephemeralContainers",), trusted_names, volume_name or contracts.NONO_VOLUME_NAME)
    if ops and volume_name is None:
        # The volumes of a running pod cannot change, so the mount would point nowhere.
        return deny(
            Reason.MISSING_NONO_VOLUME,
            f"pod {pod_name!r} has no /nono volume from {policy.nono_volume.volume_source()!r}, so its "
            f"ephemeral containers cannot run under nono; recreate the pod so that the webhook injects it",
        )
    reason = Reason.EPHEMERAL_CONTAINERS if ops else Reason.ALREADY_INJECTED
    return AdmissionDecision(allowed=True, decision="inject", reason=reason, patch=ops, **common)


def _old_ephemeral_names(request: Mapping[str, Any]) -> set[str]:
    old_pod = _mapping(request.get("oldObject"), "request.oldObject")
    old_spec = _mapping(old_pod.get("spec"), "request.oldObject.spec")
    where = "request.oldObject.spec.ephemeralContainers"
    names = set()
    for index, container in enumerate(_list(old_spec.get("ephemeralContainers"), where)):
        container = _mapping(container, f"{where}[{index}]", required=True)
        names.add(_string(container.get("name"), f"{where}[{index}].name"))
    return names


# ---------------------------------------------------------------------------
# The response


def build_response(uid: str, decision: AdmissionDecision) -> bytes:
    """Serialise the AdmissionReview v1 response for `decision`.

    `patchType` and the base64 `patch` appear only when there are
    operations; a denial carries its message in `status`.
    """
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(decision.patch)).decode("ascii")
    if not decision.allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": decision.message}
    if decision.warnings:
        response["warnings"] = list(decision.warnings)
    return orjson.dumps({"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response})
