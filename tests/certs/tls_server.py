"""Test helpers: a uvicorn server over real TLS with a certificate reloader, and a Secret volume writer.

The ASGI app replaces the webhook: it returns an allowed response echoing the
request uid for an AdmissionReview POST, and 200 for GET.
"""

import asyncio
import hashlib
import itertools
import os
import socket
import ssl
import threading
from pathlib import Path

import orjson
import uvicorn
import uvloop

from kubefence.certs.reload import CertificateReloader


async def review_app(scope, receive, send):
    """Return an allowed AdmissionReview response for a POST, and 200 'ok' for a GET."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "POST":
        review = orjson.loads(body)
        payload = orjson.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": True},
            }
        )
    else:
        payload = b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


class SecretVolume:
    """Write files the way the kubelet updates a Secret volume: a new directory, then a `..data` symlink swap."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._versions = itertools.count(1)

    def write(self, files: dict[str, bytes]) -> None:
        version = self.root / f"..version_{next(self._versions)}"
        version.mkdir()
        for name, content in files.items():
            descriptor = os.open(version / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(content)
        temporary = self.root / "..data_tmp"
        temporary.symlink_to(version.name)
        os.replace(temporary, self.root / "..data")
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    def path(self, name: str) -> Path:
        return self.root / name


class TlsServer:
    """uvicorn serving `review_app` over TLS on 127.0.0.1 in its own thread and event loop.

    The reloader works on uvicorn's own SSLContext (`config.ssl`), the one
    every new connection is made from.
    """

    def __init__(self, cert_file: Path, key_file: Path, *, reload_interval: float = 0.0, app=review_app):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.config = uvicorn.Config(
            app,
            ssl_certfile=str(cert_file),
            ssl_keyfile=str(key_file),
            log_level="warning",
            lifespan="off",
            timeout_keep_alive=60,
        )
        self.config.load()
        self.reloader = CertificateReloader(self.config.ssl, cert_file, key_file, interval=reload_interval or 10.0)
        self._run_reloader = reload_interval > 0
        self.server = uvicorn.Server(self.config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, daemon=True)

    def start(self) -> "TlsServer":
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the TLS test server did not start within 10 s")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)

    def call(self, function):
        """Run `function()` on the server's event loop thread, as the webhook runs its reloader, and return its result."""

        async def wrapper():
            return function()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    def _thread_main(self) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.reloader.check_once()
        reloader_task = asyncio.create_task(self.reloader.run()) if self._run_reloader else None
        serve = asyncio.create_task(self.server.serve(sockets=[self._socket]))
        while not self.server.started and not serve.done():
            await asyncio.sleep(0.01)
        self._started.set()
        await serve
        if reloader_task:
            reloader_task.cancel()


def served_fingerprint(port: int, server_name: str = "localhost") -> str:
    """Open a new TLS connection and return the SHA-256 fingerprint of the certificate the server presents."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as connection:
            return hashlib.sha256(connection.getpeercert(binary_form=True)).hexdigest()
