"""Prometheus metrics of the webhook, in a registry of their own so that several apps can live in one process."""

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Seconds. The decision takes microseconds; the upper buckets catch stalls
# of the event loop and very large pods.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

PREFIX = "kubefence_webhook"


class WebhookMetrics:
    """The webhook's counters and histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            f"{PREFIX}_admission_requests",
            "Admission requests decided, by decision (inject, skip, reject) and reason.",
            ("decision", "reason"),
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_admission_duration_seconds",
            "Time from the start of reading a POST /mutate body to the response, in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.profile_fallbacks = Counter(
            f"{PREFIX}_profile_fallbacks",
            "Invalid nono.sh/profile values replaced by the default profile (policy onInvalidProfile: default).",
            registry=self.registry,
        )
        self.policy_reloads = Counter(
            f"{PREFIX}_policy_reloads",
            "Policy file loads after a content change, by result (ok, failed).",
            ("result",),
            registry=self.registry,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Requests answered with an HTTP error instead of an AdmissionReview, by kind.",
            ("kind",),
            registry=self.registry,
        )
        # Children created up front, so every series is exported from the start.
        for result in ("ok", "failed"):
            self.policy_reloads.labels(result)
        for kind in ("bad-request", "unsupported-media-type", "payload-too-large", "internal"):
            self.errors.labels(kind)

    def render(self) -> bytes:
        return generate_latest(self.registry)
