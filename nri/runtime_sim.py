"""A stand-in for the container runtime's side of NRI, for tests and demos.

`RuntimeSimulator` listens on a unix socket and plays the part of the NRI
runtime library that containerd 2.2 vendors (NRI v0.11), or of NRI v0.12
with `per_event_methods=True`. It is a test and demo driver, not a runtime:
it starts no process and touches no container. It reuses the plugin's own
multiplexer and ttrpc layers, and behaves as the real library was seen to:

* registration is serial: connections are handled one at a time, each
  must send Runtime/RegisterPlugin within `registration_timeout`, and the
  name must be non-empty and the index exactly two digits;
* Configure, then Synchronize with the simulator's pods and containers,
  split into parts just under 4 MiB when one message would be larger, all
  parts sharing one deadline; every part but the last must be answered
  with exactly `more: true`;
* an event mask with bits outside the supported events closes the plugin
  ("invalid plugin events"); mask 0 subscribes to everything;
* only subscribed events are sent. Plugins are called in ascending index
  order, each seeing the earlier plugins' changes, and their adjustments
  are merged with the runtime's ownership rules (a second claim on args,
  an env key or a mount destination fails the create unless args start
  with "");
* ValidateContainerAdjustment goes to subscribed validators with the
  pristine container and the merged adjustment;
* the final container is built the way the runtime's OCI generator does
  (see `apply_like_generator`);
* every request carries the remaining deadline in `timeout_nano`; a plugin
  that misses it, or whose connection breaks during a call, is closed and
  dropped, and the create goes on without its adjustment (fail-open);
* a failed create is followed by StopContainer and RemoveContainer for the
  same id, as containerd's undo path does;
* `restart()` closes everything, unlinks the socket and listens again, so
  the socket gets a new inode, and the runtime never sends Shutdown.

Typical use::

    sim = RuntimeSimulator(socket_path)
    await sim.start()
    plugin = await sim.wait_plugin()
    await sim.run_pod_sandbox(pod)
    result = await sim.create_container(pod, container)
    result.final.args        # what the OCI spec would hold
    await sim.stop()
"""

import asyncio
import posixpath
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from kubefence.nri import api_pb2, convert, model
from kubefence.nri.errors import ProtocolError
from kubefence.nri.mux import MAX_FRAME_PAYLOAD, MAX_PLUGIN_FRAME_PAYLOAD
from kubefence.nri.ttrpc import (
    MAX_MESSAGE_LENGTH,
    UNIMPLEMENTED,
    Connection,
    InvalidRequestReceived,
    RequestReceived,
    ResponseReceived,
)

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"

Event = api_pb2.Event

# Events a runtime with NRI v0.10 or later accepts in a subscription mask.
VALID_EVENTS = (1 << (Event.LAST - 1)) - 1
# NRI before v0.10 knew no ValidateContainerAdjustment (bit 0x2000).
VALID_EVENTS_WITHOUT_VALIDATION = VALID_EVENTS & ~(1 << (Event.VALIDATE_CONTAINER_ADJUSTMENT - 1))

_TWO_DIGITS = re.compile(r"[0-9]{2}")

# Events that NRI v0.12 sends through methods of their own and earlier
# versions through StateChange: event -> (method, request type).
_PER_EVENT_METHODS = {
    Event.RUN_POD_SANDBOX: ("RunPodSandbox", api_pb2.RunPodSandboxRequest),
    Event.STOP_POD_SANDBOX: ("StopPodSandbox", api_pb2.StopPodSandboxRequest),
    Event.REMOVE_POD_SANDBOX: ("RemovePodSandbox", api_pb2.RemovePodSandboxRequest),
    Event.POST_CREATE_CONTAINER: ("PostCreateContainer", api_pb2.PostCreateContainerRequest),
    Event.START_CONTAINER: ("StartContainer", api_pb2.StartContainerRequest),
    Event.POST_START_CONTAINER: ("PostStartContainer", api_pb2.PostStartContainerRequest),
    Event.POST_UPDATE_CONTAINER: ("PostUpdateContainer", api_pb2.PostUpdateContainerRequest),
    Event.REMOVE_CONTAINER: ("RemoveContainer", api_pb2.RemoveContainerRequest),
    Event.POST_UPDATE_POD_SANDBOX: ("PostUpdatePodSandbox", api_pb2.PostUpdatePodSandboxRequest),
}


