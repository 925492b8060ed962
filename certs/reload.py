"""Reload the serving certificate into a live `ssl.SSLContext` when its files change.

A Secret volume changes by swapping a symlink (`..data`) to a new directory,
which file-event libraries do not report reliably, so the reloader polls:
it hashes the content of both files and acts only when the hash changes.

A changed pair is checked before it touches the live context: both parse, the
key belongs to the certificate, the certificate is valid now, and a scratch
SSLContext accepts it. Only then is it loaded into the live context with
`load_cert_chain`. Handshakes after that use it, and connections already
open keep the certificate they started with. A pair that fails any check is
logged as an error, counted in
`kubefence_certificate_reloads_total{result="failure"}` (see ReloadMetrics)
and ignored, so the last good pair keeps serving. The same bad content is
reported once, not on every poll.

Known limitation: the server's TLS session cache is not flushed on reload, so
a client may resume a session made under the previous certificate without
seeing the new one. Only a client that verified the old certificate can
have such a session.
"""

import asyncio
import datetime
import hashlib
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from kubefence.certs import pki
from kubefence.common.logs import get_logger

METRIC_RELOADS = "kubefence_certificate_reloads"
METRIC_NOT_AFTER = "kubefence_certificate_not_after_timestamp_seconds"


class ReloadMetrics:
    """The reloader's metrics in one registry: reload attempts by result, and the loaded certificate's expiry.

    `kubefence_certificate_reloads_total{result}` counts loads of a changed
    pair (success, failure); `kubefence_certificate_not_after_timestamp_seconds`
    is the notAfter of the certificate in use, as a Unix time, for expiry alerts.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.reloads = Counter(
            METRIC_RELOADS,
            "Loads of a changed serving certificate into the live TLS context, by result (success, failure).",
            ["result"],
            registry=registry,
        )
        self.not_after = Gauge(
            METRIC_NOT_AFTER,
            "notAfter of the serving certificate in use, as a Unix time; 0 before the first load.",
            registry=registry,
        )
        # Children created up front, so both series are exported from the start.
        for result in ("success", "failure"):
            self.reloads.labels(result=result)


_default_metrics: ReloadMetrics | None = None


def default_metrics() -> ReloadMetrics:
    """Return the metrics in prometheus_client's default registry, registered on first use."""
    global _default_metrics
    if _default_metrics is None:
        _default_metrics = ReloadMetrics()
    return _default_metrics


# Outcomes of one `check_once`.
UNCHANGED = "unchanged"
RELOADED = "reloaded"
REJECTED = "rejected"


