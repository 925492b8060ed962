import os
import shutil
import subprocess
import sys

import pytest

from kubefence.nri.checks import (
    LandlockUnavailableError,
    NonoBinaryError,
    check_nono_binary,
    check_verify_hook,
    elf_interpreter,
    landlock_abi,
)

OWNER = os.getuid()


def test_landlock_abi_real_kernel():
    # The kernel probe is real: this machine runs Linux with Landlock.
    abi = landlock_abi()
    assert isinstance(abi, int)
    assert abi >= 1


def test_landlock_abi_unknown_machine():
    with pytest.raises(LandlockUnavailableError, match="'vax'"):
        landlock_abi(machine="vax")


def _host_dir(tmp_path, mode=0o755, binary_mode=0o755):
    host_dir = tmp_path / "nono-nri"
    host_dir.mkdir()
    binary = host_dir / "nono"
    binary.write_bytes(b"#!/bin/sh\nexit 0\n")
    binary.chmod(binary_mode)
    host_dir.chmod(mode)
    return host_dir


def test_check_nono_binary_accepts_good_install(tmp_path):
    host_dir = _host_dir(tmp_path)
    assert check_nono_binary(str(host_dir), owner_uid=OWNER) == str(host_dir / "nono")


@pytest.mark.skipif(os.getuid() != 0, reason="root ownership is checked only when the test runs as root")
def test_check_nono_binary_default_owner_is_root(tmp_path):
    host_dir = _host_dir(tmp_path)
    assert check_nono_binary(str(host_dir)) == str(host_dir / "nono")
    os.chown(host_dir / "nono", 65534, 65534)
    with pytest.raises(NonoBinaryError, match="owned by uid 65534"):
        check_nono_binary(str(host_dir))


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_check_nono_binary_host_dir_other_owner(tmp_path):
    host_dir = _host_dir(tmp_path)
    os.chown(host_dir, 65534, 65534)
    with pytest.raises(NonoBinaryError) as caught:
        check_nono_binary(str(host_dir))
    assert "host directory is owned by uid 65534" in str(caught.value)
    assert repr(str(host_dir)) in str(caught.value)


def test_check_nono_binary_symlink_rejected(tmp_path):
    host_dir = _host_dir(tmp_path)
    real = tmp_path / "real-nono"
    os.replace(host_dir / "nono", real)
    os.symlink(real, host_dir / "nono")
    with pytest.raises(NonoBinaryError) as caught:
        check_nono_binary(str(host_dir), owner_uid=OWNER)
    assert "is a symlink" in str(caught.value)
    assert repr(str(host_dir / "nono")) in str(caught.value)


def test_check_nono_binary_host_dir_symlink_rejected(tmp_path):
    host_dir = _host_dir(tmp_path)
    link = tmp_path / "link"
    os.symlink(host_dir, link)
    with pytest.raises(NonoBinaryError, match="host directory is a symlink"):
        check_nono_binary(str(link), owner_uid=OWNER)


@pytest.mark.parametrize(
    ("binary_mode", "expected"),
    [
        pytest.param(0o644, "mode 0644", id="not-executable"),
        pytest.param(0o700, "mode 0700", id="owner-only"),
        pytest.param(0o775, "mode 0775", id="group-writable"),
        pytest.param(0o757, "mode 0757", id="world-writable"),
    ],
)
def test_check_nono_binary_bad_mode_rejected(tmp_path, binary_mode, expected):
    host_dir = _host_dir(tmp_path, binary_mode=binary_mode)
    with pytest.raises(NonoBinaryError) as caught:
        check_nono_binary(str(host_dir), owner_uid=OWNER)
    assert expected in str(caught.value)
    assert repr(str(host_dir / "nono")) in str(caught.value)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param(0o775, "mode 0775", id="group-writable"),
        pytest.param(0o777, "mode 0777", id="world-writable"),
        pytest.param(0o750, "mode 0750", id="not-enterable"),
    ],
)
def test_check_nono_binary_bad_host_dir_mode_rejected(tmp_path, mode, expected):
    host_dir = _host_dir(tmp_path, mode=mode)
    with pytest.raises(NonoBinaryError) as caught:
        check_nono_binary(str(host_dir), owner_uid=OWNER)
    assert expected in str(caught.value)


