"""Checks of the `/nono` mount: one read-only bind of the trusted host directory.

The runtime matches mount destinations as exact strings when it applies an
adjustment (containerd's NRI generator, NRI v0.11), while runc cleans a
destination before it mounts it. So "/nono/", "//nono" and "/nono/." all
end up at /nono in the container, but a removal marker "-/nono" does not
touch them. The checks therefore compare cleaned destinations, and reject
any mount at /nono whose destination is not spelt exactly "/nono", instead
of trying to replace it.

Known limitation: the checks see destination strings, not the image. An
image symlink such as `/data -> /nono` turns a mount at `/data/nono` into a
mount over the nono binary when runc resolves the path inside the rootfs.
NOTE: no check here catches that; it needs a look at the image rootfs.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from kubefence.common.contracts import NONO_MOUNT_PATH
from kubefence.nri.config import clean_path
from kubefence.nri.model import REMOVAL_MARKER, Mount

# Options of the bind mount the plugin adds when a container has no /nono.
NONO_MOUNT_OPTIONS = ("rbind", "ro", "nosuid", "nodev")


def clean_destination(destination: str) -> str:
    """Clean a mount destination the way runc resolves it, joining relative paths under "/"."""
    return clean_path("/" + destination)


def is_at_or_below_nono(destination: str) -> bool:
    cleaned = clean_destination(destination)
    return cleaned == NONO_MOUNT_PATH or cleaned.startswith(NONO_MOUNT_PATH + "/")


def is_read_only(mount: Mount) -> bool:
    """Return whether the mount options make it read-only ("ro" present, "rw" absent)."""
    return "ro" in mount.options and "rw" not in mount.options


def is_trusted_source(mount: Mount, host_dir: str) -> bool:
    """Return whether `mount` is a bind mount of `host_dir` (compared after cleaning)."""
    is_bind = mount.type == "bind" or (
        mount.type in ("", "none") and ("bind" in mount.options or "rbind" in mount.options)
    )
    return is_bind and mount.source.startswith("/") and clean_path(mount.source) == host_dir


def trusted_nono_mount(host_dir: str) -> Mount:
    """Build the read-only bind mount of `host_dir` at /nono that the plugin adds."""
    return Mount(destination=NONO_MOUNT_PATH, type="bind", source=host_dir, options=NONO_MOUNT_OPTIONS)


@dataclass(frozen=True)
class NonoMountCheck:
    """Result of checking a container's mounts at and below /nono."""

    # Reasons to reject the container; empty when the mounts can be used.
    problems: tuple[str, ...]
    # The mount spelt exactly "/nono" from the trusted host directory, if any.
    trusted: Mount | None

    @property
    def is_ok(self) -> bool:
        """True when the container has exactly one trusted, read-only /nono and nothing below it."""
        return not self.problems and self.trusted is not None and is_read_only(self.trusted)


def check_nono_mounts(mounts: Iterable[Mount], host_dir: str) -> NonoMountCheck:
    """Check every mount at or below /nono against the trusted host directory."""
    problems: list[str] = []
    trusted: list[Mount] = []
    for mount in mounts:
        if not is_at_or_below_nono(mount.destination):
            continue
        cleaned = clean_destination(mount.destination)
        if cleaned != NONO_MOUNT_PATH:
            problems.append(
                f"mount at {mount.destination!r} is below {NONO_MOUNT_PATH} and would shadow the nono files; "
                f"no mount may be placed below {NONO_MOUNT_PATH}"
            )
        elif mount.destination != NONO_MOUNT_PATH:
            problems.append(
                f"mount destination {mount.destination!r} is {NONO_MOUNT_PATH} spelt differently; "
                f"the runtime matches destinations as exact strings, so only {NONO_MOUNT_PATH!r} is accepted"
            )
        elif not is_trusted_source(mount, host_dir):
            problems.append(
                f"mount at {NONO_MOUNT_PATH} of type {mount.type!r} from {mount.source!r} is not a bind mount "
                f"of the trusted host directory {host_dir!r}"
            )
        else:
            trusted.append(mount)
    if len(trusted) > 1:
        problems.append(
            f"{len(trusted)} mounts at {NONO_MOUNT_PATH}; expected exactly one read-only bind mount of {host_dir!r}"
        )
    return NonoMountCheck(problems=tuple(problems), trusted=trusted[0] if len(trusted) == 1 else None)


def nono_mount_adjustment(check: NonoMountCheck, host_dir: str) -> tuple[Mount, ...]:
    """Return the mount changes that give an accepted container a trusted, read-only /nono.

    A missing /nono is added. A trusted read-write one is removed by its
    exact destination and added again read-only. `check` must have no
    problems.
    """
    if check.trusted is None:
        return (trusted_nono_mount(host_dir),)
    if is_read_only(check.trusted):
        return ()
    return (Mount(destination=REMOVAL_MARKER + NONO_MOUNT_PATH), trusted_nono_mount(host_dir))
