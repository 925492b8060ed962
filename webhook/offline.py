"""`kubefence review`: run the admission decision on manifests from a file, without a cluster.

A Pod is reviewed as the CREATE request kube-apiserver would send. A
workload (Deployment, Job, CronJob and the other kinds with a pod template)
is reviewed through the pod its controller would create from the template:
same metadata and spec, the workload's namespace, and `generateName` set to
`<workload name>-`. The JSON Patch then applies to that pod, not to the
workload. Any other kind is an error.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch

from kubefence.common.policy import Policy
from kubefence.webhook.errors import ReviewError
from kubefence.webhook.mutation import AdmissionDecision, decide

# Kinds whose pods come from `spec.template`.
TEMPLATE_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController")

OFFLINE_UID = "00000000-0000-0000-0000-000000000000"


class ManifestError(ValueError):
    """A manifest that `kubefence review` cannot turn into a pod."""


@dataclass(frozen=True)
class OfflineReview:
    """One reviewed pod: what it came from, the decision and the patched pod (None when denied)."""

    subject: str
    decision: AdmissionDecision
    patched_pod: dict[str, Any] | None


def pod_from_manifest(document: Any, index: int = 0) -> tuple[dict[str, Any], str]:
    """Return the pod that `document` stands for, and a description of where it came from."""
    if not isinstance(document, Mapping):
        raise ManifestError(f"document {index}: expected a Kubernetes object (a mapping), got {type(document).__name__}")
    kind = document.get("kind")
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ManifestError(f"document {index}: invalid metadata {metadata!r}: expected a mapping")
    name = metadata.get("name") or metadata.get("generateName") or ""
    if kind == "Pod":
        return dict(document), f"Pod {name}"

    if kind in TEMPLATE_KINDS:
        template, where = document.get("spec", {}), "spec.template"
        template = template.get("template") if isinstance(template, Mapping) else None
    elif kind == "CronJob":
        where = "spec.jobTemplate.spec.template"
        template = document
        for key in ("spec", "jobTemplate", "spec", "template"):
            template = template.get(key) if isinstance(template, Mapping) else None
    elif kind == "PodTemplate":
        template, where = document.get("template"), "template"
    else:
        accepted = ", ".join(("Pod", *TEMPLATE_KINDS, "CronJob", "PodTemplate"))
        raise ManifestError(f"document {index}: kind {kind!r} has no pod to review; accepted kinds: {accepted}")
    if not isinstance(template, Mapping):
        raise ManifestError(f"document {index}: {kind} {name!r} has no pod template at {where}")

    template_metadata = dict(template.get("metadata") or {})
    template_metadata.pop("name", None)
    if metadata.get("namespace"):
        template_metadata["namespace"] = metadata["namespace"]
    if name:
        template_metadata["generateName"] = f"{name}-"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template_metadata, "spec": template.get("spec")}
    return pod, f"pod template of {kind} {name}"


def review_pod(
    pod: Mapping[str, Any],
    policy: Policy,
    *,
    namespace: str | None = None,
    operation: str = "CREATE",
    own_namespace: str = "",
) -> tuple[AdmissionDecision, dict[str, Any] | None]:
    """Decide on `pod` as kube-apiserver would ask; return the decision and the patched pod."""
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
    namespace = namespace or metadata.get("namespace") or "default"
    request = {
        "uid": OFFLINE_UID,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": operation,
        "object": pod,
        "oldObject": pod if operation == "UPDATE" else None,
        "dryRun": True,
    }
    decision = decide(request, policy, own_namespace)
    if not decision.allowed:
        return decision, None
    try:
        patched = jsonpatch.apply_patch(pod, decision.patch, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        raise ReviewError(f"the patch does not apply to the pod: {error}") from None
    return decision, patched


def review_documents(
    documents: Iterable[Any],
    policy: Policy,
    *,
    namespace: str | None = None,
    operation: str = "CREATE",
    own_namespace: str = "",
) -> list[OfflineReview]:
    """Review every non-empty document; raise ManifestError or ReviewError on the first bad one."""
    reviews = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        pod, subject = pod_from_manifest(document, index)
        decision, patched = review_pod(
            pod, policy, namespace=namespace, operation=operation, own_namespace=own_namespace
        )
        reviews.append(OfflineReview(subject, decision, patched))
    if not reviews:
        raise ManifestError("no Kubernetes object found in the input")
    return reviews


def review_report(review: OfflineReview) -> dict[str, Any]:
    """Return the printable form of one review."""
    decision = review.decision
    return {
        "subject": review.subject,
        "namespace": decision.namespace,
        "allowed": decision.allowed,
        "decision": decision.decision,
        "reason": str(decision.reason),
        "profile": decision.profile,
        "runtimeClass": decision.runtime_class,
        "message": decision.message,
        "warnings": list(decision.warnings),
        "patch": decision.patch,
        "patchedPod": review.patched_pod,
    }