def event_bit(event: int) -> int:
    return 1 << (event - 1)


class PluginCallError(Exception):
    """A plugin answered a call with an error status."""

    def __init__(self, plugin: str, method: str, code: int, message: str):
        super().__init__(f"plugin {plugin!r} failed {method}: code {code}: {message}")
        self.plugin = plugin
        self.method = method
        self.code = code
        self.message = message


class PluginDropped(Exception):
    """A plugin missed its deadline or lost its connection during a call, and was closed."""

    def __init__(self, plugin: str, method: str, reason: str):
        super().__init__(f"plugin {plugin!r} dropped during {method}: {reason}")
        self.plugin = plugin
        self.method = method
        self.reason = reason


@dataclass
class Call:
    """One call the simulator made, for assertions: method, request and reply sizes, outcome."""

    plugin: str
    method: str
    request_bytes: int
    reply_bytes: int
    status: tuple[int, str] | None
    timeout_nano: int
    seconds: float


@dataclass
class CreateResult:
    """What a CreateContainer did.

    `final` is the container as the OCI spec would hold it; `adjustment` is
    the merged adjustment; `error` is the message the create failed with,
    or "" when it succeeded; `dropped` lists the plugins closed during the
    create (their adjustment is missing from `final`).
    """

    final: model.Container | None
    adjustment: model.Adjustment
    error: str = ""
    dropped: list[str] = field(default_factory=list)
    replies: dict[str, api_pb2.CreateContainerResponse] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class VirtualPlugin:
    """A plugin played inside the simulator, to stand for other plugins on the node.

    `create` receives the pod and the container as this plugin would see
    them (earlier plugins' changes applied) and returns its adjustment, or
    raises PluginCallError to fail the create.
    """

    name: str
    index: str
    create: Callable[[model.Pod, model.Container], model.Adjustment]

    @property
    def id(self) -> str:
        return f"{self.index}-{self.name}"


class _RuntimeProtocol(asyncio.Protocol):
    """The runtime end of one plugin connection."""

    def __init__(self, simulator: "RuntimeSimulator"):
        self.simulator = simulator
        # The runtime reads each conn through a 4096-byte buffer and closes a
        # plugin whose frame does not fit.
        self.connection = Connection.for_runtime(
            max_send_payload=simulator.max_frame_payload, max_receive_payload=simulator.plugin_frame_limit
        )
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, asyncio.Future] = {}
        loop = asyncio.get_running_loop()
        self.registration: asyncio.Future = loop.create_future()
        self.closed: asyncio.Future = loop.create_future()
        self.protocol_error = ""
        self.received_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.simulator._accepted(self)

    def data_received(self, data: bytes) -> None:
        self.received_bytes += len(data)
        try:
            events = self.connection.receive_data(data)
        except ProtocolError as error:
            self.protocol_error = str(error)
            self.simulator._note(f"plugin connection broke the protocol: {error}")
            self.abort()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._on_request(event)
            elif isinstance(event, InvalidRequestReceived):
                self.write(self.connection.send_response(event.stream_id, status=(3, event.error)))
            elif isinstance(event, ResponseReceived):
                future = self.calls.pop(event.stream_id, None)
                if future is not None and not future.done():
                    future.set_result(event.response)

    def _on_request(self, event: RequestReceived) -> None:
        request = event.request
        if request.service != RUNTIME_SERVICE:
            self.write(self.connection.send_response(event.stream_id, status=(UNIMPLEMENTED, f"service {request.service}")))
            return
        if request.method == "RegisterPlugin":
            message = api_pb2.RegisterPluginRequest.FromString(request.payload)
            problem = ""
            if not message.plugin_name:
                problem = "invalid plugin name: empty"
            elif not _TWO_DIGITS.fullmatch(message.plugin_idx):
                problem = f"invalid plugin index {message.plugin_idx!r}: must be two digits"
            if problem:
                self.write(self.connection.send_response(event.stream_id, status=(2, problem)))
                return
            self.write(self.connection.send_response(event.stream_id))
            if not self.registration.done():
                self.registration.set_result(message)
            return
        if request.method == "UpdateContainers":
            message = api_pb2.UpdateContainersRequest.FromString(request.payload)
            self.simulator.updates.extend(message.update)
            self.write(self.connection.send_response(event.stream_id))
            return
        self.write(self.connection.send_response(event.stream_id, status=(UNIMPLEMENTED, f"method {request.method}")))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def call(self, method: str, payload: bytes, timeout_nano: int, metadata=()) -> asyncio.Future:
        stream_id, data = self.connection.send_request(
            PLUGIN_SERVICE, method, payload, timeout_nano=timeout_nano, metadata=metadata
        )
        future = asyncio.get_running_loop().create_future()
        self.calls[stream_id] = future
        self.write(data)
        return future

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self.calls.values():
            if not future.done():
                future.set_exception(ConnectionError("plugin connection closed"))
        self.calls.clear()
        if not self.registration.done():
            self.registration.set_exception(ConnectionError("closed before RegisterPlugin"))
            self.registration.exception()
        if not self.closed.done():
            self.closed.set_result(exc)
        self.simulator._lost(self)


