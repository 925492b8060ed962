"""Benchmark the NRI plugin over its unix socket: CreateContainer round trip, memory, Synchronize.

Starts `kubefence nri` as a child process and plays the runtime side with
blocking sockets and the plugin's own sans-I/O framing (no asyncio on the
measuring side). A round trip is timed from the request's first byte
written to the reply's last byte read.

    python bench/nri_roundtrip.py                    # 5,000 timed calls, 100,000 for memory
    python bench/nri_roundtrip.py --calls 1000 --memory-calls 10000   # quick run

Reference: the NRI Go stub measured about 230 µs median and 1.1 to 1.4 ms
p99 for the same round trip on this kind of machine. Targets: median at
most 345 µs, p99 under 2 ms, resident memory under 40 MiB with no growth,
Synchronize of 300 containers answered in under 300 ms.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from kubefence.nri import api_pb2, convert, model
from kubefence.nri.ttrpc import Connection, RequestReceived, ResponseReceived

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
TIMEOUT_NANO = 2_000_000_000


class RuntimeSide:
    """A blocking runtime end of one plugin connection."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.connection = Connection.for_runtime(max_send_payload=4 * 1024 * 1024 + 10)

    def receive_events(self):
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("plugin closed the connection")
            events = self.connection.receive_data(data)
            if events:
                return events

    def register(self) -> api_pb2.RegisterPluginRequest:
        while True:
            for event in self.receive_events():
                if isinstance(event, RequestReceived) and event.request.method == "RegisterPlugin":
                    self.sock.sendall(self.connection.send_response(event.stream_id))
                    return api_pb2.RegisterPluginRequest.FromString(event.request.payload)

    def call(self, method: str, message) -> bytes:
        _, data = self.connection.send_request(PLUGIN_SERVICE, method, message.SerializeToString(),
                                               timeout_nano=TIMEOUT_NANO)
        self.sock.sendall(data)
        while True:
            for event in self.receive_events():
                if isinstance(event, ResponseReceived):
                    if event.response.HasField("status"):
                        raise RuntimeError(f"{method} failed: {event.response.status.message}")
                    return event.response.payload


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found")


def sync_request(containers: int) -> api_pb2.SynchronizeRequest:
    request = api_pb2.SynchronizeRequest()
    for index in range(containers // 2):
        opted_in = index % 2 == 0
        pod = model.Pod(
            id=f"pod-{index}", name=f"pod-{index}", namespace="bench", uid=f"uid-{index}",
            runtime_handler="nono-runc" if opted_in else "runc",
            annotations={"nono.sh/profile": "default"} if opted_in else {},
        )
        request.pods.append(convert.pod_to_proto(pod))
        for number in range(2):
            args = ("/nono/nono", "wrap", "--profile", "default", "--", "sleep", "inf") if opted_in else ("sleep", "inf")
            container = model.Container(
                id=f"ctr-{index}-{number}", pod_sandbox_id=pod.id, name=f"c{number}", args=args,
                env=tuple(f"VAR_{n}=value" for n in range(20)), annotations={"note": "x" * 1024},
                state=api_pb2.CONTAINER_RUNNING,
            )
            request.containers.append(convert.container_to_proto(container))
    return request


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="timed CreateContainer calls (default 5000)")
    parser.add_argument("--memory-calls", type=int, default=100_000,
                        help="CreateContainer calls before the final memory reading (default 100000)")
    parser.add_argument("--sync-containers", type=int, default=300, help="containers in the timed Synchronize")
    parser.add_argument("--sync-rounds", type=int, default=5, help="reconnects, each timing one Synchronize")
    options = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="nri-bench-")
    host = os.path.join(workdir, "host")
    os.makedirs(host)
    os.chmod(workdir, 0o755)
    os.chmod(host, 0o755)
    with open(os.path.join(host, "nono"), "w") as binary:
        binary.write("#!/bin/sh\nexit 1\n")
    os.chmod(os.path.join(host, "nono"), 0o755)
    socket_path = os.path.join(workdir, "nri.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(4)

    log = open(os.path.join(workdir, "plugin.log"), "wb")
    plugin = subprocess.Popen(
        [sys.executable, "-m", "kubefence", "nri", "--socket-path", socket_path, "--state-dir",
         os.path.join(workdir, "state"), "--nono-host-dir", host, "--runtime-handlers", "nono-runc",
         "--allowed-profiles", "default", "--plugin-index", "10", "--metrics-address", "127.0.0.1:19099",
         "--no-validator"],
        stdout=log, stderr=log,
    )
    try:
        sync = sync_request(options.sync_containers)
        sync_times = []
        for _ in range(options.sync_rounds):
            sock, _ = listener.accept()
            runtime = RuntimeSide(sock)
            runtime.register()
            runtime.call("Configure", api_pb2.ConfigureRequest(runtime_name="bench", runtime_version="v0",
                                                               request_timeout=2000, registration_timeout=5000))
            started = time.perf_counter()
            runtime.call("Synchronize", sync)
            sync_times.append(time.perf_counter() - started)
            if len(sync_times) < options.sync_rounds:
                sock.close()

        pod = model.Pod(id="pod-b", name="bench", namespace="bench", uid="u", runtime_handler="nono-runc",
                        annotations={"nono.sh/profile": "default"})
        container = model.Container(
            id="ctr-b", pod_sandbox_id="pod-b", name="app", args=("python", "app.py"),
            env=("PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root"),
            mounts=(model.Mount("/nono", "bind", host, ("rbind", "ro")),),
        )
        request = api_pb2.CreateContainerRequest(pod=convert.pod_to_proto(pod),
                                                 container=convert.container_to_proto(container))
        request_size = request.ByteSize()
        for _ in range(500):  # warm-up
            runtime.call("CreateContainer", request)
        rss_start = rss_kib(plugin.pid)

        samples = []
        for _ in range(options.calls):
            started = time.perf_counter()
            runtime.call("CreateContainer", request)
            samples.append(time.perf_counter() - started)
        rss_after_timed = rss_kib(plugin.pid)
        for _ in range(max(0, options.memory_calls - options.calls)):
            runtime.call("CreateContainer", request)
        rss_end = rss_kib(plugin.pid)

        print(f"CreateContainer request: {request_size} bytes, {options.calls} timed calls")
        print(f"  median {statistics.median(samples) * 1e6:.0f} µs, p99 {percentile(samples, 0.99) * 1e6:.0f} µs, "
              f"max {max(samples) * 1e6:.0f} µs")
        print(f"plugin RSS: {rss_start / 1024:.1f} MiB after warm-up, {rss_after_timed / 1024:.1f} MiB after "
              f"{options.calls + 500} calls, {rss_end / 1024:.1f} MiB after {max(options.memory_calls, options.calls) + 500} calls "
              f"(growth {(rss_end - rss_start) / 1024:+.1f} MiB)")
        print(f"Synchronize of {options.sync_containers} containers ({sync.ByteSize()} bytes): "
              f"median {statistics.median(sync_times) * 1e3:.1f} ms, max {max(sync_times) * 1e3:.1f} ms "
              f"over {len(sync_times)} connections")
    finally:
        plugin.terminate()
        plugin.wait(10)
        log.close()
        listener.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