def test_check_nono_binary_writable_parent_rejected(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    host_dir = _host_dir(parent)
    parent.chmod(0o777)
    with pytest.raises(NonoBinaryError) as caught:
        check_nono_binary(str(host_dir), owner_uid=OWNER)
    assert repr(str(parent)) in str(caught.value)
    assert "replace the host directory" in str(caught.value)


def test_check_nono_binary_missing(tmp_path):
    with pytest.raises(NonoBinaryError, match="does not exist"):
        check_nono_binary(str(tmp_path / "absent"), owner_uid=OWNER)
    host_dir = _host_dir(tmp_path)
    os.unlink(host_dir / "nono")
    with pytest.raises(NonoBinaryError, match="nono binary does not exist"):
        check_nono_binary(str(host_dir), owner_uid=OWNER)


def test_check_nono_binary_directory_rejected(tmp_path):
    host_dir = _host_dir(tmp_path)
    os.unlink(host_dir / "nono")
    (host_dir / "nono").mkdir()
    with pytest.raises(NonoBinaryError, match="not a regular file"):
        check_nono_binary(str(host_dir), owner_uid=OWNER)


def test_check_nono_binary_relative_rejected():
    with pytest.raises(NonoBinaryError, match="absolute path"):
        check_nono_binary("opt/nono-nri", owner_uid=OWNER)


def test_elf_interpreter_dynamic_binary():
    interpreter = elf_interpreter(os.path.realpath(sys.executable))
    assert interpreter is not None
    assert "ld-" in interpreter


def test_elf_interpreter_static_binary():
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed (.ci/run installs it)")
    assert elf_interpreter(busybox) is None


def test_elf_interpreter_not_elf(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ValueError, match="not an ELF file"):
        elf_interpreter(str(script))


# A child process installs a seccomp filter that makes landlock_create_ruleset
# fail with the given errno, then runs the real probe. The filter stays in
# the child, so the test process keeps its normal syscalls.
_PROBE_UNDER_FILTER = """
import ctypes, struct, sys
from kubefence.nri.checks import LandlockUnavailableError, landlock_abi

errno_value = int(sys.argv[1])
program = b"".join([
    struct.pack("HBBI", 0x20, 0, 0, 0),                      # load the syscall number
    struct.pack("HBBI", 0x15, 0, 1, 444),                    # landlock_create_ruleset?
    struct.pack("HBBI", 0x06, 0, 0, 0x00050000 | errno_value),  # return the errno
    struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000),             # allow everything else
])
buffer = ctypes.create_string_buffer(program)

class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

fprog = SockFprog(4, ctypes.cast(buffer, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0                       # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0     # PR_SET_SECCOMP, filter mode
try:
    landlock_abi()
except LandlockUnavailableError as error:
    print(error)
    sys.exit(3)
sys.exit(0)
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter matches the x86_64 syscall number")
@pytest.mark.parametrize(
    ("errno_value", "expected"),
    [
        pytest.param(38, "built without Landlock (ENOSYS)", id="enosys"),
        pytest.param(95, "disabled on this kernel (EOPNOTSUPP)", id="eopnotsupp"),
        pytest.param(1, "failed with EPERM", id="eperm"),
    ],
)
def test_landlock_abi_unavailable_reported(errno_value, expected):
    result = subprocess.run(
        [sys.executable, "-c", _PROBE_UNDER_FILTER, str(errno_value)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert "Landlock is not available" in result.stdout
    assert expected in result.stdout


def _hook_host_dir(tmp_path, hook_mode=0o755):
    host_dir = _host_dir(tmp_path)
    host_dir.chmod(0o755)
    script = host_dir / "kubefence-verify"
    script.write_bytes(b"#!/bin/sh\nexit 0\n")
    script.chmod(hook_mode)
    return host_dir


def test_check_verify_hook_accepts_good_install(tmp_path):
    host_dir = _hook_host_dir(tmp_path)
    assert check_verify_hook(str(host_dir), owner_uid=OWNER) == str(host_dir / "kubefence-verify")


def test_check_verify_hook_missing(tmp_path):
    host_dir = _host_dir(tmp_path)
    with pytest.raises(NonoBinaryError, match="verify hook script does not exist; run node setup"):
        check_verify_hook(str(host_dir), owner_uid=OWNER)


def test_check_verify_hook_symlink_rejected(tmp_path):
    host_dir = _host_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere.sh"
    elsewhere.write_bytes(b"#!/bin/sh\nexit 0\n")
    elsewhere.chmod(0o755)
    (host_dir / "kubefence-verify").symlink_to(elsewhere)
    with pytest.raises(NonoBinaryError, match="verify hook script is a symlink"):
        check_verify_hook(str(host_dir), owner_uid=OWNER)


@pytest.mark.parametrize(
    ("hook_mode", "expected"),
    [
        pytest.param(0o775, "lets group or others write", id="group-writable"),
        pytest.param(0o757, "lets group or others write", id="others-writable"),
        pytest.param(0o700, "readable and executable by everyone", id="owner-only"),
    ],
)
def test_check_verify_hook_bad_mode_rejected(tmp_path, hook_mode, expected):
    host_dir = _hook_host_dir(tmp_path, hook_mode)
    with pytest.raises(NonoBinaryError, match=expected):
        check_verify_hook(str(host_dir), owner_uid=OWNER)


def test_check_verify_hook_directory_rejected(tmp_path):
    host_dir = _host_dir(tmp_path)
    (host_dir / "kubefence-verify").mkdir()
    with pytest.raises(NonoBinaryError, match="not a regular file"):
        check_verify_hook(str(host_dir), owner_uid=OWNER)


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_check_verify_hook_other_owner_rejected(tmp_path):
    host_dir = _hook_host_dir(tmp_path)
    os.chown(host_dir / "kubefence-verify", 65534, 65534)
    with pytest.raises(NonoBinaryError, match="owned by uid 65534"):
        check_verify_hook(str(host_dir))


def test_check_verify_hook_checks_nono_binary_too(tmp_path):
    host_dir = _hook_host_dir(tmp_path)
    (host_dir / "nono").unlink()
    with pytest.raises(NonoBinaryError, match="nono binary does not exist"):
        check_verify_hook(str(host_dir), owner_uid=OWNER)