@dataclass
class PluginLink:
    """A plugin registered with the simulator."""

    name: str
    index: str
    nri_version: str
    events: int
    protocol: _RuntimeProtocol
    # NRI v0.12: set after the plugin answered a dedicated event method with status 12.
    uses_state_change: bool = False
    synchronized: bool = False

    @property
    def id(self) -> str:
        return f"{self.index}-{self.name}"

    def subscribed(self, event: int) -> bool:
        return bool(self.events & event_bit(event))


class RuntimeSimulator:
    """The runtime side of NRI on a unix socket (see the module docstring)."""

    def __init__(
        self,
        socket_path: str,
        *,
        runtime_name: str = "containerd",
        runtime_version: str = "v2.2.2",
        nri_version: str = "",
        request_timeout: float = 2.0,
        registration_timeout: float = 5.0,
        supports_validation: bool = True,
        per_event_methods: bool = False,
        max_frame_payload: int = MAX_FRAME_PAYLOAD,
        plugin_frame_limit: int = MAX_PLUGIN_FRAME_PAYLOAD,
        max_message_length: int = MAX_MESSAGE_LENGTH,
        undo_failed_creates: bool = True,
        metadata: tuple[tuple[str, str], ...] = (("containerd-namespace-ttrpc", "k8s.io"),),
    ):
        self.socket_path = socket_path
        self.runtime_name = runtime_name
        self.runtime_version = runtime_version
        self.nri_version = nri_version
        self.request_timeout = request_timeout
        self.registration_timeout = registration_timeout
        self.valid_events = VALID_EVENTS if supports_validation else VALID_EVENTS_WITHOUT_VALIDATION
        self.per_event_methods = per_event_methods
        self.max_frame_payload = max_frame_payload
        self.plugin_frame_limit = plugin_frame_limit
        self.max_message_length = max_message_length
        self.undo_failed_creates = undo_failed_creates
        self.metadata = metadata

        # The runtime's state, sent in Synchronize.
        self.pods: dict[str, model.Pod] = {}
        self.containers: dict[str, model.Container] = {}
        self.plugins: list[PluginLink] = []
        self.virtual_plugins: list[VirtualPlugin] = []
        self.calls: list[Call] = []
        self.updates: list[api_pb2.ContainerUpdate] = []
        # Human-readable runtime log: registrations, drops, errors.
        self.log: list[str] = []
        self.registrations = 0
        self.accepted_connections = 0

        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_RuntimeProtocol] = set()
        self._registration_lock = asyncio.Lock()
        self._changed = asyncio.Condition()

    # ---- lifecycle ----

    async def start(self) -> None:
        """Listen on `socket_path`, replacing a stale socket file."""
        import os

        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _RuntimeProtocol(self), self.socket_path)
        self._note(f"listening on {self.socket_path}")

    async def stop(self) -> None:
        """Close the listener and every plugin connection (the plugins see EOF), and unlink the socket."""
        import os

        if self._server is not None:
            self._server.close()
            self._server = None
        for protocol in list(self._connections):
            if protocol.transport is not None:
                protocol.transport.close()
        for protocol in list(self._connections):
            try:
                await asyncio.wait_for(asyncio.shield(protocol.closed), 1.0)
            except TimeoutError:
                protocol.abort()
        self._connections.clear()
        self.plugins.clear()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self._note("stopped")

    async def restart(
        self,
        pods: Iterable[model.Pod] | None = None,
        containers: Iterable[model.Container] | None = None,
    ) -> None:
        """Stop, optionally replace the known pods and containers, and listen again on a new socket inode."""
        await self.stop()
        if pods is not None:
            self.pods = {pod.id: pod for pod in pods}
        if containers is not None:
            self.containers = {container.id: container for container in containers}
        await self.start()

    async def wait_plugin(self, name: str | None = None, timeout: float = 15.0, count: int = 1) -> PluginLink:
        """Wait until `count` plugins (named `name`, if given) are registered and synchronized."""

        def matching() -> list[PluginLink]:
            return [p for p in self.plugins if p.synchronized and (name is None or p.name == name)]

        async def wait() -> PluginLink:
            async with self._changed:
                await self._changed.wait_for(lambda: len(matching()) >= count)
                return matching()[-1]

        return await asyncio.wait_for(wait(), timeout)

    async def wait_no_plugin(self, timeout: float = 10.0) -> None:
        """Wait until no plugin is registered."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: not self.plugins)

        await asyncio.wait_for(wait(), timeout)

    def add_virtual_plugin(self, plugin: VirtualPlugin) -> None:
        self.virtual_plugins.append(plugin)

    # ---- connection handling ----

    def _accepted(self, protocol: _RuntimeProtocol) -> None:
        self.accepted_connections += 1
        self._connections.add(protocol)
        asyncio.ensure_future(self._register(protocol))

    def _lost(self, protocol: _RuntimeProtocol) -> None:
        self._connections.discard(protocol)
        before = len(self.plugins)
        self.plugins = [p for p in self.plugins if p.protocol is not protocol]
        if len(self.plugins) != before:
            self._note("plugin connection closed")
        asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _note(self, line: str) -> None:
        self.log.append(line)

    async def _register(self, protocol: _RuntimeProtocol) -> None:
        # One registration at a time, as the runtime does.
        async with self._registration_lock:
            try:
                request = await asyncio.wait_for(asyncio.shield(protocol.registration), self.registration_timeout)
            except (TimeoutError, ConnectionError) as error:
                self._note(f"registration failed: {error!r}")
                protocol.abort()
                return
            link = PluginLink(request.plugin_name, request.plugin_idx, request.NRI_version, 0, protocol)
            try:
                await self._configure(link)
                self.plugins.append(link)
                self.plugins.sort(key=lambda p: (p.index, p.name))
                await self._synchronize(link)
            except (PluginCallError, PluginDropped) as error:
                self._note(f"plugin {link.id} failed to start: {error}")
                self.plugins = [p for p in self.plugins if p is not link]
                protocol.abort()
                return
            link.synchronized = True
            self.registrations += 1
            self._note(f"plugin {link.id} registered and synchronized")
            await self._notify()

    async def _configure(self, link: PluginLink) -> None:
        request = api_pb2.ConfigureRequest(
            runtime_name=self.runtime_name,
            runtime_version=self.runtime_version,
            registration_timeout=int(self.registration_timeout * 1000),
            request_timeout=int(self.request_timeout * 1000),
            NRI_version=self.nri_version,
        )
        reply = await self._call(link, "Configure", request, api_pb2.ConfigureResponse, metadata=())
        events = reply.events
        if events == 0:
            events = self.valid_events
        elif events & ~self.valid_events:
            raise PluginCallError(link.id, "Configure", 0, f"invalid plugin events: 0x{events & ~self.valid_events:x}")
        link.events = events

    async def _synchronize(self, link: PluginLink) -> None:
        pods = [convert.pod_to_proto(pod) for pod in self.pods.values()]
        containers = [convert.container_to_proto(container) for container in self.containers.values()]
        deadline = time.monotonic() + self.request_timeout
        pods_per_message, containers_per_message = len(pods), len(containers)
        while True:
            request = api_pb2.SynchronizeRequest(
                pods=pods[:pods_per_message],
                containers=containers[:containers_per_message],
                more=len(pods) > pods_per_message or len(containers) > containers_per_message,
            )
            size = request.ByteSize() + 100  # envelope estimate: service, method, timeout
            if size > self.max_message_length:
                # The runtime's own ttrpc client refuses the message; retry smaller.
                factor = min(0.9, self.max_message_length / size)
                pods_per_message = int(pods_per_message * factor)
                containers_per_message = int(containers_per_message * factor)
                if pods_per_message + containers_per_message <= 8:
                    raise PluginCallError(link.id, "Synchronize", 8, "failed to synchronize plugin with split messages")
                continue
            reply = await self._call(
                link, "Synchronize", request, api_pb2.SynchronizeResponse, deadline=deadline, metadata=()
            )
            if not request.more:
                return
            if len(reply.update) > 0 or reply.more != request.more:
                raise PluginCallError(link.id, "Synchronize", 0, "plugin does not handle split sync requests")
            pods = pods[pods_per_message:]
            containers = containers[containers_per_message:]
            pods_per_message = min(pods_per_message, len(pods))
            containers_per_message = min(containers_per_message, len(containers))

    async def _call(
        self,
        link: PluginLink,
        method: str,
        request: Any,
        reply_type: type,
        *,
        deadline: float | None = None,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> Any:
        """Call `method` on one plugin within the request deadline; drop the plugin if it misses it."""
        if deadline is None:
            deadline = time.monotonic() + self.request_timeout
        remaining = max(deadline - time.monotonic(), 0.0)
        payload = request.SerializeToString()
        started = time.monotonic()
        future = link.protocol.call(
            method, payload, int(remaining * 1e9), self.metadata if metadata is None else metadata
        )
        try:
            response = await asyncio.wait_for(future, remaining)
        except TimeoutError:
            self._drop(link, method, "context deadline exceeded")
            raise PluginDropped(link.id, method, "context deadline exceeded") from None
        except ConnectionError as error:
            self._drop(link, method, str(error))
            raise PluginDropped(link.id, method, str(error)) from None
        status = None
        if response.HasField("status") and response.status.code != 0:
            status = (response.status.code, response.status.message)
        self.calls.append(
            Call(link.id, method, len(payload), len(response.payload), status, int(remaining * 1e9),
                 time.monotonic() - started)
        )
        if status is not None:
            raise PluginCallError(link.id, method, *status)
        return reply_type.FromString(response.payload)

    def _drop(self, link: PluginLink, method: str, reason: str) -> None:
        self._note(f"closing plugin {link.id}, failed to handle {method} request: {reason}")
        self.plugins = [p for p in self.plugins if p is not link]
        link.protocol.abort()

    # ---- events ----

    async def _event(self, event: int, pod: model.Pod, container: model.Container | None = None) -> None:
        """Send a pod or container lifecycle event that cannot change anything.

        An error status fails the caller only for RunPodSandbox, as in
        containerd; for other events it is logged.
        """
        for link in list(self.plugins):
            if not link.subscribed(event):
                continue
            try:
                await self._send_event(link, event, pod, container)
            except PluginDropped:
                continue
            except PluginCallError as error:
                if event == Event.RUN_POD_SANDBOX:
                    raise
                self._note(f"{error.method} error ignored: {error}")

    async def _send_event(
        self, link: PluginLink, event: int, pod: model.Pod, container: model.Container | None
    ) -> None:
        pod_message = convert.pod_to_proto(pod)
        container_message = convert.container_to_proto(container) if container is not None else None
        if self.per_event_methods and not link.uses_state_change and event in _PER_EVENT_METHODS:
            method, request_type = _PER_EVENT_METHODS[event]
            request = request_type(pod=pod_message)
            if container_message is not None and "container" in request_type.DESCRIPTOR.fields_by_name:
                request.container.CopyFrom(container_message)
            try:
                await self._call(link, method, request, api_pb2.Empty)
                return
            except PluginCallError as error:
                if error.code != UNIMPLEMENTED:
                    raise
                # Only Unimplemented switches this plugin to StateChange.
                link.uses_state_change = True
        request = api_pb2.StateChangeEvent(event=event, pod=pod_message)
        if container_message is not None:
            request.container.CopyFrom(container_message)
        await self._call(link, "StateChange", request, api_pb2.Empty)

    async def run_pod_sandbox(self, pod: model.Pod) -> None:
        """Record the pod and send RunPodSandbox; a plugin error raises PluginCallError (the pod fails)."""
        self.pods[pod.id] = pod
        await self._event(Event.RUN_POD_SANDBOX, pod)

    async def stop_pod_sandbox(self, pod: model.Pod) -> None:
        await self._event(Event.STOP_POD_SANDBOX, pod)

    async def remove_pod_sandbox(self, pod: model.Pod) -> None:
        self.pods.pop(pod.id, None)
        await self._event(Event.REMOVE_POD_SANDBOX, pod)

    async def create_container(self, pod: model.Pod, container: model.Container) -> CreateResult:
        """Run CreateContainer through every plugin, validate, and build the final container.

        A failed create is undone with StopContainer and RemoveContainer,
        unless `undo_failed_creates` is off.
        """
        result = await self._create(pod, container)
        if result.ok:
            self.containers[container.id] = replace(result.final, state=api_pb2.CONTAINER_CREATED)
            await self._event(Event.POST_CREATE_CONTAINER, pod, self.containers[container.id])
        elif self.undo_failed_creates:
            await self.stop_container(pod, container)
            await self.remove_container(pod, container)
        return result

    async def _create(self, pod: model.Pod, pristine: model.Container) -> CreateResult:
        merge = _Merge(pristine)
        dropped: list[str] = []
        replies: dict[str, api_pb2.CreateContainerResponse] = {}
        participants: list[PluginLink | VirtualPlugin] = [
            p for p in self.plugins if p.subscribed(Event.CREATE_CONTAINER)
        ]
        participants += self.virtual_plugins
        participants.sort(key=lambda p: (p.index, p.name))
        consulted: list[tuple[str, str]] = []

        for plugin in participants:
            consulted.append((plugin.name, plugin.index))
            try:
                if isinstance(plugin, VirtualPlugin):
                    adjustment = plugin.create(pod, merge.view)
                else:
                    request = api_pb2.CreateContainerRequest(
                        pod=convert.pod_to_proto(pod), container=convert.container_to_proto(merge.view)
                    )
                    reply = await self._call(plugin, "CreateContainer", request, api_pb2.CreateContainerResponse)
                    replies[plugin.id] = reply
                    adjustment = convert.adjustment_from_proto(reply.adjust)
                merge.apply(adjustment, plugin.id)
            except PluginDropped as error:
                dropped.append(error.plugin)
                continue
            except (PluginCallError, MergeConflict) as error:
                message = error.message if isinstance(error, PluginCallError) else str(error)
                return CreateResult(None, merge.adjustment(), error=message, dropped=dropped, replies=replies)

        merged = merge.adjustment()
        # Plugins dropped above are gone from self.plugins.
        validators = [p for p in self.plugins if p.subscribed(Event.VALIDATE_CONTAINER_ADJUSTMENT)]
        if validators:
            request = api_pb2.ValidateContainerAdjustmentRequest(
                pod=convert.pod_to_proto(pod),
                container=convert.container_to_proto(pristine),
                adjust=convert.adjustment_to_proto(merged),
                plugins=[api_pb2.PluginInstance(name=name, index=index) for name, index in consulted],
            )
            for validator in validators:
                try:
                    reply = await self._call(
                        validator, "ValidateContainerAdjustment", request, api_pb2.ValidateContainerAdjustmentResponse
                    )
                except PluginDropped as error:
                    return CreateResult(None, merged, error=str(error), dropped=[*dropped, error.plugin], replies=replies)
                except PluginCallError as error:
                    return CreateResult(None, merged, error=f"validator plugin {validator.id} failed: {error.message}",
                                        dropped=dropped, replies=replies)
                if reply.reject:
                    return CreateResult(
                        None, merged,
                        error=f"validator {validator.id} rejected container adjustment, reason: {reply.reason}",
                        dropped=dropped, replies=replies,
                    )
        return CreateResult(apply_like_generator(pristine, merged), merged, dropped=dropped, replies=replies)

    async def start_container(self, pod: model.Pod, container: model.Container) -> None:
        current = self.containers.get(container.id, container)
        await self._event(Event.START_CONTAINER, pod, current)
        self.containers[container.id] = replace(current, state=api_pb2.CONTAINER_RUNNING)
        await self._event(Event.POST_START_CONTAINER, pod, self.containers[container.id])

    async def stop_container(self, pod: model.Pod, container: model.Container) -> None:
        """Send StopContainer to subscribed plugins; errors are only logged, as the runtime does."""
        current = self.containers.get(container.id, container)
        for link in list(self.plugins):
            if not link.subscribed(Event.STOP_CONTAINER):
                continue
            request = api_pb2.StopContainerRequest(
                pod=convert.pod_to_proto(pod), container=convert.container_to_proto(current)
            )
            try:
                await self._call(link, "StopContainer", request, api_pb2.StopContainerResponse, metadata=())
            except PluginCallError as error:
                self._note(f"StopContainer error ignored: {error}")
            except PluginDropped:
                continue
        if container.id in self.containers:
            self.containers[container.id] = replace(current, state=api_pb2.CONTAINER_STOPPED)

    async def remove_container(self, pod: model.Pod, container: model.Container) -> None:
        """Send RemoveContainer to subscribed plugins; errors are only logged, as the runtime does."""
        current = self.containers.pop(container.id, container)
        for link in list(self.plugins):
            if not link.subscribed(Event.REMOVE_CONTAINER):
                continue
            try:
                await self._send_event(link, Event.REMOVE_CONTAINER, pod, current)
            except PluginCallError as error:
                self._note(f"RemoveContainer error ignored: {error}")
            except PluginDropped:
                continue

    async def call_raw(self, link: PluginLink, service: str, method: str, payload: bytes) -> Any:
        """Send any request and return the ttrpc Response envelope; used for unknown-method tests."""
        stream_id, data = link.protocol.connection.send_request(
            service, method, payload, timeout_nano=int(self.request_timeout * 1e9)
        )
        future = asyncio.get_running_loop().create_future()
        link.protocol.calls[stream_id] = future
        link.protocol.write(data)
        return await asyncio.wait_for(future, self.request_timeout)

    def send_raw(self, link: PluginLink, data: bytes) -> None:
        """Write bytes as they are to a plugin's connection (malformed frame tests)."""
        link.protocol.write(data)


