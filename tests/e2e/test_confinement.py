"""Real Landlock confinement of a runc container started through /nono/nono wrap.

The args are written by hand here, as the NRI plugin would write them. The
tests that go through the webhook and the NRI plugin are in test_pod_path.py.
"""

import errno
import json
import os

import pytest

from kubefence import oci
from kubefence.common.contracts import NONO_MOUNT_PATH, wrapper_prefix

pytestmark = pytest.mark.e2e

PERMISSION_DENIED = os.strerror(errno.EACCES)


def run(runc, bundle, spec, args, env=None, nono_dir=None):
    if nono_dir is not None:
        spec["mounts"].append(oci.bind_mount(str(nono_dir), NONO_MOUNT_PATH))
    oci.set_process(spec, args, env=env)
    return runc.run(bundle, spec)


def test_wrapped_workload_is_pid1_with_original_args(runc, bundle, base_spec, nono_host_dir):
    workload = ["/bin/sh", "-c", "cat /proc/1/cmdline; exit 0", "workload", "two words", "--", ""]

    result = run(runc, bundle, base_spec, wrapper_prefix("default") + workload, nono_dir=nono_host_dir)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.split("\0")[:-1] == workload


def test_wrapped_workload_leaves_no_nono_process(runc, bundle, base_spec, nono_host_dir):
    # The built-in profiles grant no listing of /proc, so this profile adds
    # it. `echo` is a shell builtin: the glob lists every process of the
    # container's PID namespace while the shell is the only one running.
    profile = {"extends": "default", "filesystem": {"read": ["/proc"]}}
    (bundle / "rootfs" / "proc-reader.json").write_text(json.dumps(profile))
    args = ["/nono/nono", "wrap", "--profile", "/proc-reader.json", "--", "/bin/sh", "-c", "echo /proc/[0-9]*"]

    result = run(runc, bundle, base_spec, args, nono_dir=nono_host_dir)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == ["/proc/1"]


def test_wrapped_write_to_etc_denied(runc, bundle, base_spec, nono_host_dir):
    workload = ["/bin/sh", "-c", "echo changed > /etc/kubefence-new"]

    result = run(runc, bundle, base_spec, wrapper_prefix("default") + workload, nono_dir=nono_host_dir)

    assert result.exit_code != 0
    assert PERMISSION_DENIED in result.stderr
    assert not (bundle / "rootfs" / "etc" / "kubefence-new").exists()


def test_wrapped_overwrite_of_etc_file_denied(runc, bundle, base_spec, nono_host_dir):
    workload = ["/bin/sh", "-c", "echo 6.6.6.6 evil >> /etc/hosts"]

    result = run(runc, bundle, base_spec, wrapper_prefix("default") + workload, nono_dir=nono_host_dir)

    assert result.exit_code != 0
    assert PERMISSION_DENIED in result.stderr
    assert "evil" not in (bundle / "rootfs" / "etc" / "hosts").read_text()


def test_wrapped_read_outside_grants_denied(runc, bundle, base_spec, nono_host_dir):
    workload = ["/bin/cat", oci.SECRET_PATH]

    result = run(runc, bundle, base_spec, wrapper_prefix("default") + workload, nono_dir=nono_host_dir)

    assert result.exit_code != 0
    assert PERMISSION_DENIED in result.stderr
    assert oci.SECRET_TEXT not in result.stdout


def test_wrapped_granted_paths_work(runc, bundle, base_spec, nono_host_dir):
    workload = ["/bin/sh", "-c", "echo written > /tmp/out && cat /tmp/out && cat /etc/hosts"]

    result = run(runc, bundle, base_spec, wrapper_prefix("default") + workload, nono_dir=nono_host_dir)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["written", "127.0.0.1 localhost"]


