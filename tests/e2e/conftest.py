"""Fixtures for the end-to-end tests: real runc containers confined by Landlock.

Every test here needs root, runc, busybox and a kernel with Landlock, and
skips with the missing piece named otherwise. `.ci/run` installs runc and
busybox-static and runs as root, so CI runs them.
"""

import shutil
from pathlib import Path

import pytest

from kubefence import oci

STANDIN = Path(__file__).with_name("nono_standin.py")


@pytest.fixture(scope="session")
def container_host():
    """Skip unless this machine can run confined containers."""
    reason = oci.missing_requirement()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def runc(container_host, tmp_path_factory) -> oci.Runc:
    runtime = oci.Runc(tmp_path_factory.mktemp("runc-state"))
    yield runtime
    leftover = runtime.list_ids()
    assert not leftover, f"containers left behind: {leftover}"


@pytest.fixture(scope="session")
def nono_host_dir(container_host, tmp_path_factory) -> Path:
    """The host directory that the /nono volume mounts: the nono stand-in and nono_py."""
    host_dir = tmp_path_factory.mktemp("nono-host") / "opt-nono-nri"
    oci.install_nono_standin(host_dir, STANDIN)
    return host_dir


@pytest.fixture
def bundle(container_host, tmp_path) -> Path:
    """A bundle directory with a fresh busybox root filesystem."""
    path = tmp_path / "bundle"
    oci.build_rootfs(path / "rootfs", shutil.which("busybox"))
    return path


@pytest.fixture
def base_spec(runc, bundle) -> dict:
    """`runc spec` output with the Python runtime mounts the nono stand-in needs."""
    spec = runc.base_spec(bundle)
    spec["mounts"].extend(oci.python_runtime_mounts())
    return spec
