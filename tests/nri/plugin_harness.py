"""Run the real `kubefence nri` plugin as a child process for the scenario tests.

Each PluginProcess gets its own socket path, state directory, trusted host
directory (root-owned 0755 with an executable `nono` file) and metrics port.
Its JSON log lines go to a file that the tests parse.
"""

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import tomlkit


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_host_dir(path: Path) -> Path:
    """Create a trusted host directory holding a `nono` executable, as node setup does."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    binary = path / "nono"
    binary.write_text("#!/bin/sh\nexit 1\n")
    os.chmod(binary, 0o755)
    return path


class PluginProcess:
    """One `kubefence nri --config FILE` child process (run as `python -m kubefence nri`)."""

    def __init__(self, workdir: Path, socket_path: str, *, name: str = "plugin", **settings):
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.config_path = workdir / f"{name}.toml"
        host_dir = settings.pop("nono_host_dir", None) or str(make_host_dir(workdir / "host"))
        self.port = free_port()
        self.settings = {
            "socket_path": socket_path,
            "plugin_name": "kubefence",
            "plugin_index": "10",
            "runtime_handlers": ["nono-runc"],
            "default_profile": "default",
            "allowed_profiles": ["default", "swival"],
            "on_missing_profile": "reject",
            "nono_host_dir": host_dir,
            "state_dir": str(workdir / "state"),
            "metrics_address": f"127.0.0.1:{self.port}",
            "log_level": "debug",
        }
        self.settings.update(settings)
        self.config_path.write_text(tomlkit.dumps(self.settings))
        self.process: subprocess.Popen | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.settings["state_dir"])

    @property
    def host_dir(self) -> str:
        return self.settings["nono_host_dir"]

    def start(self, *extra_args: str, prefix: tuple[str, ...] = ()) -> "PluginProcess":
        """Start the plugin; `prefix` is a command that runs it, such as setpriv."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "kubefence", "nri", "--config", str(self.config_path), *extra_args],
            stdout=log,
            stderr=log,
        )
        log.close()
        return self

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float = 10) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def log_lines(self) -> list[dict]:
        """Return the JSON log lines written so far (non-JSON lines are skipped)."""
        lines = []
        if not self.log_path.exists():
            return lines
        for raw in self.log_path.read_bytes().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    def events(self, event: str) -> list[dict]:
        return [line for line in self.log_lines() if line.get("event") == event]

    def http_get(self, path: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def metric(self, name: str, labels: str = "") -> float | None:
        """Return one sample of the Prometheus text output, or None if absent."""
        _, text = self.http_get("/metrics")
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            if sample == wanted:
                return float(value)
        return None

    def audit_ids(self) -> set[str]:
        if not self.state_dir.exists():
            return set()
        return {path.stem for path in self.state_dir.glob("*.json")}


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it is true; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
