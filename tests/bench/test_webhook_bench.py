"""Smoke tests for the webhook benchmark harness (bench/webhook/run.py).

They run the real harness with real servers and wrk for one short point and
check the report's shape and that every figure is positive. They assert no
timing threshold: figures go to docs/benchmarks.md, not to tests.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
RUN_SCRIPT = REPOSITORY / "bench" / "webhook" / "run.py"

POINT_FIELDS = {
    "server", "sample", "connection", "concurrency", "requests_per_second",
    "latency_p50_ms", "latency_p99_ms", "requests", "duration_s", "non_2xx", "socket_errors",
    "server_cpu_us_per_request", "server_core_other_percent", "client_core_other_percent",
}


def _load_run_module():
    spec = importlib.util.spec_from_file_location("bench_webhook_run", RUN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_module = _load_run_module()


def _missing_requirements() -> str:
    missing = [tool for tool in ("wrk", "nginx", "taskset") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install wrk nginx-light util-linux)"
    if not {0, 1} <= os.sched_getaffinity(0):
        return "the benchmark needs CPU cores 0 and 1 (server on one, wrk on the other)"
    return ""


needs_load_tools = pytest.mark.skipif(bool(_missing_requirements()), reason=_missing_requirements() or "ok")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _mutation_importable() -> bool:
    return importlib.util.find_spec("kubefence.webhook.mutation") is not None


def _webhook_importable() -> bool:
    return _mutation_importable() and importlib.util.find_spec("kubefence.webhook.cli") is not None


WRK_OUTPUT = """\
Running 1s test @ https://127.0.0.1:40001/mutate
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   845.12us  120.00us   2.10ms   90.00%
    Req/Sec     9.40k   300.00     9.80k    80.00%
  Latency Distribution
     50%  812.00us
     75%  900.00us
     90%    1.01ms
     99%    1.50ms
  9412 requests in 1.00s, 8.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:   9401.23
Transfer/sec:      8.09MB
"""


def test_parse_wrk_output_reads_figures():
    figures = run_module.parse_wrk_output(WRK_OUTPUT)

    assert figures["requests_per_second"] == 9401.23
    assert figures["latency_p50_ms"] == pytest.approx(0.812)
    assert figures["latency_p99_ms"] == pytest.approx(1.5)
    assert figures["requests"] == 9412
    assert figures["duration_s"] == pytest.approx(1.0)
    assert figures["non_2xx"] == 3
    assert figures["socket_errors"] == {"connect": 0, "read": 2, "write": 0, "timeout": 1}


def test_parse_wrk_output_without_errors_counts_zero():
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "Socket errors" not in line and "Non-2xx" not in line
    )

    figures = run_module.parse_wrk_output(clean)

    assert figures["non_2xx"] == 0
    assert figures["socket_errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0}


@pytest.mark.parametrize(
    "dropped",
    ["Requests/sec", "requests in", "99%"],
    ids=["no-rate", "no-total", "no-p99"],
)
def test_parse_wrk_output_missing_line_raises(dropped):
    output = "\n".join(line for line in WRK_OUTPUT.splitlines() if dropped not in line)

    with pytest.raises(ValueError, match="wrk output has no"):
        run_module.parse_wrk_output(output)


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [("845.00us", 0.845), ("1.20ms", 1.2), ("2.00s", 2000.0), ("1.00m", 60_000.0)],
    ids=["microseconds", "milliseconds", "seconds", "minutes"],
)
def test_parse_time_ms_units(text, milliseconds):
    assert run_module.parse_time_ms(text) == pytest.approx(milliseconds)


def test_parse_time_ms_invalid_raises():
    with pytest.raises(ValueError, match="'12 parsecs'"):
        run_module.parse_time_ms("12 parsecs")


@needs_load_tools
def test_run_one_point_report_fields(tmp_path):
    report_file = tmp_path / "report.json"
    command = [
        sys.executable, str(RUN_SCRIPT), "--duration", "1", "--warmup", "0",
        "--samples", "small-opted-in", "--concurrency", "8", "--connections", "keep-alive",
        "--output", str(report_file),
    ]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path)

    assert completed.returncode == 0, completed.stderr
    report = json.loads(report_file.read_text())
    assert set(report) >= {"machine", "settings", "samples", "servers", "points", "comparisons", "targets"}
    servers = {server["name"]: server for server in report["servers"]}
    assert servers["nginx"]["status"] == "measured"
    assert servers["raw-asgi"]["status"] == ("measured" if _mutation_importable() else "skipped")
    assert servers["kubefence"]["status"] == ("measured" if _webhook_importable() else "skipped")
    for server in servers.values():
        if server["status"] == "skipped":
            assert server["note"], f"{server['name']} skipped without a reason"

    measured = [name for name, server in servers.items() if server["status"] == "measured"]
    assert sorted(point["server"] for point in report["points"]) == sorted(measured)
    for point in report["points"]:
        assert set(point) == POINT_FIELDS
        assert point["sample"] == "small-opted-in"
        assert point["connection"] == "keep-alive"
        assert point["concurrency"] == 8
        assert point["requests"] > 0, point
        assert point["requests_per_second"] > 0, point
        assert point["latency_p50_ms"] > 0, point
        assert point["latency_p99_ms"] >= point["latency_p50_ms"], point
        assert point["server_cpu_us_per_request"] > 0, point
        assert 0 <= point["server_core_other_percent"] <= 100, point
        assert 0 <= point["client_core_other_percent"] <= 100, point
        assert point["non_2xx"] == 0, point
        assert sum(point["socket_errors"].values()) == 0, point

    for name in measured:
        assert servers[name]["tls"].startswith("TLSv1."), servers[name]
        assert servers[name]["response_bytes"]["small-opted-in"] > 0
        assert not _process_exists(servers[name]["pid"]), f"{name} still running after the harness exited"

    if _webhook_importable():
        comparison = report["comparisons"][0]
        assert comparison["sample"] == "small-opted-in"
        assert comparison["kubefence_to_raw_asgi"] > 0
        assert comparison["kubefence_to_go"] > 0
        assert comparison["kubefence_cpu_us_per_request"] > 0


@needs_load_tools
def test_run_sigterm_stops_server(tmp_path):
    command = [
        sys.executable, str(RUN_SCRIPT), "--duration", "30", "--warmup", "0", "--servers", "nginx",
        "--samples", "small-opted-in", "--concurrency", "1", "--connections", "keep-alive",
    ]
    harness = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        # The harness logs "nginx: ready on 127.0.0.1:PORT as process PID ..." once nginx responds.
        server_pid = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not server_pid:
            line = harness.stderr.readline()
            if not line:
                break
            if " ready on " in line:
                server_pid = int(line.split(" as process ")[1].split()[0])
        assert server_pid, "the harness never reported nginx ready"
        assert _process_exists(server_pid)

        harness.send_signal(signal.SIGTERM)
        returncode = harness.wait(timeout=30)
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()

    assert returncode == 130
    assert not _process_exists(server_pid), "nginx still running after the harness was stopped"
