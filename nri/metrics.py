"""Prometheus metrics of the NRI plugin, in a registry of their own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The plugin's counters and gauges; `registry` is what /metrics exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "kubefence_nri_decisions",
            "CreateContainer and ValidateContainerAdjustment decisions, by outcome.",
            ["decision"],
            registry=self.registry,
        )
        self.handling_seconds = Histogram(
            "kubefence_nri_request_handling_seconds",
            "Time from a complete request to its reply being handed to the socket, by method.",
            ["method"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0),
            registry=self.registry,
        )
        self.reconnects = Counter(
            "kubefence_nri_reconnects",
            "Registrations with the runtime after the first one (runtime restarts, dropped connections).",
            registry=self.registry,
        )
        self.unwrapped_containers = Gauge(
            "kubefence_nri_unwrapped_containers",
            "Opted-in containers found running without the nono prefix or with an untrusted /nono "
            "at the last Synchronize.",
            registry=self.registry,
        )
        self.protocol_errors = Counter(
            "kubefence_nri_protocol_errors",
            "Connections closed because the runtime broke the wire protocol.",
            registry=self.registry,
        )
        self.log_failures = Counter(
            "kubefence_nri_log_failures",
            "Log lines that could not be written (closed or full log stream); the replies went out regardless.",
            registry=self.registry,
        )
        self.registered = Gauge(
            "kubefence_nri_registered",
            "1 while the plugin is registered with the runtime and synchronized, else 0.",
            registry=self.registry,
        )
