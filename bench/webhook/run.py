"""Benchmark the admission webhook against two references, with wrk over TLS.

Servers, measured one at a time in the same run:

* `nginx`: nginx returning a fixed AdmissionReview response (the ceiling
  for TLS plus HTTP/1.1 on this machine);
* `raw-asgi`: `raw_asgi.py` under uvicorn, the same mutation with no
  framework (what FastAPI costs);
* `kubefence`: `kubefence webhook`, the product.

Every point is one wrk run of `--duration` seconds: a sample AdmissionReview
POSTed at a fixed concurrency, over keep-alive connections or over a new
connection per request (`Connection: close`). The server runs on core 0
and wrk on core 1 (`taskset`), both on 127.0.0.1, with an ECDSA P-256
certificate from `kubefence.certs.pki`.

Two properties of wrk 4.1 (Debian) shape the `close` figures. It resumes
TLS sessions, so each new connection costs a TCP connect and a resumed
TLS 1.3 handshake, not a full one (nginx logs `$ssl_session_reused` as `r`
for these, and Python's ssl module resumes too). And its latency clock
starts when the request is written, after the handshake, so in `close`
mode the latency percentiles leave the handshake out while requests/s
includes it.

Run `python bench/webhook/run.py --help` for the options. Every process this
script starts is stopped before it exits, also on Ctrl-C, SIGTERM or error.
"""

import argparse
import datetime
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from kubefence.certs import pki

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent.parent
ADMISSION_DATA = REPOSITORY / "tests" / "data" / "admission"

# Sample name -> AdmissionReview file in tests/data/admission.
SAMPLES = {
    "small-opted-in": "02-opted-in-no-annotations-map.json",
    "small-not-opted-in": "01-not-opted-in.json",
    "huge-pod": "12-huge-pod.json",
}
SERVERS = ("nginx", "raw-asgi", "kubefence")
CONCURRENCY = (1, 8, 32)
CONNECTIONS = ("keep-alive", "close")

# --quick: fewer points, for a smoke run.
QUICK_SAMPLES = ("small-opted-in", "huge-pod")
QUICK_CONCURRENCY = (1, 8)
QUICK_CONNECTIONS = ("keep-alive",)
QUICK_DURATION_S = 3.0

SERVER_CORE = 0
CLIENT_CORE = 1

# Go net/http serving the same small-pod mutation on this kind of machine:
# one server core, keep-alive TLS, concurrency 8.
GO_REFERENCE_RPS = 2600.0

# Idle keep-alive timeout of the servers, in seconds. Above the 90 s that
# kube-apiserver's Go HTTP client keeps idle connections, as the webhook
# should be configured.
KEEPALIVE_TIMEOUT_S = 120

# Upper bounds so that no step can hang the run.
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
WRK_EXTRA_TIMEOUT_S = 30.0
# wrk counts a request that takes longer than this as a timeout error.
WRK_REQUEST_TIMEOUT_S = 5

TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class BenchmarkError(RuntimeError):
    """A server or wrk failed in a way that makes the figures meaningless."""


@dataclass
class Point:
    """The figures of one wrk run."""

    server: str
    sample: str
    connection: str
    concurrency: int
    requests_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    # Server CPU time (user + system) during the run divided by the requests
    # completed. It changes much less than req/s when other processes
    # compete for the server's core, so it compares servers across busy runs.
    server_cpu_us_per_request: float = 0.0
    # Share of the server core's time, in percent, not charged to the server
    # process during the run: other processes, the hypervisor (steal), and
    # in close mode possibly kernel work for connection set-up and tear-down.
    # Above a few percent, req/s and latency are worse than the server alone
    # would give.
    server_core_other_percent: float = 0.0
    # The same share for core 1, where wrk runs. wrk timestamps requests and
    # responses itself, so load there also lengthens the measured latency.
    client_core_other_percent: float = 0.0


@dataclass
class ServerRecord:
    """The outcome for one server in this run."""

    name: str
    status: str  # measured, skipped or failed
    note: str = ""
    pid: int = 0
    tls: str = ""
    response_bytes: dict[str, int] = field(default_factory=dict)