class MergeConflict(Exception):
    """Two plugins claimed the same field, as the runtime's ownership check reports it."""


class _Merge:
    """Collect plugin adjustments the way the NRI runtime library merges them.

    `view` is the container as the next plugin sees it; `adjustment()` is
    the merged adjustment sent to validators and applied to the spec.
    """

    def __init__(self, pristine: model.Container):
        self.view = pristine
        self.args: tuple[str, ...] | None = None
        self.env: list[tuple[str, str]] = []
        self.mounts: list[model.Mount] = []
        self.seccomp: Any = None
        self.hooks: list[model.Hook] = []
        self.args_owner = ""
        self.env_owners: dict[str, str] = {}
        self.mount_owners: dict[str, str] = {}
        self.seccomp_owner = ""

    def apply(self, adjustment: model.Adjustment, plugin: str) -> None:
        self._apply_mounts(adjustment.mounts, plugin)
        self._apply_env(adjustment.env, plugin)
        self._apply_args(adjustment.args, plugin)
        if adjustment.seccomp is not None:
            if self.seccomp_owner and self.seccomp_owner != plugin:
                raise MergeConflict(f'plugins "{plugin}" and "{self.seccomp_owner}" both tried to set seccomp policy')
            self.seccomp, self.seccomp_owner = adjustment.seccomp, plugin
        # Hooks have no owner: every plugin's hooks are appended in plugin order.
        if adjustment.hooks:
            self.hooks.extend(adjustment.hooks)
            self.view = replace(self.view, hooks=self.view.hooks + adjustment.hooks)

    def _apply_args(self, args: tuple[str, ...] | None, plugin: str) -> None:
        if not args:
            return
        if args[0] == "":
            self.args_owner = ""
            args = args[1:]
        if self.args_owner and self.args_owner != plugin:
            raise MergeConflict(f'plugins "{plugin}" and "{self.args_owner}" both tried to set Args')
        self.args_owner = plugin
        self.args = tuple(args)
        self.view = replace(self.view, args=self.args)

    def _apply_env(self, env: tuple[tuple[str, str], ...], plugin: str) -> None:
        if not env:
            return
        removed = {key[1:] for key, _ in env if key.startswith("-")}
        modified = {key for key, _ in env if not key.startswith("-")}
        self.env = [(key, value) for key, value in self.env if key not in removed]
        for key in removed:
            self.env_owners.pop(key, None)
        kept = [entry for entry in self.view.env if entry.split("=", 1)[0] not in removed | modified]
        for key, value in env:
            if key.startswith("-"):
                continue
            owner = self.env_owners.get(key)
            if owner and owner != plugin:
                raise MergeConflict(f'plugins "{plugin}" and "{owner}" both tried to set environment variable "{key}"')
            self.env_owners[key] = plugin
            self.env.append((key, value))
            kept.append(f"{key}={value}")
        self.view = replace(self.view, env=tuple(kept))

    def _apply_mounts(self, mounts: tuple[model.Mount, ...], plugin: str) -> None:
        if not mounts:
            return
        removed = {m.destination[1:]: m for m in mounts if m.destination.startswith("-")}
        added = [m for m in mounts if not m.destination.startswith("-")]
        modified = {m.destination for m in added}
        self.mounts = [m for m in self.mounts if m.destination not in removed]
        for destination in removed:
            self.mount_owners.pop(destination, None)
        kept = [m for m in self.view.mounts if m.destination not in removed and m.destination not in modified]
        for mount in added:
            owner = self.mount_owners.get(mount.destination)
            if owner and owner != plugin:
                raise MergeConflict(f'plugins "{plugin}" and "{owner}" both tried to set mount "{mount.destination}"')
            self.mount_owners[mount.destination] = plugin
            self.mounts.append(mount)
        # Removal markers with no addition of the same destination are forwarded.
        for destination, marker in removed.items():
            if destination not in modified:
                self.mounts.append(marker)
        self.view = replace(self.view, mounts=tuple(kept + added))

    def adjustment(self) -> model.Adjustment:
        return model.Adjustment(
            args=self.args, env=tuple(self.env), mounts=tuple(self.mounts), seccomp=self.seccomp,
            hooks=tuple(self.hooks),
        )


