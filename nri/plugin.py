"""NRI request handlers of the kubefence plugin.

`Plugin` holds what outlives a connection (configuration, decision
functions, audit store, metrics, whether the runtime refused the validator
subscription). `Session` holds one connection's state and the dispatch
table for the Plugin service; the runner makes a new Session for every
connection, so nothing carries over a reconnect.

Where errors go, because the runtime treats them differently:

* CreateContainer is the only place that rejects: an error status fails
  that create (fail-closed).
* ValidateContainerAdjustment rejects with `reject: true` in its reply.
* Every other event is answered OK whatever happens: an error on
  RunPodSandbox fails the whole pod, and Stop and Remove arrive for
  containers that were rejected, never created or already removed.
  Stop and Remove act on the container id only and never decide again.

Handlers do no blocking I/O before they reply. Audit writes, removals and
the Synchronize audit go through `defer`, which the runner points at a
single worker thread, so they run after the reply and in request order.
"""

import importlib
import re
from collections.abc import Callable
from typing import Any

from kubefence.common.logs import decision_fields, get_logger
from kubefence.nri import api_pb2, convert, model
from kubefence.nri.errors import RpcError
from kubefence.nri.metrics import Metrics
from kubefence.nri.service import Dispatcher, Method
from kubefence.nri.ttrpc import UNKNOWN

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"

Event = api_pb2.Event


def event_bit(event: int) -> int:
    """Return the ConfigureResponse mask bit of an NRI Event number."""
    return 1 << (event - 1)


# Events the plugin always subscribes to. The mask is never 0, because 0
# subscribes to every event, the validator event included.
BASE_EVENTS = (
    event_bit(Event.CREATE_CONTAINER) | event_bit(Event.STOP_CONTAINER) | event_bit(Event.REMOVE_CONTAINER)
)
# 0x2000. Runtimes older than NRI v0.10 fail Configure on it ("invalid plugin events: 0x2000").
VALIDATE_EVENT = event_bit(Event.VALIDATE_CONTAINER_ADJUSTMENT)

# The NRI release whose plugin API this implementation follows (dedicated
# event methods, Container.image). Runtimes since NRI v0.12 only log it.
NRI_API_VERSION = "v0.12.0"

_VERSION = re.compile(r"v?(\d+)\.(\d+)")


def runtime_supports_validation(nri_version: str) -> bool | None:
    """Return whether an NRI version string is v0.10 or later, or None when it is empty or unparsable."""
    match = _VERSION.match(nri_version)
    if match is None:
        return None
    return (int(match.group(1)), int(match.group(2))) >= (0, 10)


class Plugin:
    """State the plugin keeps across connections."""

    def __init__(
        self,
        config: Any,
        *,
        decider: Any = None,
        audit_store: Any = None,
        metrics: Metrics | None = None,
        defer: Callable[..., Any] | None = None,
    ):
        self.config = config
        self.decider = decider if decider is not None else importlib.import_module("kubefence.nri.decision")
        self.audit_store = audit_store
        self.metrics = metrics or Metrics()
        # defer(fn, key=None) runs `fn` after the reply; work with the same key
        # may be coalesced. The default runs it at once (tests without a runner).
        self.defer = defer or (lambda fn, key=None: fn())
        self.log = get_logger("kubefence.nri.plugin")
        # Set when the runtime closed the connection right after a Configure
        # reply that asked for ValidateContainerAdjustment.
        self.validator_refused = False

    def wants_validator(self) -> bool:
        return bool(getattr(self.config, "validator", False)) and not self.validator_refused

    def new_session(self) -> "Session":
        return Session(self)


