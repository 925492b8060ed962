"""The reasons `kubefence.oci` gives when containers cannot run here.

The missing pieces are simulated with monkeypatch because the test
machines have them all: the test process runs as root, with runc, busybox
and Landlock.
"""

import shutil

import pytest

from kubefence import oci

# Saved before the fixture below replaces shutil.which.
REAL_WHICH = shutil.which


@pytest.fixture
def complete_machine(monkeypatch):
    """A machine with everything: root, runc, busybox, nono_py and Landlock."""
    nono_py = pytest.importorskip("nono_py")
    monkeypatch.setattr(oci.os, "geteuid", lambda: 0)
    monkeypatch.setattr(oci.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(nono_py, "detect_abi", lambda: "V7")
    return nono_py


def test_missing_requirement_none_when_complete(complete_machine):
    assert oci.missing_requirement() is None


def test_missing_requirement_not_root(complete_machine, monkeypatch):
    monkeypatch.setattr(oci.os, "geteuid", lambda: 1000)

    assert oci.missing_requirement().startswith("root is needed")


@pytest.mark.parametrize("tool", ["runc", "busybox"])
def test_missing_requirement_tool_not_found(complete_machine, monkeypatch, tool):
    monkeypatch.setattr(oci.shutil, "which", lambda name: None if name == tool else f"/usr/bin/{name}")

    message = oci.missing_requirement()

    assert message.startswith(f"{tool} not found: {tool!r}")
    assert "apt-get install" in message


@pytest.mark.parametrize("tool", ["runc", "busybox"])
def test_missing_requirement_tool_not_executable(complete_machine, monkeypatch, tmp_path, tool):
    plain_file = tmp_path / tool
    plain_file.write_text("#!/bin/sh\n")
    plain_file.chmod(0o644)
    # The real lookup: a path to a file without execute permission.
    monkeypatch.setattr(oci.shutil, "which", REAL_WHICH)

    message = oci.missing_requirement(**{"runc": "/bin/true", "busybox": "/bin/true", tool: str(plain_file)})

    assert message == f"{tool} is not executable: {str(plain_file)!r} (chmod +x it, or pass another file)"


def test_missing_requirement_no_landlock(complete_machine, monkeypatch):
    def no_landlock():
        raise RuntimeError("Landlock is not supported by the kernel")

    monkeypatch.setattr(complete_machine, "detect_abi", no_landlock)

    assert oci.missing_requirement() == "Landlock is not available on this kernel: Landlock is not supported by the kernel"


def test_bind_mount_read_only_options():
    assert oci.bind_mount("/host", "/nono") == {
        "destination": "/nono", "type": "bind", "source": "/host", "options": ["rbind", "ro", "nosuid", "nodev"],
    }


def test_build_rootfs_busybox_and_secret(tmp_path):
    busybox = shutil.which("busybox") or "/bin/sh"

    oci.build_rootfs(tmp_path / "rootfs", busybox)

    assert (tmp_path / "rootfs" / "bin" / "sh").readlink().name == "busybox"
    assert (tmp_path / "rootfs" / oci.SECRET_PATH.lstrip("/")).read_text() == oci.SECRET_TEXT + "\n"
    assert (tmp_path / "rootfs" / "tmp").stat().st_mode & 0o7777 == 0o1777
