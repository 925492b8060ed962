"""Start-up checks of the node: Landlock support and the trusted nono binary.

The plugin runs them before it connects to the runtime, and stops with the
error's message when one fails:

1. `landlock_abi()`: the kernel has Landlock enabled. It reads the ABI
   version with the landlock_create_ruleset syscall instead of guessing
   from the kernel version, because distributions backport Landlock and
   boot options can disable it.
2. `check_nono_binary()`: `<host_dir>/nono` is a root-owned, regular,
   executable file that no one else can replace, in a root-owned directory,
   so what every wrapped container runs as /nono/nono is what the node
   administrator installed.
3. `check_verify_hook()`, when `verify_hook` is on: the createContainer
   hook script `<host_dir>/kubefence-verify` passes the same file checks.
"""

import ctypes
import errno
import os
import platform
import stat
import struct

from kubefence.common import contracts

# landlock_create_ruleset has number 444 on every architecture that uses
# the unified syscall table (Linux 5.13 and later), x86_64 and aarch64 included.
_LANDLOCK_CREATE_RULESET = {
    "x86_64": 444,
    "aarch64": 444,
    "arm64": 444,
    "armv7l": 444,
    "i686": 444,
    "ppc64le": 444,
    "riscv64": 444,
    "s390x": 444,
}
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0

NONO_BINARY_NAME = "nono"
VERIFY_HOOK_NAME = contracts.VERIFY_HOOK_NAME


class LandlockUnavailableError(RuntimeError):
    """The kernel cannot apply Landlock, so nono would fail closed in every container."""