# --- wrk output -------------------------------------------------------------


def parse_time_ms(text: str) -> float:
    """Convert a wrk duration such as `845.00us` or `1.20ms` to milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"invalid wrk duration {text!r}; expected a number with us, ms, s, m or h")
    return float(match.group(1)) * TIME_UNITS_MS[match.group(2)]


def parse_wrk_output(output: str) -> dict:
    """Read requests/s, the latency percentiles, counts and errors from wrk's text output.

    The output must come from `wrk --latency`. Raises ValueError naming the
    missing line when wrk printed something else.
    """
    percentiles = {
        int(match.group(1)): parse_time_ms(match.group(2))
        for match in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.MULTILINE)
    }
    totals = re.search(r"^\s*(\d+) requests in (\S+),", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    for name, found in (("latency distribution", 50 in percentiles and 99 in percentiles),
                        ("request total", totals), ("Requests/sec", rate)):
        if not found:
            raise ValueError(f"wrk output has no {name} line; output was:\n{output}")

    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors:
        socket_errors = dict(zip(socket_errors, map(int, errors.groups())))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)

    return {
        "requests_per_second": float(rate.group(1)),
        "latency_p50_ms": percentiles[50],
        "latency_p99_ms": percentiles[99],
        "requests": int(totals.group(1)),
        "duration_s": parse_time_ms(totals.group(2)) / 1000.0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors,
    }


def run_wrk(url: str, body_file: Path, concurrency: int, connection: str, duration_s: float) -> dict:
    """Run wrk on the client core for `duration_s` and return its parsed figures."""
    command = [
        "taskset", "-c", str(CLIENT_CORE),
        "wrk", "--threads", "1", "--connections", str(concurrency),
        "--duration", f"{max(1, round(duration_s))}s",
        "--timeout", f"{WRK_REQUEST_TIMEOUT_S}s", "--latency",
        "--script", str(HERE / "post.lua"),
    ]
    if connection == "close":
        command += ["--header", "Connection: close"]
    command.append(url)
    environment = dict(os.environ, WRK_BODY_FILE=str(body_file))
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True,
        timeout=duration_s + WRK_EXTRA_TIMEOUT_S, check=False,
    )
    if completed.returncode != 0:
        raise BenchmarkError(f"wrk exited with {completed.returncode}: {completed.stderr.strip()}")
    return parse_wrk_output(completed.stdout)


# --- servers ----------------------------------------------------------------


def core_times(core: int) -> tuple[float, float]:
    """Return the busy and total seconds of CPU `core` since boot, from /proc/stat.

    Busy counts user, nice, system, irq, softirq and steal time; total adds
    idle and iowait.
    """
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, line.split()[1:9])
            ticks = os.sysconf("SC_CLK_TCK")
            busy = user + nice + system + irq + softirq + steal
            return busy / ticks, (busy + idle + iowait) / ticks
    raise BenchmarkError(f"CPU core {core} not found in /proc/stat")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A server started in its own session on the server core; `stop` ends it and its children."""

    def __init__(self, name: str, command: list[str], log_file: Path, environment: dict | None = None):
        self.name = name
        self.log_file = log_file
        with open(log_file, "wb") as log:
            self.process = subprocess.Popen(
                ["taskset", "-c", str(SERVER_CORE), *command],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=environment,
            )

    def cpu_seconds(self) -> float:
        """Return the user plus system CPU time the server has used, from /proc (10 ms resolution)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of the stat line; `fields` starts at field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        # The process leads its own session, so its id is also its group id.
        for signal_number, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
            try:
                os.killpg(self.process.pid, signal_number)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def post_review(port: int, context: ssl.SSLContext, body: bytes, timeout_s: float = 5.0):
    """POST one review over a fresh TLS connection; return status, body and the TLS version and cipher."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout_s)
    try:
        connection.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        tls = f"{connection.sock.version()} {connection.sock.cipher()[0]}"
        return response.status, payload, tls
    finally:
        connection.close()


