"""Plain data the NRI plugin's decisions work on.

The protocol layers convert NRI protobuf messages into these types and back
(`convert.py`), so the decision functions never see protobuf, sockets or
clocks. Environment entries keep the OCI form `KEY=VALUE`, in order, with
duplicates, because the runtime's merge depends on order.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# NRI marks a key for removal by prefixing it with "-" (env keys, mount
# destinations) in a ContainerAdjustment.
REMOVAL_MARKER = "-"


@dataclass(frozen=True)
class Mount:
    """An OCI mount as NRI carries it."""

    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hook:
    """An OCI lifecycle hook: the executable's host path, its argv and env."""

    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pod:
    """The pod sandbox of a container. Stop events for a gone sandbox carry only `id`."""

    id: str
    name: str = ""
    namespace: str = ""
    uid: str = ""
    runtime_handler: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Container:
    """A container as the runtime describes it in a request."""

    id: str
    pod_sandbox_id: str = ""
    name: str = ""
    # The resolved OCI argv (entrypoint plus cmd), with earlier plugins' changes.
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    # NRI ContainerState enum value; 0 (unknown) at CreateContainer.
    state: int = 0
    # The seccomp policy in the container's OCI spec, in the JSON shape of
    # the OCI runtime spec `linux.seccomp` (defaultAction, architectures,
    # syscalls with names, action, errnoRet and args), or None when the
    # container runs without seccomp.
    seccomp_policy: Mapping | None = None
    # The OCI createContainer hooks in the container's spec, in order. Other
    # hook kinds are not carried over.
    hooks: tuple[Hook, ...] = ()


@dataclass(frozen=True)
class Adjustment:
    """The changes one plugin asks for, in NRI ContainerAdjustment terms."""

    # Full argv to set, or None to leave args alone. A leading "" asks the
    # runtime to override an earlier plugin's claim on args.
    args: tuple[str, ...] | None = None
    # (key, value) pairs to set; a key "-NAME" removes NAME.
    env: tuple[tuple[str, str], ...] = ()
    # Mounts to add; a destination "-/path" removes the mount at /path.
    mounts: tuple[Mount, ...] = ()
    # OCI LinuxSeccomp as a JSON-shaped dict (defaultAction, architectures,
    # syscalls), or None to leave seccomp alone.
    seccomp: Mapping | None = None
    # OCI createContainer hooks to append after the container's own.
    hooks: tuple[Hook, ...] = ()

    def is_empty(self) -> bool:
        return (
            self.args is None and not self.env and not self.mounts and self.seccomp is None and not self.hooks
        )


@dataclass(frozen=True)
class Decision:
    """The outcome for one container, with what to log and what to send."""

    decision: Literal["inject", "skip", "reject"]
    reason: str
    profile: str = ""
    # Sent back on inject; None on skip and reject.
    adjustment: Adjustment | None = None
    # True when policy replaced an invalid or missing profile by the default.
    fallback: bool = False
    # Something the I/O shell logs at warning level next to the decision, for
    # example a skipped pod that carries the profile annotation. Empty if none.
    warning: str = ""

    @property
    def message(self) -> str:
        """The error text returned to the runtime on reject."""
        return self.reason if self.decision == "reject" else ""


@dataclass(frozen=True)
class Finding:
    """An opted-in container found running without the sandbox (Synchronize audit)."""

    container_id: str
    pod: Pod
    container_name: str
    reason: str
