"""The I/O shell of `kubefence certs ensure`: read, plan, write with optimistic concurrency.

One attempt reads the CA Secret, the serving Secret and the webhook
configuration, calls the pure `plan`, generates the keys the plan requests,
and writes in this order:

1. the CA Secret (the new bundle and any new CA),
2. the caBundle of every webhook of the configuration,
3. the serving Secret.

So the webhook pods can only see a serving certificate after the bundle
that trusts it has reached the API. Every write carries the resourceVersion
that was read; a 409 Conflict (or AlreadyExists on create) means someone
else wrote in between, so the attempt starts over from a fresh read, at most
`attempts` times. The steps already written are read back on the next
attempt, which makes the retry safe.
"""

import base64
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from kubefence.certs import pki
from kubefence.certs.material import Material, materialize
from kubefence.certs.options import EnsureOptions
from kubefence.certs.plan import (
    ClusterState,
    Plan,
    SecretState,
    WebhookState,
    plan,
)
from kubefence.common.logs import get_logger

MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "kubefence-certs")

# The keys of the one log line per run, in this order, empty when they do not apply.
ENSURE_LOG_KEYS = (
    "namespace",
    "ca_secret",
    "tls_secret",
    "webhook_config",
    "attempt",
    "steps",
    "reasons",
    "current_ca",
    "current_ca_not_after",
    "next_ca",
    "retired_cas",
    "leaf_serial",
    "leaf_not_after",
)


def _log():
    # Looked up on every use: a structlog logger bound at import time keeps
    # the configuration of that moment and would skip the JSON renderer.
    return get_logger("kubefence.certs.ensure")


class EnsureError(RuntimeError):
    """`ensure` could not finish: an API call failed, or writes kept conflicting."""


class ConflictError(Exception):
    """A write found the object changed (or created) since it was read."""


class KubeObjects:
    """The few Kubernetes API calls `ensure` makes, through the official client."""

    def __init__(self, api_client):
        from kubernetes import client

        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._admission = client.AdmissionregistrationV1Api(api_client)

    def read_secret(self, namespace: str, name: str) -> SecretState | None:
        obj = self._call(f"read Secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace, missing_ok=True)
        if obj is None:
            return None
        raw = self._api_client.sanitize_for_serialization(obj)
        metadata = raw.get("metadata") or {}
        data = {}
        for key, value in (raw.get("data") or {}).items():
            data[key] = base64.b64decode(value) if isinstance(value, str) else bytes(value)
        return SecretState(
            data=data,
            resource_version=metadata.get("resourceVersion", ""),
            type=raw.get("type") or "Opaque",
            labels=metadata.get("labels") or {},
            annotations=metadata.get("annotations") or {},
        )

    def create_secret(self, namespace: str, name: str, secret_type: str, data: dict[str, bytes]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": dict([MANAGED_BY_LABEL])},
            "type": secret_type,
            "data": _encode(data),
        }
        self._call(f"create Secret {namespace}/{name}", self._core.create_namespaced_secret, namespace, body)

    def replace_secret(self, namespace: str, name: str, current: SecretState, secret_type: str, data: dict[str, bytes]) -> None:
        metadata = {"name": name, "namespace": namespace, "resourceVersion": current.resource_version}
        if current.labels:
            metadata["labels"] = dict(current.labels)
        if current.annotations:
            metadata["annotations"] = dict(current.annotations)
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": secret_type, "data": _encode(data)}
        self._call(f"replace Secret {namespace}/{name}", self._core.replace_namespaced_secret, name, namespace, body)

    def read_webhook(self, name: str) -> WebhookState | None:
        obj = self._call(
            f"read MutatingWebhookConfiguration {name}",
            self._admission.read_mutating_webhook_configuration,
            name,
            missing_ok=True,
        )
        if obj is None:
            return None
        raw = self._api_client.sanitize_for_serialization(obj)
        names, bundles = [], []
        for webhook in raw.get("webhooks") or []:
            names.append(webhook.get("name", ""))
            bundle = (webhook.get("clientConfig") or {}).get("caBundle") or ""
            bundles.append(base64.b64decode(bundle) if isinstance(bundle, str) else bytes(bundle))
        return WebhookState(
            resource_version=(raw.get("metadata") or {}).get("resourceVersion", ""),
            webhook_names=tuple(names),
            ca_bundles=tuple(bundles),
        )

    def patch_webhook_bundles(self, name: str, current: WebhookState, bundle: bytes) -> None:
        """Set caBundle on every webhook with a JSON Patch that also pins the resourceVersion read."""
        encoded = base64.b64encode(bundle).decode()
        # Setting metadata.resourceVersion makes the API server reject the
        # patch with 409 Conflict when the object changed since it was read.
        operations = [{"op": "replace", "path": "/metadata/resourceVersion", "value": current.resource_version}]
        for index in range(len(current.webhook_names)):
            operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded})
        self._call(
            f"patch MutatingWebhookConfiguration {name}",
            self._admission.patch_mutating_webhook_configuration,
            name,
            operations,
            _content_type="application/json-patch+json",
        )

    def _call(self, action: str, function, *args, missing_ok: bool = False, **kwargs):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return function(*args, **kwargs)
        except ApiException as error:
            if error.status == 404 and missing_ok:
                return None
            if error.status == 409:
                raise ConflictError(f"{action}: {_status_message(error)}") from None
            raise EnsureError(f"{action} failed: HTTP {error.status} {_status_message(error)}") from None
        except (OSError, HTTPError) as error:
            raise EnsureError(f"{action} failed: {error}") from None