def wait_until_ready(server: ServerProcess, port: int, context: ssl.SSLContext, body: bytes) -> str:
    """Poll until the server responds to a review with 200; return the negotiated TLS version and cipher."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchmarkError(
                f"{server.name} exited with {server.process.returncode} during start-up:\n{server.log_tail()}"
            )
        try:
            status, payload, tls = post_review(port, context, body)
        except (OSError, http.client.HTTPException) as error:
            last_error = repr(error)
            time.sleep(0.1)
            continue
        if status == 200:
            return tls
        raise BenchmarkError(f"{server.name} responded to the first review with HTTP {status}: {payload[:200]!r}")
    raise BenchmarkError(
        f"{server.name} not ready after {STARTUP_TIMEOUT_S:.0f} s (last error: {last_error}):\n{server.log_tail()}"
    )


def check_admission_response(server: str, sample: str, request_body: bytes, payload: bytes) -> None:
    """Raise BenchmarkError unless `payload` is an AdmissionReview response to `request_body`.

    nginx returns one fixed response, so only its shape is checked.
    """
    try:
        review = orjson.loads(payload)
        uid = review["response"]["uid"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise BenchmarkError(f"{server} returned no AdmissionReview response for {sample}: {error!r}") from error
    expected_uid = orjson.loads(request_body)["request"]["uid"]
    if server != "nginx" and uid != expected_uid:
        raise BenchmarkError(f"{server} returned uid {uid!r} for {sample}; expected {expected_uid!r}")


def nginx_temp_paths(prefix: Path) -> str:
    """Point every temp path compiled into this nginx at `prefix`, so nothing is written elsewhere."""
    version = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=10, check=False)
    lines = []
    for kind in re.findall(r"--http-(\w+)-temp-path=", version.stderr):
        directive = "client_body_temp_path" if kind == "client-body" else f"{kind}_temp_path"
        lines.append(f"    {directive} {prefix / (kind + '-temp')};")
    return "\n".join(lines)


def start_nginx(work: Path, port: int, tls: pki.KeyPair, cert_file: Path, key_file: Path,
                body: bytes) -> ServerProcess:
    prefix = work / "nginx"
    prefix.mkdir()
    quoted_body = body.decode().replace("\\", "\\\\").replace("'", "\\'")
    config = string.Template((HERE / "nginx.conf.template").read_text()).substitute(
        prefix=prefix, temp_paths=nginx_temp_paths(prefix), keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        port=port, cert_file=cert_file, key_file=key_file, body=quoted_body,
    )
    (prefix / "nginx.conf").write_text(config)
    command = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
    return ServerProcess("nginx", command, work / "nginx.log")


def start_raw_asgi(work: Path, port: int, cert_file: Path, key_file: Path) -> ServerProcess:
    command = [
        sys.executable, "-m", "uvicorn", "raw_asgi:app", "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port),
        "--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file),
        "--timeout-keep-alive", str(KEEPALIVE_TIMEOUT_S),
        "--no-access-log", "--log-level", "warning",
    ]
    return ServerProcess("raw-asgi", command, work / "raw-asgi.log")


def start_kubefence(work: Path, port: int, cert_file: Path, key_file: Path) -> ServerProcess:
    command = [
        sys.executable, "-m", "kubefence", "webhook", "--host", "127.0.0.1", "--port", str(port),
        "--tls-cert-file", str(cert_file), "--tls-private-key-file", str(key_file),
    ]
    # The decision log goes to a file, as a log collector would take it.
    return ServerProcess("kubefence", command, work / "kubefence.log")


def skip_reason(server: str) -> str:
    """Return why `server` cannot run here, or an empty string."""
    if server == "nginx" and shutil.which("nginx") is None:
        return "nginx is not installed (apt-get install nginx-light)"
    if server in ("raw-asgi", "kubefence") and importlib.util.find_spec("kubefence.webhook.mutation") is None:
        return "kubefence.webhook.mutation is not importable yet"
    if server == "kubefence" and importlib.util.find_spec("kubefence.webhook.cli") is None:
        return "the kubefence webhook command is not importable yet (kubefence.webhook.cli)"
    return ""


def fixed_response_body(sample_body: bytes) -> bytes:
    """Build the fixed body nginx returns: the real response to `sample_body` when the mutation imports.

    Without the mutation, a placeholder: an allowed response with a
    360-character base64 string in `patch` (the real small-pod response is
    689 bytes in all).
    """
    request = orjson.loads(sample_body)["request"]
    if importlib.util.find_spec("kubefence.webhook.mutation") is not None:
        from kubefence.common.policy import default_policy_text, load_policy
        from kubefence.webhook.mutation import build_response, decide

        policy = load_policy(default_policy_text())
        return build_response(request["uid"], decide(request, policy))
    patch = b"W3sib3AiOiJhZGQiLCJwYXRoIjoiL21ldGFkYXRhL2Fubm90YXRpb25zIn1d" * 6
    return orjson.dumps({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": request["uid"], "allowed": True, "patchType": "JSONPatch", "patch": patch.decode()},
    })


# --- the run ----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The points to measure and the seconds per point."""

    servers: tuple[str, ...]
    samples: tuple[str, ...]
    concurrency: tuple[int, ...]
    connections: tuple[str, ...]
    duration_s: float
    warmup_s: float


