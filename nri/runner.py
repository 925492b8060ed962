"""The plugin's asyncio shell: connect, register, serve, reconnect.

Start-up and every reconnect follow the same steps:

1. take the per-node instance lock under `state_dir` (once per process);
2. connect to `socket_path`;
3. send Runtime/RegisterPlugin at once: the runtime registers one new
   connection at a time, and an idle connection holds up every plugin
   behind it;
4. reply to Configure, Synchronize and the subscribed events until the
   runtime closes the connection;
5. wait (0.25 s at first, doubling up to 5 s) and go back to step 2 with a
   fresh Connection and Session, so stream ids start at 1 again and nothing
   from the old connection is answered.

Handlers run synchronously inside `data_received`, so a reply is written
before the next request is read and the runtime's 2 s request deadline is
met by the handlers' own speed. Work that may block (audit files) runs on
one worker thread after the reply.
"""

import asyncio
import errno
import fcntl
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kubefence.common.logs import get_logger
from kubefence.nri.errors import ProtocolError
from kubefence.nri.plugin import RUNTIME_SERVICE, VALIDATE_EVENT, Plugin, Session
from kubefence.nri.ttrpc import (
    INVALID_ARGUMENT,
    UNIMPLEMENTED,
    Connection,
    InvalidRequestReceived,
    RequestReceived,
)

LOCK_FILE_NAME = "kubefence-nri.lock"
FIRST_RETRY_DELAY = 0.25
MAX_RETRY_DELAY = 5.0
# RegisterPlugin deadline, as the NRI Go stub uses; the runtime may hold a
# new connection for its whole registration timeout (5 s by default) while
# it registers another plugin.
REGISTRATION_TIMEOUT = 5.0
REGISTRATION_TIMEOUT_NANO = int(REGISTRATION_TIMEOUT * 1e9)
# Seconds between repeats of the same log message while retrying.
LOG_INTERVAL = 30.0


class RateLimitedLog:
    """Log a repeating message at most once per interval, with the count of skipped repeats."""

    def __init__(self, log: Any, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, event: str, **fields: Any) -> None:
        now = self.clock()
        last = self._last.get(event)
        if last is not None and now - last < self.interval:
            self._skipped[event] = self._skipped.get(event, 0) + 1
            return
        self._last[event] = now
        skipped = self._skipped.pop(event, 0)
        self.log.warning(event, repeats_not_logged=skipped, **fields)

    def reset(self, event: str) -> None:
        self._last.pop(event, None)
        self._skipped.pop(event, None)


class Backoff:
    """Reconnect delays: FIRST_RETRY_DELAY, doubling, capped at MAX_RETRY_DELAY."""

    def __init__(self, first: float = FIRST_RETRY_DELAY, cap: float = MAX_RETRY_DELAY):
        self.first = first
        self.cap = cap
        self._next = first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class PluginProtocol(asyncio.Protocol):
    """One connection to the runtime: bytes in, replies out."""

    def __init__(self, runner: "Runner", session: Session):
        self.runner = runner
        self.session = session
        self.connection = Connection.for_plugin()
        self.transport: asyncio.Transport | None = None
        self.register_stream = 0
        self.registered = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.peer_error: str = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        request = self.session.registration_request()
        self.register_stream, data = self.connection.send_request(
            RUNTIME_SERVICE,
            "RegisterPlugin",
            request.SerializeToString(),
            timeout_nano=REGISTRATION_TIMEOUT_NANO,
        )
        transport.write(data)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            events = self.connection.receive_data(data)
        except ProtocolError as error:
            self.runner.metrics.protocol_errors.inc()
            self.runner.log.warning("runtime broke the NRI wire protocol; closing the connection", error=str(error))
            self.peer_error = str(error)
            self.transport.abort()
            return

        transport = self.transport
        for event in events:
            if type(event) is RequestReceived:
                started = time.perf_counter()
                request = event.request
                outcome = self.session.dispatcher.dispatch(request.service, request.method, request.payload)
                transport.write(self.connection.send_response(event.stream_id, outcome.payload, outcome.status))
                self.runner.metrics.handling_seconds.labels(method=request.method).observe(
                    time.perf_counter() - started
                )
                if outcome.error is not None:
                    self.runner.log.error(
                        "request handler failed",
                        method=request.method,
                        error=repr(outcome.error),
                        exc_info=outcome.error,
                    )
                elif outcome.status is not None and outcome.status[0] == UNIMPLEMENTED:
                    self.runner.log.debug(
                        "runtime called an unknown method", service=request.service, method=request.method
                    )
            elif type(event) is InvalidRequestReceived:
                self.runner.log.debug("runtime sent a request that does not decode", error=event.error)
                transport.write(self.connection.send_response(event.stream_id, status=(INVALID_ARGUMENT, event.error)))
            elif event.stream_id == self.register_stream and not self.registered.done():
                status = event.response.status if event.response.HasField("status") else None
                if status is None or status.code == 0:
                    self.registered.set_result(True)
                else:
                    self.registered.set_exception(
                        RuntimeError(f"runtime rejected RegisterPlugin: code {status.code}: {status.message}")
                    )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.registered.done():
            self.registered.set_exception(ConnectionError("connection closed before RegisterPlugin was answered"))
            self.registered.exception()  # mark retrieved
        if not self.closed.done():
            self.closed.set_result(exc)