class Session:
    """One connection's handlers and state."""

    def __init__(self, plugin: Plugin):
        self.plugin = plugin
        self.config = plugin.config
        self.decider = plugin.decider
        self.log = plugin.log
        self.metrics = plugin.metrics
        self.configured_events = 0
        self.runtime = ""
        self.synchronized = False
        # True once any Synchronize part arrived, which shows Configure was accepted.
        self.sync_received = False
        # Parts of a split Synchronize received so far.
        self._sync_pods: list[api_pb2.PodSandbox] = []
        self._sync_containers: list[api_pb2.Container] = []

        empty = api_pb2.Empty
        methods = {
            "Configure": Method(self.configure, api_pb2.ConfigureRequest, api_pb2.ConfigureResponse),
            "Synchronize": Method(self.synchronize, api_pb2.SynchronizeRequest, api_pb2.SynchronizeResponse),
            "Shutdown": Method(self.shutdown, empty, empty),
            "CreateContainer": Method(
                self.create_container, api_pb2.CreateContainerRequest, api_pb2.CreateContainerResponse
            ),
            "UpdateContainer": Method(
                self.update_container, api_pb2.UpdateContainerRequest, api_pb2.UpdateContainerResponse
            ),
            "StopContainer": Method(self.stop_container, api_pb2.StopContainerRequest, api_pb2.StopContainerResponse),
            "StateChange": Method(self.state_change, api_pb2.StateChangeEvent, empty),
            "ValidateContainerAdjustment": Method(
                self.validate_container_adjustment,
                api_pb2.ValidateContainerAdjustmentRequest,
                api_pb2.ValidateContainerAdjustmentResponse,
            ),
            "RemoveContainer": Method(
                self.remove_container, api_pb2.RemoveContainerRequest, api_pb2.RemoveContainerResponse
            ),
            "UpdatePodSandbox": Method(
                _acknowledge(api_pb2.UpdatePodSandboxResponse),
                api_pb2.UpdatePodSandboxRequest,
                api_pb2.UpdatePodSandboxResponse,
            ),
        }
        # NRI v0.12 sends these events through methods of their own; the
        # plugin acts on none of them but must reply, or the runtime fails
        # the pod. They never return an error.
        for name in (
            "RunPodSandbox",
            "StopPodSandbox",
            "RemovePodSandbox",
            "PostUpdatePodSandbox",
            "PostCreateContainer",
            "StartContainer",
            "PostStartContainer",
            "PostUpdateContainer",
        ):
            request_type = getattr(api_pb2, f"{name}Request")
            reply_type = getattr(api_pb2, f"{name}Response")
            methods[name] = Method(_acknowledge(reply_type), request_type, reply_type)
        self.dispatcher = Dispatcher({PLUGIN_SERVICE: methods})

    # ---- registration ----

    def registration_request(self) -> api_pb2.RegisterPluginRequest:
        return api_pb2.RegisterPluginRequest(
            plugin_name=self.config.plugin_name,
            plugin_idx=self.config.plugin_index,
            NRI_version=NRI_API_VERSION,
        )

    def configure(self, request: api_pb2.ConfigureRequest) -> api_pb2.ConfigureResponse:
        self.runtime = f"{request.runtime_name}/{request.runtime_version}"
        events = BASE_EVENTS
        if self.plugin.wants_validator():
            supported = runtime_supports_validation(request.NRI_version)
            if supported is False:
                self._emit(
                    "warning",
                    "runtime does not support ValidateContainerAdjustment; validating in CreateContainer only",
                    runtime=self.runtime,
                    nri_version=request.NRI_version,
                )
            else:
                events |= VALIDATE_EVENT
        self.configured_events = events
        self._emit(
            "info",
            "configured by runtime",
            runtime=self.runtime,
            nri_version=request.NRI_version,
            request_timeout_ms=request.request_timeout,
            registration_timeout_ms=request.registration_timeout,
            events=hex(events),
        )
        return api_pb2.ConfigureResponse(events=events)

    def synchronize(self, request: api_pb2.SynchronizeRequest) -> api_pb2.SynchronizeResponse:
        self.sync_received = True
        self._sync_pods.extend(request.pods)
        self._sync_containers.extend(request.containers)
        if request.more:
            # Exactly `more: true` and nothing else, or the runtime drops the plugin.
            return api_pb2.SynchronizeResponse(more=True)

        pods, containers = self._sync_pods, self._sync_containers
        self._sync_pods, self._sync_containers = [], []
        self.synchronized = True
        self.plugin.defer(lambda: self._audit_synchronize(pods, containers))
        return api_pb2.SynchronizeResponse()

    def _audit_synchronize(self, pods: list, containers: list) -> None:
        """Report unwrapped opted-in containers and rebuild the audit records (runs after the reply)."""
        model_pods = [convert.pod_from_proto(pod) for pod in pods]
        model_containers = [convert.container_from_proto(container) for container in containers]
        findings = self.decider.audit_synchronize(model_pods, model_containers, self.config)
        pods_by_id = {pod.id: pod for pod in model_pods}
        for finding in findings:
            self._emit(
                "warning",
                "opted-in container running without nono",
                **decision_fields(
                    decision="skip",
                    reason=finding.reason,
                    namespace=finding.pod.namespace,
                    pod=finding.pod.name,
                    container=finding.container_name,
                    runtime_handler=finding.pod.runtime_handler,
                    profile=finding.pod.annotations.get(_profile_annotation(), ""),
                    container_id=finding.container_id,
                ),
            )
        self.metrics.unwrapped_containers.set(len(findings))
        self._emit(
            "info", "synchronized", pods=len(model_pods), containers=len(model_containers), unwrapped=len(findings)
        )

        store = self.plugin.audit_store
        if store is None:
            return
        unwrapped = {finding.container_id for finding in findings}
        live = [container.id for container in model_containers]
        store.reconcile(live)
        # Records that survived the reconcile are current; each write costs an fsync.
        recorded = store.ids()
        for container in model_containers:
            if container.id in recorded or container.id in unwrapped:
                continue
            pod = pods_by_id.get(container.pod_sandbox_id)
            profile = self.decider.wrapped_profile(container.args)
            if pod is None or profile is None:
                continue
            store.write(container.id, _audit_record(pod, container, profile))

    def shutdown(self, request: api_pb2.Empty) -> api_pb2.Empty:
        self._emit("info", "runtime is shutting down", runtime=self.runtime)
        return api_pb2.Empty()

    # ---- containers ----

    def create_container(self, request: api_pb2.CreateContainerRequest) -> api_pb2.CreateContainerResponse:
        pod = convert.pod_from_proto(request.pod)
        container = convert.container_from_proto(request.container)
        decision = self.decider.decide_create(pod, container, self.config)
        self._log_decision(decision, pod, container)

        if decision.decision == "reject":
            raise RpcError(UNKNOWN, decision.message)
        if decision.decision == "skip" or decision.adjustment is None:
            return api_pb2.CreateContainerResponse()

        store = self.plugin.audit_store
        if store is not None:
            record = _audit_record(pod, container, decision.profile)
            self.plugin.defer(lambda: store.write(container.id, record), key=container.id)
        return api_pb2.CreateContainerResponse(adjust=convert.adjustment_to_proto(decision.adjustment))

    def validate_container_adjustment(
        self, request: api_pb2.ValidateContainerAdjustmentRequest
    ) -> api_pb2.ValidateContainerAdjustmentResponse:
        pod = convert.pod_from_proto(request.pod)
        pristine = convert.container_from_proto(request.container)
        final = self.decider.apply_adjustment(pristine, convert.adjustment_from_proto(request.adjust))
        decision = self.decider.validate_final(pod, final, self.config)
        self._log_decision(decision, pod, final, validation=True)
        if decision.decision == "reject":
            return api_pb2.ValidateContainerAdjustmentResponse(reject=True, reason=decision.message)
        return api_pb2.ValidateContainerAdjustmentResponse()

    def update_container(self, request: api_pb2.UpdateContainerRequest) -> api_pb2.UpdateContainerResponse:
        return api_pb2.UpdateContainerResponse()

    def stop_container(self, request: api_pb2.StopContainerRequest) -> api_pb2.StopContainerResponse:
        self._forget(request.container.id)
        return api_pb2.StopContainerResponse()

    def remove_container(self, request: api_pb2.RemoveContainerRequest) -> api_pb2.RemoveContainerResponse:
        self._forget(request.container.id)
        return api_pb2.RemoveContainerResponse()

    def state_change(self, request: api_pb2.StateChangeEvent) -> api_pb2.Empty:
        if request.event in (Event.STOP_CONTAINER, Event.REMOVE_CONTAINER):
            self._forget(request.container.id)
        return api_pb2.Empty()

    def _forget(self, container_id: str) -> None:
        """Drop the audit record of a container, by id only; unknown ids are fine."""
        store = self.plugin.audit_store
        if store is not None and container_id:
            self.plugin.defer(lambda: store.remove(container_id), key=container_id)

    def _emit(self, level: str, event: str, **fields: Any) -> None:
        """Write one log line; a broken log stream never changes a reply."""
        try:
            getattr(self.log, level)(event, **fields)
        except (OSError, ValueError):
            self.metrics.log_failures.inc()

    def _log_decision(
        self, decision: model.Decision, pod: model.Pod, container: model.Container, *, validation: bool = False
    ) -> None:
        self.metrics.decisions.labels(decision=decision.decision).inc()
        fields = decision_fields(
            decision=decision.decision,
            reason=decision.reason,
            namespace=pod.namespace,
            pod=pod.name,
            container=container.name,
            runtime_handler=pod.runtime_handler,
            profile=decision.profile,
            container_id=container.id,
        )
        event = "validation decision" if validation else "decision"
        if decision.fallback:
            self._emit("warning", event, fallback=True, **fields)
        else:
            self._emit("info", event, **fields)
        if decision.warning:
            self._emit("warning", decision.warning, **fields)


def _acknowledge(reply_type: type) -> Callable[[Any], Any]:
    def handler(request: Any) -> Any:
        return reply_type()

    return handler


def _profile_annotation() -> str:
    from kubefence.common.contracts import PROFILE_ANNOTATION

    return PROFILE_ANNOTATION


def _audit_record(pod: model.Pod, container: model.Container, profile: str) -> dict[str, str]:
    return {
        "container_id": container.id,
        "container": container.name,
        "pod_id": pod.id,
        "pod": pod.name,
        "namespace": pod.namespace,
        "runtime_handler": pod.runtime_handler,
        "profile": profile,
    }
