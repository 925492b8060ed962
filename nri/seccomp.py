"""Optional seccomp policies for wrapped containers (`seccomp_profile` setting).

Policies are dicts in the JSON shape of the OCI runtime spec `linux.seccomp`
(`defaultAction`, `architectures`, `syscalls` with `names`, `action`,
`errnoRet`). An NRI seccomp adjustment replaces the container's whole
policy, so the plugin never replaces a policy with a weaker one:

* "runtime-default": a container that already has a policy (the runtime's
  default or a Localhost profile) keeps it. A container without one gets
  `baseline_policy()`, a deny list of syscalls that container runtimes
  block by default. It is narrower than containerd's RuntimeDefault, which
  is an allow list.
* "restricted": the container's policy (or the baseline when it has none)
  plus an EPERM rule for `RESTRICTED_SYSCALLS`.

"restricted" denies seccomp(2). nono installs a seccomp filter of its own
to block networking on kernels whose Landlock ABI is below 4 (no TCP
rules), so on those kernels the restricted policy breaks nono's network
fallback: profiles that block the network cannot be applied there.
"""

from collections.abc import Mapping
from typing import Any

EPERM = 1

# Denied on top of the container's policy by "restricted".
RESTRICTED_SYSCALLS = (
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "ptrace",
    "seccomp",
    "pidfd_getfd",
)

# Syscalls a container has no business with: kernel modules and kexec,
# mounts and namespace changes, keyrings, BPF and perf, clock and swap
# control, and old interfaces with a history of kernel bugs.
BASELINE_DENIED_SYSCALLS = (
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
)

# Listing the 32-bit ABIs too keeps a default-allow policy from being
# sidestepped through the compat syscall table.
ARCHITECTURES = (
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
)


def _deny_rule(names: tuple[str, ...]) -> dict[str, Any]:
    return {"names": list(names), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}


def baseline_policy() -> dict[str, Any]:
    """Build the default-allow policy that denies `BASELINE_DENIED_SYSCALLS` with EPERM."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": list(ARCHITECTURES),
        "syscalls": [_deny_rule(BASELINE_DENIED_SYSCALLS)],
    }


def _is_unconditional_deny(rule: Mapping[str, Any]) -> bool:
    return rule.get("action") in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                                  "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP") and not rule.get("args")


def denies(policy: Mapping[str, Any] | None, names: tuple[str, ...]) -> bool:
    """Return whether `policy` denies every syscall in `names` unconditionally (by rule, not by default)."""
    if not policy:
        return False
    denied: set[str] = set()
    for rule in policy.get("syscalls") or ():
        if _is_unconditional_deny(rule):
            denied.update(rule.get("names") or ())
    return set(names) <= denied


def restricted_policy(current: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return `current` (or the baseline) with an EPERM rule for `RESTRICTED_SYSCALLS`.

    The restricted names are taken out of the existing rules first, so no
    syscall ends up with two rules of different actions.
    """
    base = dict(current) if current else baseline_policy()
    rules = []
    for rule in base.get("syscalls") or ():
        names = [name for name in rule.get("names") or () if name not in RESTRICTED_SYSCALLS]
        if names:
            rules.append({**rule, "names": names})
    rules.append(_deny_rule(RESTRICTED_SYSCALLS))
    return {**base, "syscalls": rules}


def seccomp_adjustment(mode: str, current: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Return the policy to set for `mode` given the container's `current` one, or None to leave it.

    `mode` is the `seccomp_profile` setting: "", "runtime-default" or
    "restricted". A policy that already meets the mode is left alone, so a
    second plugin instance does not claim seccomp again.
    """
    if satisfies(mode, current):
        return None
    if mode == "runtime-default":
        return baseline_policy()
    return restricted_policy(current)


def satisfies(mode: str, policy: Mapping[str, Any] | None) -> bool:
    """Return whether `policy` meets the `seccomp_profile` mode (checked on the final container)."""
    if mode == "":
        return True
    if mode == "runtime-default":
        return bool(policy)
    if mode == "restricted":
        return bool(policy) and denies(policy, RESTRICTED_SYSCALLS)
    raise ValueError(f"invalid seccomp_profile {mode!r}; expected '', 'runtime-default' or 'restricted'")
