"""State shared by the webhook's request handlers: the policy in force, readiness checks and metrics."""

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubefence.common.policy import Policy, load_policy
from kubefence.common.logs import get_logger
from kubefence.common.settings import ConfigError
from kubefence.webhook.metrics import WebhookMetrics

# A readiness check returns None when it passes, or a short reason.
ReadinessCheck = Callable[[], str | None]


class ReadinessChecks:
    """Named readiness checks; /readyz passes when every one passes.

    Components add their own (the certificate reloader replaces the
    "certificate" check with one that tracks rotation).
    """

    def __init__(self) -> None:
        self._checks: dict[str, ReadinessCheck] = {}
        self._details: dict[str, Callable[[], dict]] = {}

    def set(self, name: str, check: ReadinessCheck) -> None:
        """Add the check `name`, or replace the one of that name."""
        self._checks[name] = check

    def names(self) -> list[str]:
        return list(self._checks)

    def set_detail(self, name: str, provider: Callable[[], dict]) -> None:
        """Add `name` to the details /readyz reports next to the checks, such as a certificate close to expiry."""
        self._details[name] = provider

    def details(self) -> dict[str, dict]:
        """Return every detail by name; a provider that raises reports the error instead."""
        results: dict[str, dict] = {}
        for name, provider in self._details.items():
            try:
                results[name] = provider()
            except Exception as error:  # a broken provider must not crash /readyz
                results[name] = {"error": repr(error)}
        return results

    def run(self) -> dict[str, str | None]:
        """Run every check; return its name mapped to None (passed) or the reason it failed."""
        results: dict[str, str | None] = {}
        for name, check in self._checks.items():
            try:
                results[name] = check()
            except Exception as error:  # a broken check must read as "not ready", not crash /readyz
                results[name] = f"check failed: {error!r}"
        return results


@dataclass
class WebhookState:
    """Mutable state of one running webhook."""

    policy: Policy | None = None
    # The webhook's own namespace: always exempt.
    own_namespace: str = ""
    metrics: WebhookMetrics = field(default_factory=WebhookMetrics)
    readiness: ReadinessChecks = field(default_factory=ReadinessChecks)

    def __post_init__(self) -> None:
        self.readiness.set("policy", lambda: None if self.policy is not None else "no policy loaded")


class PolicyWatcher:
    """Reload the policy file when its content changes, keeping the last good policy on error.

    Polling a content hash works for ConfigMap volumes, where the kubelet
    swaps a symlink and file-change events are unreliable.
    """

    def __init__(self, path: str | Path, state: WebhookState) -> None:
        self.path = Path(path)
        self.state = state
        self.log = get_logger("kubefence.webhook.policy")
        # Hash of the content last read, good or bad, so that one bad
        # version is logged and counted once, not at every poll.
        self._seen_hash: str | None = None
        self._missing_logged = False

    def load_initial(self) -> Policy:
        """Load the policy at start-up. Raises OSError or ConfigError: there is no last good policy yet."""
        content = self.path.read_bytes()
        policy = load_policy(content, str(self.path))
        self._seen_hash = hashlib.sha256(content).hexdigest()
        self.state.policy = policy
        self.log.info("policy loaded", path=str(self.path), sha256=self._seen_hash)
        return policy

    def check_once(self) -> bool:
        """Read the file once and apply a changed, valid policy. Return True when a new policy took effect."""
        try:
            content = self.path.read_bytes()
        except OSError as error:
            if not self._missing_logged:
                self.log.error("policy file unreadable; keeping the last good policy", path=str(self.path), error=str(error))
                self._missing_logged = True
            return False
        self._missing_logged = False
        digest = hashlib.sha256(content).hexdigest()
        if digest == self._seen_hash:
            return False
        self._seen_hash = digest
        try:
            policy = load_policy(content, str(self.path))
        except ConfigError as error:
            self.state.metrics.policy_reloads.labels("failed").inc()
            self.log.error("invalid policy; keeping the last good policy", path=str(self.path), sha256=digest, error=str(error))
            return False
        self.state.policy = policy
        self.state.metrics.policy_reloads.labels("ok").inc()
        self.log.info("policy reloaded", path=str(self.path), sha256=digest)
        return True

    async def run(self, interval: float) -> None:
        """Poll every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.check_once)