def test_wrapped_environment_loses_loader_variables(runc, bundle, base_spec, nono_host_dir):
    env = base_spec["process"]["env"] + [
        "LD_LIBRARY_PATH=/srv", "PYTHONPATH=/srv", "NODE_OPTIONS=--require=/srv/x.js", "TASK_ID=t-1",
    ]

    result = run(runc, bundle, base_spec, wrapper_prefix("default") + ["/bin/env"], env=env, nono_dir=nono_host_dir)

    assert result.exit_code == 0, result.stderr
    names = {line.partition("=")[0] for line in result.stdout.splitlines()}
    assert "TASK_ID" in names
    assert not names & {"LD_LIBRARY_PATH", "PYTHONPATH", "NODE_OPTIONS"}


def test_wrapped_unknown_profile_fails_closed(runc, bundle, base_spec, nono_host_dir):
    workload = ["/bin/sh", "-c", "echo workload-ran"]

    result = run(runc, bundle, base_spec, wrapper_prefix("no-such-profile") + workload, nono_dir=nono_host_dir)

    assert result.exit_code == 1
    assert "no-such-profile" in result.stderr
    assert "workload-ran" not in result.stdout


def test_unwrapped_container_unconfined(runc, bundle, base_spec):
    workload = ["/bin/sh", "-c", f"echo changed > /etc/kubefence-new && cat {oci.SECRET_PATH}"]

    result = run(runc, bundle, base_spec, workload)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == oci.SECRET_TEXT
    assert (bundle / "rootfs" / "etc" / "kubefence-new").read_text() == "changed\n"


def write_user_profile(config_dir, name):
    """Put a user profile `name` that grants write access to /etc under `config_dir`."""
    profiles = config_dir / "nono" / "profiles"
    profiles.mkdir(parents=True)
    profile = {
        "security": {"groups": ["system_read_linux", "system_write_linux"]},
        "filesystem": {"allow": ["/etc"]},
    }
    (profiles / f"{name}.json").write_text(json.dumps(profile))


# Each way a pod's own environment widens what nono grants. Run with the
# stand-in directly, these show that the stand-in reads its environment as
# nono does, so the tests of the full path can tell whether kubefence
# stops them.
WIDENING_ENVIRONMENTS = [
    pytest.param(["TMPDIR=/etc"], None, id="tmpdir"),
    pytest.param(["NONO_ALLOW=/etc"], None, id="nono-allow"),
    pytest.param(["XDG_CONFIG_HOME=/config"], "config", id="xdg-config-home"),
    pytest.param(["HOME=/home/agent"], "home/agent/.config", id="home"),
]


@pytest.mark.parametrize(("extra_env", "profile_dir"), WIDENING_ENVIRONMENTS)
def test_standin_environment_widens_grants(runc, bundle, base_spec, nono_host_dir, extra_env, profile_dir):
    if profile_dir is not None:
        write_user_profile(bundle / "rootfs" / profile_dir, "default")
    env = base_spec["process"]["env"] + extra_env
    workload = ["/bin/sh", "-c", "echo changed > /etc/kubefence-new"]

    result = run(runc, bundle, base_spec, wrapper_prefix("default") + workload, env=env, nono_dir=nono_host_dir)

    assert result.exit_code == 0, result.stderr
    assert (bundle / "rootfs" / "etc" / "kubefence-new").read_text() == "changed\n"


def test_wrapped_non_root_user_confined(runc, bundle, base_spec, nono_host_dir):
    # The nono directory is root-owned and 0755, so any user can run /nono/nono.
    base_spec["process"]["user"] = {"uid": 65534, "gid": 65534}
    workload = ["/bin/sh", "-c", f"id -u; echo x > /tmp/out && echo tmp-ok; cat {oci.SECRET_PATH}"]

    result = run(runc, bundle, base_spec, wrapper_prefix("default") + workload, nono_dir=nono_host_dir)

    assert result.stdout.splitlines() == ["65534", "tmp-ok"]
    assert PERMISSION_DENIED in result.stderr
    assert result.exit_code != 0