def machine_facts() -> dict:
    """Describe the machine and the software versions the figures depend on."""
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def tool_version(command: list[str]) -> str:
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        # nginx prints its version on stderr, wrk on stdout.
        lines = (completed.stdout + completed.stderr).strip().splitlines()
        return lines[0] if lines else ""

    def package_version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return ""

    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "uvicorn": package_version("uvicorn"),
        "uvloop": package_version("uvloop"),
        "httptools": package_version("httptools"),
        "fastapi": package_version("fastapi"),
        "orjson": package_version("orjson"),
        "wrk": tool_version(["wrk", "--version"]),
        "nginx": tool_version(["nginx", "-v"]),
    }


def check_cores() -> None:
    available = os.sched_getaffinity(0)
    missing = {SERVER_CORE, CLIENT_CORE} - available
    if missing:
        raise BenchmarkError(
            f"CPU cores {sorted(missing)} are not available to this process (available: {sorted(available)}); "
            f"the benchmark pins the server to core {SERVER_CORE} and wrk to core {CLIENT_CORE}"
        )
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed (apt-get install wrk)")
    if shutil.which("taskset") is None:
        raise BenchmarkError("taskset is not installed (apt-get install util-linux)")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_server(server: str, plan: Plan, work: Path, stack: ExitStack, tls_pair: pki.KeyPair,
                   cert_file: Path, key_file: Path, context: ssl.SSLContext,
                   bodies: dict[str, bytes], body_files: dict[str, Path]) -> tuple[ServerRecord, list[Point]]:
    record = ServerRecord(server, "measured")
    port = free_port()
    first_body = bodies[plan.samples[0]]
    if server == "nginx":
        process = start_nginx(work, port, tls_pair, cert_file, key_file, fixed_response_body(bodies["small-opted-in"]))
    elif server == "raw-asgi":
        process = start_raw_asgi(work, port, cert_file, key_file)
    else:
        process = start_kubefence(work, port, cert_file, key_file)
    stack.callback(process.stop)
    record.pid = process.process.pid

    try:
        started = time.monotonic()
        record.tls = wait_until_ready(process, port, context, first_body)
        log(
            f"{server}: ready on 127.0.0.1:{port} as process {record.pid} "
            f"in {time.monotonic() - started:.2f} s ({record.tls})"
        )

        # One request per sample: check the response and record its size.
        for sample in plan.samples:
            status, payload, _ = post_review(port, context, bodies[sample])
            if status != 200:
                raise BenchmarkError(f"{server} responded to {sample} with HTTP {status}: {payload[:200]!r}")
            check_admission_response(server, sample, bodies[sample], payload)
            record.response_bytes[sample] = len(payload)

        points = []
        url = f"https://127.0.0.1:{port}/mutate"
        for sample in plan.samples:
            if plan.warmup_s > 0:
                run_wrk(url, body_files[sample], 8, "keep-alive", plan.warmup_s)
            for connection in plan.connections:
                for concurrency in plan.concurrency:
                    point = measure_point(process, url, sample, body_files[sample], connection, concurrency, plan)
                    points.append(point)
                    log(
                        f"{server:9} {sample:18} {connection:10} c={concurrency:<3} "
                        f"{point.requests_per_second:9.0f} req/s  p50 {point.latency_p50_ms:8.2f} ms  "
                        f"p99 {point.latency_p99_ms:8.2f} ms  CPU {point.server_cpu_us_per_request:6.0f} us/req  "
                        f"other load on cores {point.server_core_other_percent:4.1f} % "
                        f"{point.client_core_other_percent:4.1f} %"
                        + (f"  non-2xx {point.non_2xx}" if point.non_2xx else "")
                        + (f"  socket errors {point.socket_errors}" if any(point.socket_errors.values()) else "")
                    )
        if process.process.poll() is not None:
            raise BenchmarkError(f"{server} exited during the run:\n{process.log_tail()}")
        return record, points
    finally:
        process.stop()


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _other_percent(before: tuple[float, float], after: tuple[float, float], own_cpu: float) -> float:
    """Return the share of a core's elapsed time that was busy but not `own_cpu`, in percent."""
    elapsed = after[1] - before[1]
    if elapsed <= 0:
        return 0.0
    other = max(0.0, after[0] - before[0] - own_cpu)
    return round(100 * other / elapsed, 1)