def apply_like_generator(container: model.Container, adjustment: model.Adjustment) -> model.Container:
    """Apply a merged adjustment to a container the way the runtime's OCI spec generator does.

    * args: a non-empty list replaces the argv;
    * env: when any key is adjusted, the existing entries are rebuilt in
      order. An adjusted key takes the place of its first occurrence; a
      later duplicate of it is set again afterwards and overwrites the
      adjusted value (every key keeps one entry); entries without "=" are
      dropped; new keys are appended. A "-KEY" marker removes KEY;
    * mounts: a "-/path" marker removes mounts whose destination is exactly
      "/path"; an added mount replaces mounts with exactly its destination;
      the list is then sorted, stably, by the number of "/" in the cleaned
      destination;
    * hooks: appended after the container's own createContainer hooks.
    """
    args = container.args
    if adjustment.args:
        args = tuple(adjustment.args)
    env = _generate_env(container.env, adjustment.env)
    mounts = list(container.mounts)
    if adjustment.mounts:
        for mount in adjustment.mounts:
            if mount.destination.startswith("-"):
                target = mount.destination[1:]
                mounts = [m for m in mounts if m.destination != target]
                continue
            mounts = [m for m in mounts if m.destination != mount.destination]
            mounts.append(mount)
        mounts.sort(key=lambda m: posixpath.normpath(m.destination).count("/"))
    return replace(container, args=args, env=env, mounts=tuple(mounts), hooks=container.hooks + adjustment.hooks)


def _generate_env(env: tuple[str, ...], adjusted: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    if not adjusted:
        return env
    pending: dict[str, tuple[str, str]] = {}
    for key, value in adjusted:
        pending[key[1:] if key.startswith("-") else key] = (key, value)

    result: list[str] = []

    def set_variable(name: str, value: str) -> None:
        prefix = name + "="
        for position, entry in enumerate(result):
            if entry.startswith(prefix):
                result[position] = prefix + value
                return
        result.append(prefix + value)

    for entry in env:
        name, separator, value = entry.partition("=")
        if not separator:
            continue
        if name in pending:
            key, new_value = pending.pop(name)
            if not key.startswith("-"):
                set_variable(key, new_value)
            continue
        set_variable(name, value)

    for key, value in adjusted:
        if key.startswith("-"):
            continue
        if key in pending:
            set_variable(key, value)
    return tuple(result)