@dataclass(frozen=True)
class EnsureResult:
    """The plan that was applied and the material written (or kept)."""

    plan: Plan
    material: Material
    attempts: int


def read_state(objects: KubeObjects, options: EnsureOptions) -> ClusterState:
    return ClusterState(
        ca_secret=objects.read_secret(options.namespace, options.ca_secret),
        tls_secret=objects.read_secret(options.namespace, options.tls_secret),
        webhook=objects.read_webhook(options.webhook_config) if options.webhook_config else None,
    )


def ensure(
    options: EnsureOptions,
    objects: KubeObjects,
    *,
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc),
    attempts: int = 5,
    backoff: float = 0.5,
) -> EnsureResult:
    """Bring both Secrets and the caBundle to the state `plan` decides, retrying on write conflicts."""
    for attempt in range(1, attempts + 1):
        state = read_state(objects, options)
        now = clock()
        decided = plan(state, options, now)
        material = materialize(decided, now)

        for problem in decided.repairs:
            _log().warning("certs.repair", problem=problem, namespace=options.namespace, attempt=attempt)
        if options.webhook_config and state.webhook is None:
            _log().info(
                "certs.webhook_config_missing",
                webhook_config=options.webhook_config,
                message="no caBundle to patch; run ensure again once the configuration exists",
            )
        _log().info("certs.ensure", **_log_fields(options, attempt, decided, material))

        try:
            _apply(objects, options, state, decided, material)
        except ConflictError as error:
            _log().warning("certs.conflict", error=str(error), attempt=attempt, attempts=attempts)
            if attempt < attempts:
                time.sleep(backoff * attempt)
            continue
        return EnsureResult(decided, material, attempt)
    raise EnsureError(f"gave up after {attempts} attempts: every write attempt conflicted with another writer")


def _apply(objects: KubeObjects, options: EnsureOptions, state: ClusterState, decided: Plan, material: Material) -> None:
    namespace = options.namespace
    # 1. The CA Secret: the bundle is stored before any client is configured to trust it.
    if decided.write_ca_secret:
        _write_secret(objects, namespace, options.ca_secret, state.ca_secret, decided.ca_secret_type, material.ca_secret_data)
    # 2. The caBundle: clients trust the new CAs before any pod can serve a certificate from them.
    if decided.patch_webhook and state.webhook is not None:
        objects.patch_webhook_bundles(options.webhook_config, state.webhook, material.ca_bundle)
    # 3. The serving Secret, which the webhook pods mount and reload.
    if decided.write_tls_secret:
        _write_secret(objects, namespace, options.tls_secret, state.tls_secret, decided.tls_secret_type, material.tls_secret_data)


def _write_secret(objects, namespace, name, current: SecretState | None, secret_type, data) -> None:
    if current is None:
        objects.create_secret(namespace, name, secret_type, data)
    else:
        objects.replace_secret(namespace, name, current, secret_type, data)


def _log_fields(options: EnsureOptions, attempt: int, decided: Plan, material: Material) -> dict:
    active = material.active_ca.certificate
    leaf = material.leaf.certificate
    fields = {
        "namespace": options.namespace,
        "ca_secret": options.ca_secret,
        "tls_secret": options.tls_secret,
        "webhook_config": options.webhook_config,
        "attempt": attempt,
        "steps": list(decided.steps),
        "reasons": list(decided.reasons),
        "current_ca": pki.fingerprint(active),
        "current_ca_not_after": active.not_valid_after_utc.isoformat(),
        "next_ca": pki.fingerprint(material.pending_ca.certificate) if material.pending_ca else "",
        "retired_cas": len(decided.retired_cas),
        "leaf_serial": format(leaf.serial_number, "x"),
        "leaf_not_after": leaf.not_valid_after_utc.isoformat(),
    }
    return {key: fields[key] for key in ENSURE_LOG_KEYS}


def _encode(data: dict[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


def _status_message(error) -> str:
    """Return the message of the Status object in an API error body, or the HTTP reason."""
    try:
        return str(orjson.loads(error.body).get("message") or error.reason)
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        return str(error.reason)