class NonoBinaryError(RuntimeError):
    """The nono binary or its host directory cannot be trusted."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path!r}: {problem}")
        self.path = path
        self.problem = problem


def landlock_abi(machine: str | None = None) -> int:
    """Return the kernel's Landlock ABI version (1 or more).

    Raises LandlockUnavailableError when the kernel lacks Landlock (ENOSYS),
    has it disabled (EOPNOTSUPP, for example `lsm=` without landlock), or
    the call is blocked, for example by a seccomp policy (EPERM).
    """
    machine = machine or platform.machine()
    number = _LANDLOCK_CREATE_RULESET.get(machine)
    if number is None:
        raise LandlockUnavailableError(
            f"cannot probe Landlock on machine type {machine!r}: the syscall number is known for "
            f"{', '.join(sorted(_LANDLOCK_CREATE_RULESET))}"
        )
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(
        ctypes.c_long(number), ctypes.c_void_p(None), ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION)
    )
    if result >= 1:
        return int(result)
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        reason = "the kernel was built without Landlock (ENOSYS); a kernel 5.13 or later with CONFIG_SECURITY_LANDLOCK is required"
    elif code == errno.EOPNOTSUPP:
        reason = "Landlock is disabled on this kernel (EOPNOTSUPP); add landlock to the lsm= boot parameter"
    else:
        reason = f"the landlock_create_ruleset syscall failed with {errno.errorcode.get(code, code)} ({os.strerror(code)})"
    raise LandlockUnavailableError(f"Landlock is not available: {reason}")


def _check_not_writable_by_others(path: str, info: os.stat_result, label: str, owner_uid: int) -> None:
    if info.st_uid != owner_uid:
        raise NonoBinaryError(path, f"{label} is owned by uid {info.st_uid}, expected uid {owner_uid} (root)")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise NonoBinaryError(
            path, f"{label} has mode {stat.S_IMODE(info.st_mode):04o}, which lets group or others write; expected 0755"
        )


def _check_ancestors(host_dir: str, owner_uid: int) -> None:
    """Check that no directory above `host_dir` lets an unprivileged user rename it."""
    parent = os.path.dirname(host_dir)
    while True:
        info = os.stat(parent)
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            # A sticky directory (such as /tmp) only lets owners rename their entries.
            if not (info.st_mode & stat.S_ISVTX and info.st_uid in (0, owner_uid)):
                raise NonoBinaryError(
                    parent,
                    f"parent directory of the nono host directory has mode {stat.S_IMODE(info.st_mode):04o}, "
                    "which lets group or others replace the host directory",
                )
        if parent == "/":
            return
        parent = os.path.dirname(parent)


def check_nono_binary(host_dir: str, *, owner_uid: int = 0) -> str:
    """Check the trusted nono binary in `host_dir`; return its path.

    The host directory must be a real directory (not a symlink) owned by
    `owner_uid`, not writable by group or others, enterable by everyone, and
    no directory above it may let others replace it. The binary must be a
    regular file (not a symlink) owned by `owner_uid`, not writable by group
    or others, and readable and executable by everyone, because containers
    run it as any user. `owner_uid` is 0 except in tests that cannot run as
    root. Raises NonoBinaryError naming the path and the problem.
    """
    if not os.path.isabs(host_dir):
        raise NonoBinaryError(host_dir, "the nono host directory must be an absolute path")
    try:
        directory = os.lstat(host_dir)
    except FileNotFoundError:
        raise NonoBinaryError(host_dir, "the nono host directory does not exist; run node setup first") from None
    if stat.S_ISLNK(directory.st_mode):
        raise NonoBinaryError(host_dir, "the nono host directory is a symlink; point nono_host_dir at the real directory")
    if not stat.S_ISDIR(directory.st_mode):
        raise NonoBinaryError(host_dir, "the nono host directory is not a directory")
    _check_not_writable_by_others(host_dir, directory, "the nono host directory", owner_uid)
    if stat.S_IMODE(directory.st_mode) & 0o005 != 0o005:
        raise NonoBinaryError(
            host_dir,
            f"the nono host directory has mode {stat.S_IMODE(directory.st_mode):04o}; containers running as any "
            "user must be able to enter it (0755)",
        )
    _check_ancestors(host_dir, owner_uid)

    path = os.path.join(host_dir, NONO_BINARY_NAME)
    _check_trusted_file(path, "the nono binary", owner_uid)
    return path


def _check_trusted_file(path: str, label: str, owner_uid: int) -> None:
    """Check that `path` is a regular executable file that only `owner_uid` can change."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise NonoBinaryError(path, f"{label} does not exist; run node setup first") from None
    if stat.S_ISLNK(info.st_mode):
        raise NonoBinaryError(path, f"{label} is a symlink; install the file itself")
    if not stat.S_ISREG(info.st_mode):
        raise NonoBinaryError(path, f"{label} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o555 != 0o555:
        raise NonoBinaryError(
            path, f"{label} has mode {mode:04o}; it must be readable and executable by everyone (0755)"
        )
    _check_not_writable_by_others(path, info, label, owner_uid)


def check_verify_hook(host_dir: str, *, owner_uid: int = 0) -> str:
    """Check the createContainer hook script in `host_dir` like the nono binary; return its path.

    The runtime runs the script as root on every wrapped create, so it gets
    the same rules: the host directory as in `check_nono_binary`, and a
    regular, root-owned file (not a symlink) that group and others cannot
    write. Raises NonoBinaryError naming the path and the problem.
    """
    check_nono_binary(host_dir, owner_uid=owner_uid)
    path = os.path.join(host_dir, VERIFY_HOOK_NAME)
    _check_trusted_file(path, "the verify hook script", owner_uid)
    return path


def elf_interpreter(path: str) -> str | None:
    """Return the program interpreter (PT_INTERP) of an ELF file, or None for a static binary.

    A dynamically linked nono loads the dynamic loader and libc from the
    container's image before it applies Landlock, so image content can run
    code in nono before the sandbox exists. Raises ValueError for a file
    that is not ELF.
    """
    with open(path, "rb") as file:
        header = file.read(64)
        if len(header) < 52 or header[:4] != b"\x7fELF":
            raise ValueError(f"{path!r} is not an ELF file")
        is_64_bit = header[4] == 2
        order = "<" if header[5] == 1 else ">"
        if is_64_bit:
            phoff, = struct.unpack_from(order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
        else:
            phoff, = struct.unpack_from(order + "I", header, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
        for index in range(phnum):
            file.seek(phoff + index * phentsize)
            entry = file.read(phentsize)
            if len(entry) < phentsize:
                raise ValueError(f"{path!r} has a truncated program header table")
            kind, = struct.unpack_from(order + "I", entry, 0)
            if kind != 3:  # PT_INTERP
                continue
            if is_64_bit:
                offset, = struct.unpack_from(order + "Q", entry, 8)
                size, = struct.unpack_from(order + "Q", entry, 32)
            else:
                offset, = struct.unpack_from(order + "I", entry, 4)
                size, = struct.unpack_from(order + "I", entry, 16)
            file.seek(offset)
            return file.read(size).rstrip(b"\x00").decode(errors="replace")
    return None