def measure_point(process: ServerProcess, url: str, sample: str, body_file: Path, connection: str,
                  concurrency: int, plan: Plan) -> Point:
    """Run wrk for one point and add the server's CPU per request and the load on both cores."""
    server_cpu_before = process.cpu_seconds()
    # wrk is the only child process that ends during the run, so the
    # children's CPU time grows by exactly wrk's.
    client_cpu_before = _children_cpu_seconds()
    server_core_before = core_times(SERVER_CORE)
    client_core_before = core_times(CLIENT_CORE)

    figures = run_wrk(url, body_file, concurrency, connection, plan.duration_s)

    server_cpu = process.cpu_seconds() - server_cpu_before
    client_cpu = _children_cpu_seconds() - client_cpu_before
    point = Point(process.name, sample, connection, concurrency, **figures)
    if point.requests:
        point.server_cpu_us_per_request = round(server_cpu / point.requests * 1e6, 1)
    # Each process is pinned to its core, so its CPU time is all on that core.
    point.server_core_other_percent = _other_percent(server_core_before, core_times(SERVER_CORE), server_cpu)
    point.client_core_other_percent = _other_percent(client_core_before, core_times(CLIENT_CORE), client_cpu)
    return point


def find_point(points: list[Point], server: str, sample: str, connection: str, concurrency: int) -> Point | None:
    for point in points:
        if (point.server, point.sample, point.connection, point.concurrency) == (server, sample, connection, concurrency):
            return point
    return None


def compare(points: list[Point]) -> list[dict]:
    """Compare kubefence with raw ASGI and with the Go figure, per sample, at concurrency 8 keep-alive."""
    comparisons = []
    for sample in SAMPLES:
        # The Go figure was measured with a small pod, so only small samples compare with it.
        small = sample != "huge-pod"
        ours = find_point(points, "kubefence", sample, "keep-alive", 8)
        raw = find_point(points, "raw-asgi", sample, "keep-alive", 8)
        ceiling = find_point(points, "nginx", sample, "keep-alive", 8)
        if ours is None and raw is None:
            continue
        comparisons.append({
            "sample": sample,
            "kubefence_rps": ours.requests_per_second if ours else None,
            "raw_asgi_rps": raw.requests_per_second if raw else None,
            "nginx_rps": ceiling.requests_per_second if ceiling else None,
            "kubefence_to_raw_asgi": round(ours.requests_per_second / raw.requests_per_second, 3)
            if ours and raw and raw.requests_per_second else None,
            "kubefence_to_go": round(ours.requests_per_second / GO_REFERENCE_RPS, 3) if ours and small else None,
            "raw_asgi_to_go": round(raw.requests_per_second / GO_REFERENCE_RPS, 3) if raw and small else None,
            "kubefence_cpu_us_per_request": ours.server_cpu_us_per_request if ours else None,
            "raw_asgi_cpu_us_per_request": raw.server_cpu_us_per_request if raw else None,
            "nginx_cpu_us_per_request": ceiling.server_cpu_us_per_request if ceiling else None,
        })
    return comparisons