@dataclass(frozen=True)
class CertificateReadiness:
    """Readiness report of the serving certificate."""

    ready: bool
    """False when no certificate has been loaded or the loaded one has expired."""
    reason: str
    not_after: datetime.datetime | None
    expiring_soon: bool
    """True within the warning window before expiry. The pod stays ready, because
    every replica mounts the same Secret and all would leave the Service at once."""

    def as_dict(self) -> dict:
        """Return the report as JSON-ready values, with `not_after` in ISO 8601 (empty when unknown)."""
        return {
            "ready": self.ready,
            "reason": self.reason,
            "not_after": self.not_after.isoformat() if self.not_after else "",
            "expiring_soon": self.expiring_soon,
        }


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class CertificateReloader:
    """Poll `cert_file` and `key_file` and load a changed, valid pair into `ssl_context`.

    Call `check_once()` from the thread that runs the server's event loop, or
    before it starts. OpenSSL contexts are not safe to change while another
    thread creates connections from them. `run()` polls on the event loop.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        cert_file: str | Path,
        key_file: str | Path,
        interval: float = 10.0,
        *,
        expiry_warning: datetime.timedelta = datetime.timedelta(days=7),
        clock: Callable[[], datetime.datetime] = _utc_now,
        metrics: ReloadMetrics | None = None,
    ):
        if interval <= 0:
            raise ValueError(f"invalid reload interval {interval!r}; expected a positive number of seconds")
        self.ssl_context = ssl_context
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.interval = interval
        self.expiry_warning = expiry_warning
        self._clock = clock
        self.metrics = metrics or default_metrics()
        self._seen_digest: str | None = None
        self._not_after: datetime.datetime | None = None
        self._fingerprint = ""
        self.reloads = 0
        """Successful loads, the first one included."""

    @property
    def not_after(self) -> datetime.datetime | None:
        """Expiry of the loaded certificate; None until one has loaded."""
        return self._not_after

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the loaded certificate; empty until one has loaded."""
        return self._fingerprint

    def check_once(self) -> str:
        """Reload when the files changed; return UNCHANGED, RELOADED or REJECTED."""
        log = get_logger("kubefence.certs.reload")
        try:
            cert_pem = self.cert_file.read_bytes()
            key_pem = self.key_file.read_bytes()
            # A symlink swap between the two reads gives a mixed pair: wait for the next poll.
            if self.cert_file.read_bytes() != cert_pem:
                return UNCHANGED
        except OSError as error:
            digest = f"unreadable:{error.errno}"
            if digest != self._seen_digest:
                self._seen_digest = digest
                self.metrics.reloads.labels(result="failure").inc()
                log.error("certs.reload_failed", error=str(error), cert_file=str(self.cert_file), key_file=str(self.key_file))
            return REJECTED

        digest = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()
        if digest == self._seen_digest:
            return UNCHANGED
        self._seen_digest = digest

        try:
            certificate = self._validate(cert_pem, key_pem)
            with _PairFiles(cert_pem, key_pem) as (cert_path, key_path):
                # A scratch context first: a failed load_cert_chain can leave the
                # context it ran on without a usable key.
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
                self.ssl_context.load_cert_chain(cert_path, key_path)
        except (pki.CertificateError, ssl.SSLError, OSError) as error:
            self.metrics.reloads.labels(result="failure").inc()
            log.error(
                "certs.reload_failed",
                error=str(error),
                cert_file=str(self.cert_file),
                key_file=str(self.key_file),
                serving_fingerprint=self._fingerprint,
                serving_not_after=self._not_after.isoformat() if self._not_after else "",
            )
            return REJECTED

        self._not_after = certificate.not_valid_after_utc
        self._fingerprint = pki.fingerprint(certificate)
        self.reloads += 1
        self.metrics.reloads.labels(result="success").inc()
        self.metrics.not_after.set(self._not_after.timestamp())
        log.info(
            "certs.reloaded",
            cert_file=str(self.cert_file),
            fingerprint=self._fingerprint,
            serial=format(certificate.serial_number, "x"),
            not_after=self._not_after.isoformat(),
        )
        return RELOADED

    def _validate(self, cert_pem: bytes, key_pem: bytes):
        certificate, _ = pki.load_pair(cert_pem, key_pem, self._clock(), "serving certificate")
        if pki.is_ca(certificate):
            raise pki.CertificateError("serving certificate: is a CA certificate; expected an end-entity certificate")
        return certificate

    async def run(self) -> None:
        """Poll every `interval` seconds until cancelled."""
        log = get_logger("kubefence.certs.reload")
        while True:
            try:
                self.check_once()
            except Exception:  # keep polling: the last good pair is still in place
                log.exception("certs.reload_crashed", cert_file=str(self.cert_file))
            await asyncio.sleep(self.interval)

    def readiness(self) -> CertificateReadiness:
        """Report whether the loaded certificate can serve, and whether it expires soon."""
        if self._not_after is None:
            return CertificateReadiness(False, "no serving certificate loaded yet", None, False)
        now = self._clock()
        left = self._not_after - now
        if left <= datetime.timedelta(0):
            return CertificateReadiness(False, f"serving certificate expired at {self._not_after.isoformat()}", self._not_after, True)
        if left <= self.expiry_warning:
            return CertificateReadiness(
                True, f"serving certificate expires soon, at {self._not_after.isoformat()}", self._not_after, True
            )
        return CertificateReadiness(True, "serving certificate loaded", self._not_after, False)


class _PairFiles:
    """The exact bytes that were checked, as paths for load_cert_chain, which reads only files.

    On Linux they live in anonymous memory files (memfd), opened through
    /proc/self/fd, so reloading works on a read-only root filesystem and the
    key never reaches a disk. Elsewhere a private temporary directory is used.
    """

    def __init__(self, cert_pem: bytes, key_pem: bytes):
        self._contents = {"tls.crt": cert_pem, "tls.key": key_pem}
        self._descriptors: list[int] = []
        self._directory = ""

    def __enter__(self) -> tuple[str, str]:
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            paths = []
            for name, content in self._contents.items():
                descriptor = os.memfd_create(f"kubefence-{name}", os.MFD_CLOEXEC)
                self._descriptors.append(descriptor)
                view = memoryview(content)
                while view:
                    view = view[os.write(descriptor, view):]
                paths.append(f"/proc/self/fd/{descriptor}")
            return paths[0], paths[1]

        from kubefence.certs.files import CERT_MODE, KEY_MODE, write_files

        self._directory = tempfile.mkdtemp(prefix="kubefence-reload-")
        write_files(self._directory, {"tls.crt": (self._contents["tls.crt"], CERT_MODE), "tls.key": (self._contents["tls.key"], KEY_MODE)})
        return f"{self._directory}/tls.crt", f"{self._directory}/tls.key"

    def __exit__(self, *exc_info) -> None:
        for descriptor in self._descriptors:
            os.close(descriptor)
        self._descriptors.clear()
        if self._directory:
            shutil.rmtree(self._directory, ignore_errors=True)