class Runner:
    """Keep the plugin registered with the runtime until `stop` is set."""

    def __init__(self, config: Any, plugin: Plugin, *, stop: asyncio.Event | None = None):
        self.config = config
        self.plugin = plugin
        self.metrics = plugin.metrics
        self.stop = stop or asyncio.Event()
        self.log = get_logger("kubefence.nri.runner")
        self.retry_log = RateLimitedLog(self.log)
        self.backoff = Backoff()
        self.registrations = 0
        self.protocol: PluginProtocol | None = None
        self._lock_fd: int | None = None

    @property
    def ready(self) -> bool:
        """True while registered and synchronized on the current connection."""
        protocol = self.protocol
        return (
            protocol is not None
            and protocol.registered.done()
            and not protocol.registered.cancelled()
            and protocol.registered.exception() is None
            and protocol.session.synchronized
            and not protocol.closed.done()
        )

    async def acquire_lock(self) -> bool:
        """Wait for the per-node instance lock; return False if `stop` was set first."""
        state_dir = self.config.state_dir
        os.makedirs(state_dir, exist_ok=True)
        path = os.path.join(state_dir, LOCK_FILE_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not announced:
                    self.log.warning("another instance is active; waiting for its lock", lock=path)
                    announced = True
                if await self._sleep(0.5):
                    os.close(fd)
                    return False
                continue
            self._lock_fd = fd
            self.log.info("instance lock acquired", lock=path)
            return True

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless `stop` is set first; return True when stopping."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        if not await self.acquire_lock():
            return
        try:
            while not self.stop.is_set():
                await self._connect_once()
                if self.stop.is_set():
                    break
                if await self._sleep(self.backoff.next_delay()):
                    break
        finally:
            self.release_lock()

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        path = self.config.socket_path
        session = self.plugin.new_session()
        try:
            _, protocol = await loop.create_unix_connection(lambda: PluginProtocol(self, session), path)
        except OSError as error:
            self.retry_log.warning(
                "cannot connect to the NRI socket; retrying",
                socket=path,
                errno=errno.errorcode.get(error.errno or 0, str(error.errno)),
                error=str(error),
            )
            return
        self.protocol = protocol
        self.retry_log.reset("cannot connect to the NRI socket; retrying")

        stop_wait = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait(
                {protocol.registered, stop_wait}, timeout=REGISTRATION_TIMEOUT * 2, return_when=asyncio.FIRST_COMPLETED
            )
            if self.stop.is_set():
                protocol.transport.close()
                await protocol.closed
                return
            problem = ""
            if not protocol.registered.done():
                problem = f"no reply to RegisterPlugin within {REGISTRATION_TIMEOUT * 2:.0f} s"
            elif protocol.registered.exception() is not None:
                problem = str(protocol.registered.exception())
            if problem:
                self.retry_log.warning("registration with the runtime failed; retrying", socket=path, error=problem)
                protocol.transport.abort()
                await protocol.closed
                return

            self.registrations += 1
            if self.registrations > 1:
                self.metrics.reconnects.inc()
            self.backoff.reset()
            self.log.info(
                "registered with the runtime",
                socket=path,
                plugin=f"{self.config.plugin_index}-{self.config.plugin_name}",
                registrations=self.registrations,
            )

            await asyncio.wait({protocol.closed, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if self.stop.is_set() and not protocol.closed.done():
                protocol.transport.close()
                await protocol.closed
                return
            self._after_close(protocol)
        finally:
            stop_wait.cancel()

    def _after_close(self, protocol: PluginProtocol) -> None:
        session = protocol.session
        if (
            session.configured_events & VALIDATE_EVENT
            and not session.sync_received
            and not protocol.peer_error
        ):
            # Runtimes before NRI v0.10 reject bit 0x2000 after the Configure
            # reply and close the connection before Synchronize.
            self.plugin.validator_refused = True
            self.log.warning(
                "runtime closed the connection after Configure; registering again without "
                "ValidateContainerAdjustment (runtime older than NRI v0.10?)",
                runtime=session.runtime,
            )
        self.log.warning("connection to the runtime closed; reconnecting", runtime=session.runtime)


class DeferredWork:
    """Run plugin work after the replies, in order, on one worker thread.

    Work submitted with a key replaces work still queued under the same key,
    keeping its place in the queue. The plugin keys audit writes and
    removals by container id, because only the last operation on a record
    matters. The queue holds at most `max_pending` entries: an audit write
    with fsync takes milliseconds, so a burst of creates faster than the disk
    could otherwise grow it without bound. Work beyond the limit is dropped,
    counted and logged; the next Synchronize rebuilds the audit records.
    """

    def __init__(self, log: Any, max_pending: int = 10_000):
        self.log = log
        self.max_pending = max_pending
        self.dropped = 0
        self._drop_log = RateLimitedLog(log)
        self._pending: dict[Any, Callable[[], None]] = {}
        self._condition = threading.Condition()
        self._sequence = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="kubefence-nri-worker", daemon=True)
        self._thread.start()

    def __call__(self, fn: Callable[[], None], key: Any = None) -> None:
        with self._condition:
            if key is None:
                key = ("unkeyed", next(self._sequence))
            if key not in self._pending and len(self._pending) >= self.max_pending:
                self.dropped += 1
                self._drop_log.warning("deferred work queue full; dropping work", dropped=self.dropped)
                return
            self._pending[key] = fn
            self._condition.notify()

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the queued work and stop the worker."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closed:
                    self._condition.wait()
                if not self._pending:
                    return
                key = next(iter(self._pending))
                fn = self._pending.pop(key)
            try:
                fn()
            except Exception as error:  # the reply went out already; keep the worker alive
                self.log.warning("deferred plugin work failed", error=repr(error), exc_info=error)