def check_targets(points: list[Point]) -> list[dict]:
    """Evaluate the webhook's performance targets; `met` is None where the point was not measured."""
    throughput = find_point(points, "kubefence", "small-opted-in", "keep-alive", 8)
    small_latency = find_point(points, "kubefence", "small-opted-in", "keep-alive", 1)
    huge_latency = find_point(points, "kubefence", "huge-pod", "keep-alive", 1)
    return [
        {
            "target": f"small pod, keep-alive, concurrency 8: at least {GO_REFERENCE_RPS:.0f} req/s (Go net/http)",
            "measured": throughput.requests_per_second if throughput else None,
            "met": throughput.requests_per_second >= GO_REFERENCE_RPS if throughput else None,
        },
        {
            "target": "small pod, keep-alive, concurrency 1: p99 under 1 ms",
            "measured": small_latency.latency_p99_ms if small_latency else None,
            "met": small_latency.latency_p99_ms < 1.0 if small_latency else None,
        },
        {
            "target": "huge pod, keep-alive, concurrency 1: p99 under 50 ms",
            "measured": huge_latency.latency_p99_ms if huge_latency else None,
            "met": huge_latency.latency_p99_ms < 50.0 if huge_latency else None,
        },
    ]


def markdown_table(points: list[Point]) -> str:
    lines = [
        "| server | sample | connection | concurrency | req/s | p50 ms | p99 ms | server CPU µs/req "
        "| other load on server core | other load on wrk core |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in points:
        flags = ""
        if point.non_2xx or any(point.socket_errors.values()):
            flags = f" (non-2xx {point.non_2xx}, socket errors {sum(point.socket_errors.values())})"
        lines.append(
            f"| {point.server} | {point.sample} | {point.connection} | {point.concurrency} "
            f"| {point.requests_per_second:,.0f}{flags} | {point.latency_p50_ms:.2f} | {point.latency_p99_ms:.2f} "
            f"| {point.server_cpu_us_per_request:,.0f} | {point.server_core_other_percent:.0f} % "
            f"| {point.client_core_other_percent:.0f} % |"
        )
    return "\n".join(lines)


def run(plan: Plan) -> dict:
    """Measure every server in `plan` and return the report (see the module docstring)."""
    check_cores()
    report = {
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "settings": {
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "server_core": SERVER_CORE,
            "client_core": CLIENT_CORE,
            "wrk_threads": 1,
            "key_type": "ecdsa-p256",
            "keepalive_timeout_s": KEEPALIVE_TIMEOUT_S,
            "go_reference_rps": GO_REFERENCE_RPS,
        },
        "samples": [],
        "servers": [],
        "points": [],
    }
    points: list[Point] = []

    with tempfile.TemporaryDirectory(prefix="kubefence-bench-") as work_name, ExitStack() as stack:
        work = Path(work_name)

        # One CA and one serving certificate for 127.0.0.1, shared by every server.
        ca = pki.generate_ca("kubefence-bench-ca")
        tls_pair = pki.generate_serving(ca, ["localhost"], ["127.0.0.1"])
        cert_file = work / "tls.crt"
        key_file = work / "tls.key"
        cert_file.write_bytes(tls_pair.cert_pem)
        key_file.touch(mode=0o600)
        key_file.write_bytes(tls_pair.key_pem)
        context = ssl.create_default_context(cadata=ca.cert_pem.decode())

        bodies = {sample: (ADMISSION_DATA / SAMPLES[sample]).read_bytes() for sample in SAMPLES}
        body_files = {sample: ADMISSION_DATA / SAMPLES[sample] for sample in SAMPLES}
        for sample in plan.samples:
            report["samples"].append({"name": sample, "file": SAMPLES[sample], "request_bytes": len(bodies[sample])})

        for server in plan.servers:
            reason = skip_reason(server)
            if reason:
                log(f"{server}: skipped: {reason}")
                report["servers"].append(asdict(ServerRecord(server, "skipped", note=reason)))
                continue
            try:
                record, server_points = measure_server(
                    server, plan, work, stack, tls_pair, cert_file, key_file, context, bodies, body_files
                )
            except (BenchmarkError, subprocess.TimeoutExpired, ValueError) as error:
                log(f"{server}: failed: {error}")
                report["servers"].append(asdict(ServerRecord(server, "failed", note=str(error))))
                continue
            report["servers"].append(asdict(record))
            points.extend(server_points)

    report["load_average_at_end"] = list(os.getloadavg())
    report["points"] = [asdict(point) for point in points]
    report["comparisons"] = compare(points)
    report["targets"] = check_targets(points)
    report["table"] = markdown_table(points)
    return report


def parse_list(text: str, choices, convert=str) -> tuple:
    values = tuple(convert(value.strip()) for value in text.split(",") if value.strip())
    invalid = [value for value in values if value not in choices]
    if invalid or not values:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; expected a comma-separated list of: {', '.join(map(str, choices))}"
        )
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark kubefence webhook against nginx and a raw ASGI app, with wrk over TLS on 127.0.0.1.",
    )
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per point (default 10, or 3 with --quick)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of unmeasured load per server and sample before its points (default 1; 0 for none)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer points: small opted-in and huge pod, concurrency 1 and 8, keep-alive only")
    parser.add_argument("--servers", type=lambda text: parse_list(text, SERVERS), default=None,
                        help=f"comma-separated servers to measure (default all: {','.join(SERVERS)})")
    parser.add_argument("--samples", type=lambda text: parse_list(text, tuple(SAMPLES)), default=None,
                        help=f"comma-separated samples (default all: {','.join(SAMPLES)})")
    parser.add_argument("--concurrency", type=lambda text: parse_list(text, CONCURRENCY, int), default=None,
                        help="comma-separated connection counts (default 1,8,32)")
    parser.add_argument("--connections", type=lambda text: parse_list(text, CONNECTIONS), default=None,
                        help="comma-separated connection modes: keep-alive, close (default both)")
    parser.add_argument("--output", type=Path, default=None, help="write the full report as JSON to this file")
    return parser


