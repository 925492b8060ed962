"""Local HTTP endpoint for probes and Prometheus.

* `/healthz`: 200 while the process serves requests;
* `/readyz`: 200 when the plugin is registered with the runtime and has
  answered Synchronize on the current connection, else 503;
* `/metrics`: the plugin's Prometheus metrics in the text format.

The endpoint never touches the NRI socket: the runtime registers one new
connection at a time, and a probe that connects to the socket holds up the
registration of every plugin behind it.

Known limitations: the server reads one HTTP/1.x GET request per
connection, answers it and closes; it is meant for kubelet probes and a
Prometheus scraper on the node, not for general clients.
"""

import asyncio
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubefence.common.logs import get_logger
from kubefence.nri.metrics import Metrics

# Request line and headers must fit in this many bytes.
MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0


def parse_address(address: str) -> tuple[str, int]:
    """Split "host:port"; an empty host means all interfaces, port 0 an ephemeral port."""
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid metrics address {address!r}; expected HOST:PORT, for example 127.0.0.1:9464")
    return host.strip("[]") or "0.0.0.0", int(port)


class HealthServer:
    """Serve /healthz, /readyz and /metrics on `address`."""

    def __init__(self, address: str, metrics: Metrics, ready: Callable[[], bool]):
        self.host, self.port = parse_address(address)
        self.metrics = metrics
        self.ready = ready
        self.log = get_logger("kubefence.nri.health")
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self.server.sockets or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self.log.info("health endpoint listening", host=self.host, port=self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Return status, content type and body for one request."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        path = path.split("?", 1)[0]
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            if self.ready():
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", b"not registered with the runtime or not synchronized\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        return 404, "text/plain", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        if len(head) > MAX_REQUEST_HEAD:
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            status, content_type, body = 400, "text/plain", b"bad request\n"
            method = ""
        else:
            method = parts[0]
            status, content_type, body = self.respond(method, parts[1])
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
        header = (
            f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        writer.write(header if method == "HEAD" else header + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()
