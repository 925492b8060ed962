"""Run the webhook: policy, TLS, the FastAPI app under uvicorn, and the background tasks.

Start-up runs in this order, and the server accepts connections only after
every step succeeded, so /readyz never reports ready without a policy and a
certificate:

1. load the policy (the file given, or the embedded default);
2. find the TLS pair, or generate a self-signed one for local use;
3. build the app and the uvicorn Config, and load the Config, which builds
   the live ssl.SSLContext (`WebhookServer.ssl_context`);
4. load the certificate through the reloader (not ready until it passes its
   checks) and start the policy watcher and the certificate reloader;
5. serve until SIGINT or SIGTERM, which is a clean exit.
"""

import asyncio
import gc
import ipaddress
import math
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from kubefence.certs import pki
from kubefence.certs.reload import CertificateReloader, ReloadMetrics
from kubefence.common.logs import get_logger
from kubefence.common.policy import DEFAULT_POLICY
from kubefence.webhook.app import create_app
from kubefence.webhook.state import PolicyWatcher, WebhookState

# First-generation threshold of the cyclic garbage collector: tracked
# objects (dicts, lists) allocated and not yet freed between two
# collections. One 270 KB AdmissionReview holds about 8,500 dicts and
# lists, so Python's default of 700 runs the collector about 12 times per
# such review. With this value a review of that size triggers none.
GC_FIRST_GENERATION_THRESHOLD = 50_000

# Go HTTP clients such as kube-apiserver close idle connections after 90 s.
# A longer server-side timeout lets them reuse connections instead of
# paying a new TLS handshake.
KEEP_ALIVE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class ServeSettings:
    """Options of `kubefence webhook`."""

    host: str = "0.0.0.0"
    port: int = 8443
    # PEM files; both or neither. Neither: a self-signed pair is generated.
    tls_cert_file: str | None = None
    tls_private_key_file: str | None = None
    # Policy YAML file; None: the embedded default policy, never reloaded.
    policy_file: str | None = None
    # The webhook's own namespace, always exempt; empty when unknown.
    namespace: str = ""
    # Seconds between two reads of the policy file.
    policy_interval: float = 2.0
    # Seconds between two reads of the certificate files.
    certificate_interval: float = 10.0
    keep_alive_timeout: int = KEEP_ALIVE_TIMEOUT_SECONDS
    # Where a generated self-signed pair is written; None: a new temporary directory.
    self_signed_dir: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_private_key_file is None):
            raise ValueError(
                "--tls-cert-file and --tls-private-key-file must be given together "
                f"(got cert {self.tls_cert_file!r}, key {self.tls_private_key_file!r})"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"invalid port {self.port!r}; expected 0 to 65535")
        if not math.isfinite(self.policy_interval) or self.policy_interval <= 0:
            raise ValueError(f"invalid policy interval {self.policy_interval!r}; expected a positive finite number of seconds")
        if not math.isfinite(self.certificate_interval) or self.certificate_interval <= 0:
            raise ValueError(
                f"invalid certificate interval {self.certificate_interval!r}; expected a positive finite number of seconds"
            )


class StartupError(Exception):
    """A start-up step failed; the message names the file or address and the reason, on one line."""


@dataclass(frozen=True)
class TlsFiles:
    cert_file: str
    key_file: str
    # The CA that signed a generated pair; None for files the user gave.
    ca_file: str | None = None


def check_tls_files(cert_file: str, key_file: str) -> None:
    """Raise StartupError naming the file when the serving pair cannot be read, is not PEM, or does not match.

    An expired certificate passes: the pod then stays unready until the
    reloader finds a valid pair.
    """
    contents = {}
    for option, path in (("--tls-cert-file", cert_file), ("--tls-private-key-file", key_file)):
        try:
            contents[option] = Path(path).read_bytes()
        except OSError as error:
            raise StartupError(f"{option} {path!r}: cannot read: {error.strerror or error}") from None
    try:
        certificate = pki.load_certificates(contents["--tls-cert-file"], f"--tls-cert-file {cert_file!r}")[0]
        key = pki.load_private_key(contents["--tls-private-key-file"], f"--tls-private-key-file {key_file!r}")
    except pki.CertificateError as error:
        raise StartupError(str(error)) from None
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise StartupError(
            f"--tls-private-key-file {key_file!r} does not belong to the certificate in --tls-cert-file {cert_file!r}"
        )