def plan_from_arguments(arguments: argparse.Namespace) -> Plan:
    duration_s = arguments.duration if arguments.duration is not None else (
        QUICK_DURATION_S if arguments.quick else 10.0
    )
    if duration_s < 1:
        raise BenchmarkError(f"invalid --duration {duration_s!r}; expected at least 1 second (wrk's resolution)")
    return Plan(
        servers=arguments.servers or SERVERS,
        samples=arguments.samples or (QUICK_SAMPLES if arguments.quick else tuple(SAMPLES)),
        concurrency=arguments.concurrency or (QUICK_CONCURRENCY if arguments.quick else CONCURRENCY),
        connections=arguments.connections or (QUICK_CONNECTIONS if arguments.quick else CONNECTIONS),
        duration_s=duration_s,
        warmup_s=max(0.0, arguments.warmup),
    )


def _raise_keyboard_interrupt(signal_number, frame):
    raise KeyboardInterrupt(f"signal {signal_number}")


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every server is stopped on the way out.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        plan = plan_from_arguments(arguments)
        report = run(plan)
    except BenchmarkError as error:
        log(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: every server started has been stopped")
        return 130

    print(report["table"])
    for comparison in report["comparisons"]:
        print(json.dumps(comparison))
    for target in report["targets"]:
        print(json.dumps(target))
    if arguments.output:
        arguments.output.write_text(json.dumps(report, indent=2) + "\n")
    failed = [server for server in report["servers"] if server["status"] == "failed"]
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