def display_address(host: str, port: int) -> str:
    """Write `host` and `port` as host:port, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a TCP socket to `host` and `port` (uvicorn listens on it). Raises StartupError naming host:port."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, kind, protocol)
    except OSError as error:
        raise StartupError(f"cannot listen on {display_address(host, port)}: {error.strerror or error}") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as error:
        listener.close()
        raise StartupError(f"cannot listen on {display_address(host, port)}: {error.strerror or error}") from None
    return listener


def generate_self_signed(directory: str | None, host: str) -> TlsFiles:
    """Write a new CA and a serving pair for localhost (and `host`) into `directory`.

    The key file is created with mode 0600. For local use only: a cluster
    gets its certificate from the chart or cert-manager.
    """
    target = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="kubefence-webhook-"))
    target.mkdir(parents=True, exist_ok=True)
    dns_names = ["localhost"]
    ip_addresses = ["127.0.0.1", "::1"]
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified and str(address) not in ip_addresses:
            ip_addresses.append(str(address))
    except ValueError:
        if host not in dns_names:
            dns_names.append(host)
    # CA first, then the serving pair it signs; only the CA certificate is
    # meant to leave this directory.
    ca = pki.generate_ca(common_name="kubefence-webhook-local-ca")
    serving = pki.generate_serving(ca, dns_names=dns_names, ip_addresses=ip_addresses)
    ca_file = target / "ca.crt"
    cert_file = target / "tls.crt"
    key_file = target / "tls.key"
    ca_file.write_bytes(ca.cert_pem)
    cert_file.write_bytes(serving.cert_pem)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(serving.key_pem)
    return TlsFiles(str(cert_file), str(key_file), str(ca_file))


class WebhookServer:
    """A configured webhook, ready to serve: the state, the app and the uvicorn server."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.log = get_logger("kubefence.webhook.server")
        self.state = WebhookState(own_namespace=settings.namespace)
        self.temporary_dir: str | None = None

        # 1. Policy: a bad file at start is fatal, because there is no last good one.
        self.policy_watcher: PolicyWatcher | None = None
        if settings.policy_file is not None:
            self.policy_watcher = PolicyWatcher(settings.policy_file, self.state)
            self.policy_watcher.load_initial()
        else:
            self.state.policy = DEFAULT_POLICY
            self.log.info("no policy file given; using the embedded default policy")

        # 2. TLS pair.
        if settings.tls_cert_file is not None:
            self.tls = TlsFiles(settings.tls_cert_file, settings.tls_private_key_file)
            check_tls_files(self.tls.cert_file, self.tls.key_file)
        else:
            self.tls = generate_self_signed(settings.self_signed_dir, settings.host)
            if settings.self_signed_dir is None:
                # A temporary directory holding a private key: removed on exit.
                self.temporary_dir = os.path.dirname(self.tls.key_file)
            self.log.warning(
                "no certificate given; generated a self-signed pair for local use",
                ca_file=self.tls.ca_file,
                cert_file=self.tls.cert_file,
            )

        # 3. App and uvicorn Config. Loading the Config builds the SSLContext
        # now, so a bad certificate fails here and not at the first request.
        self.app = create_app(self.state)
        self.config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            ssl_certfile=self.tls.cert_file,
            ssl_keyfile=self.tls.key_file,
            timeout_keep_alive=settings.keep_alive_timeout,
            timeout_graceful_shutdown=10,
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="off",
        )
        self.config.load()
        self.ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server = uvicorn.Server(self.config)
        self.certificate_reloader = CertificateReloader(
            self.ssl_context,
            self.tls.cert_file,
            self.tls.key_file,
            interval=settings.certificate_interval,
            metrics=ReloadMetrics(self.state.metrics.registry),
        )
        # Not ready until the reloader has checked and loaded the pair (at start of serve).
        self.state.readiness.set("certificate", self._certificate_check)
        self.state.readiness.set_detail("certificate", lambda: self.certificate_reloader.readiness().as_dict())

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The live SSLContext uvicorn serves with; loading a new chain into it affects new handshakes."""
        return self.config.ssl

    def start_certificate_reloader(self) -> asyncio.Task:
        """Load the certificate files through the reloader, then poll them in a task on this event loop.

        The "certificate" readiness check passes only while the reloader has
        loaded a pair that passed its checks and has not expired. A pod whose
        mounted certificate is expired at start therefore never becomes ready. A
        certificate close to expiry keeps the pod ready and shows in the
        "certificate" detail of /readyz.
        """
        self.certificate_reloader.check_once()
        return asyncio.create_task(self.certificate_reloader.run())

    def _certificate_check(self) -> str | None:
        report = self.certificate_reloader.readiness()
        return None if report.ready else report.reason

    async def serve(self) -> None:
        """Run the background tasks and serve until SIGINT or SIGTERM."""
        # 4. The listening socket, bound here so that a failure names host:port.
        listener = bind_socket(self.settings.host, self.settings.port)

        # 5. Background tasks, cancelled when the server stops.
        tasks: list[asyncio.Task] = []
        if self.policy_watcher is not None:
            tasks.append(asyncio.create_task(self.policy_watcher.run(self.settings.policy_interval)))
        tasks.append(self.start_certificate_reloader())

        self.log.info(
            "webhook starting",
            host=self.settings.host,
            port=self.settings.port,
            policy_file=self.settings.policy_file or "",
            policy_interval=self.settings.policy_interval,
            namespace=self.settings.namespace,
            keep_alive_timeout=self.settings.keep_alive_timeout,
            cert_file=self.tls.cert_file,
            certificate_interval=self.settings.certificate_interval,
            readiness_checks=self.state.readiness.names(),
        )

        # 6. Serve; uvicorn handles SIGINT and SIGTERM with a graceful
        # shutdown and then re-raises the signal with the handler that was
        # installed before. A no-op SIGTERM handler makes that a clean exit
        # (status 0), as a Kubernetes pod stop is not an error.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _ignore_signal)

        try:
            await self.server.serve(sockets=[listener])
        finally:
            listener.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.log.info("webhook stopped")


def _ignore_signal(signum: int, frame: object) -> None:
    return None


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the request path as far as is safe.

    Call once, after start-up built its long-lived objects. They (about
    60,000 from the imports, the app and the policy) move to the permanent
    generation, so a full collection no longer traverses them. Replaying
    the huge-pod review in one process, that removed full-collection pauses
    of about 28 ms of CPU. Reference counting still frees these objects.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION_THRESHOLD, second, third)


def run(settings: ServeSettings) -> None:
    """Build the server and serve until stopped."""
    server = WebhookServer(settings)
    tune_garbage_collector()
    # uvicorn's choice of event loop (uvloop when installed).
    loop_factory = server.config.get_loop_factory() if hasattr(server.config, "get_loop_factory") else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(server.serve())
    finally:
        if server.temporary_dir is not None:
            shutil.rmtree(server.temporary_dir, ignore_errors=True)
