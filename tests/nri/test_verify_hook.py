"""The createContainer hook script `kubefence-verify`, run directly on crafted bundles.

The runtime runs the hook with the OCI state JSON on stdin, after all
mounts and before pivot_root. Here /nono/nono in the root filesystem is a
hard link to the host's nono binary, which gives it the same device and
inode as the trusted bind mount gives it in a real container. Each case
runs under the system's sh and coreutils, and under busybox's sh and
applets, because nodes have either.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "nri" / "verify_nono.sh"
BUSYBOX = shutil.which("busybox")
APPLETS = ("sh", "cat", "grep", "sed", "tr", "wc", "stat")


@pytest.fixture(params=["system", "busybox"])
def shell_env(request, tmp_path):
    """Return (argv prefix, env) for the system tools or for busybox applets only."""
    if request.param == "system":
        return ["/bin/sh"], dict(os.environ)
    if BUSYBOX is None:
        pytest.skip("busybox not found (Debian and Ubuntu: apt-get install busybox-static)")
    applets = tmp_path / "busybox-bin"
    applets.mkdir()
    for name in APPLETS:
        (applets / name).symlink_to(BUSYBOX)
    return [str(applets / "sh")], {"PATH": str(applets)}


@pytest.fixture
def node(tmp_path):
    """A host directory with nono and a bundle whose rootfs has /nono/nono hard-linked to it."""
    host_dir = tmp_path / "opt-nono-nri"
    host_dir.mkdir()
    (host_dir / "nono").write_text("#!/bin/sh\nexit 0\n")
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "nono").mkdir(parents=True)
    os.link(host_dir / "nono", bundle / "rootfs" / "nono" / "nono")
    write_config(bundle, "rootfs")
    return host_dir, bundle


def write_config(bundle, root_path, indent=None):
    spec = {"ociVersion": "1.2.0", "process": {"args": ["sh"]}, "root": {"path": root_path, "readonly": False},
            "annotations": {"root": "not the root object", "io.kubernetes.cri.sandbox-id": "x"}}
    (bundle / "config.json").write_text(json.dumps(spec, indent=indent))


def state(bundle, **extra):
    return json.dumps({"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 4242,
                       "bundle": str(bundle), **extra})


def run_hook(shell_env, stdin, *args):
    prefix, env = shell_env
    return subprocess.run([*prefix, str(SCRIPT), *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=30)


def assert_rejected(result, expected):
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("kubefence-verify: ")
    assert expected in lines[0]


@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
def test_verify_hook_relative_root_accepted(shell_env, node, indent):
    host_dir, bundle = node
    write_config(bundle, "rootfs", indent=indent)
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_verify_hook_absolute_root_accepted(shell_env, node, tmp_path):
    host_dir, bundle = node
    elsewhere = tmp_path / "snapshots" / "42" / "fs"
    elsewhere.parent.mkdir(parents=True)
    (bundle / "rootfs").rename(elsewhere)
    write_config(bundle, str(elsewhere), indent=1)
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("env", [{}, {"PATH": ""}], ids=["unset", "empty"])
def test_verify_hook_without_path_accepted(node, env):
    host_dir, bundle = node
    result = run_hook((["/bin/sh"], env), state(bundle), str(host_dir))
    assert result.returncode == 0, result.stderr


def test_verify_hook_state_spacing_accepted(shell_env, node):
    host_dir, bundle = node
    result = run_hook(shell_env, json.dumps(json.loads(state(bundle)), indent=4), str(host_dir))
    assert result.returncode == 0, result.stderr


def test_verify_hook_nono_symlink_rejected(shell_env, node, tmp_path):
    host_dir, bundle = node
    rootfs = bundle / "rootfs"
    (rootfs / "data" / "tools").mkdir(parents=True)
    (rootfs / "nono" / "nono").rename(rootfs / "data" / "tools" / "nono")
    (rootfs / "nono").rmdir()
    (rootfs / "nono").symlink_to("/data/tools")
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert_rejected(result, "/nono in the container image is a symlink")


def test_verify_hook_relative_nono_symlink_rejected(shell_env, node):
    # Even a link whose target holds the trusted binary is rejected.
    host_dir, bundle = node
    rootfs = bundle / "rootfs"
    (rootfs / "nono").rename(rootfs / "real-nono")
    (rootfs / "nono").symlink_to("real-nono")
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert_rejected(result, "is a symlink")


def test_verify_hook_wrong_inode_rejected(shell_env, node):
    host_dir, bundle = node
    binary = bundle / "rootfs" / "nono" / "nono"
    binary.unlink()
    shutil.copyfile(host_dir / "nono", binary)
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert_rejected(result, f"is not the trusted '{host_dir}/nono'")


def test_verify_hook_nono_binary_symlink_rejected(shell_env, node):
    host_dir, bundle = node
    binary = bundle / "rootfs" / "nono" / "nono"
    binary.unlink()
    binary.symlink_to(host_dir / "nono")
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert_rejected(result, "/nono/nono is a symlink")


def test_verify_hook_nono_missing_rejected(shell_env, node):
    host_dir, bundle = node
    shutil.rmtree(bundle / "rootfs" / "nono")
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert_rejected(result, "/nono is not a directory")


def test_verify_hook_nono_binary_missing_rejected(shell_env, node):
    host_dir, bundle = node
    (bundle / "rootfs" / "nono" / "nono").unlink()
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert_rejected(result, "/nono/nono not found")


def test_verify_hook_host_binary_missing_rejected(shell_env, node, tmp_path):
    _, bundle = node
    result = run_hook(shell_env, state(bundle), str(tmp_path / "absent"))
    assert_rejected(result, "cannot stat the trusted nono binary")


def test_verify_hook_missing_config_rejected(shell_env, node):
    host_dir, bundle = node
    (bundle / "config.json").unlink()
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert_rejected(result, "config.json' not found")


BAD_STATES = [
    pytest.param("", "no single plain \"bundle\"", id="empty"),
    pytest.param("not json", "no single plain \"bundle\"", id="not-json"),
    pytest.param('{"id": "c1", "status": "creating"}', "no single plain \"bundle\"", id="no-bundle"),
    pytest.param('{"bundle": 42}', "no single plain \"bundle\"", id="bundle-number"),
    pytest.param('{"bundle": "/b\\u002fx"}', "no single plain \"bundle\"", id="bundle-escaped"),
    pytest.param('{"bundle": "relative/bundle"}', "not an absolute path", id="bundle-relative"),
]


@pytest.mark.parametrize(("stdin", "expected"), BAD_STATES)
def test_verify_hook_bad_state_rejected(shell_env, node, stdin, expected):
    host_dir, _ = node
    result = run_hook(shell_env, stdin, str(host_dir))
    assert_rejected(result, expected)


def test_verify_hook_second_bundle_key_rejected(shell_env, node, tmp_path):
    # An annotation key "bundle" must not be able to pick the bundle.
    host_dir, bundle = node
    result = run_hook(shell_env, state(bundle, annotations={"bundle": str(tmp_path)}), str(host_dir))
    assert_rejected(result, "no single plain \"bundle\"")


BAD_CONFIGS = [
    pytest.param("{}", "no \"root\" object", id="no-root"),
    pytest.param("not json", "no \"root\" object", id="not-json"),
    pytest.param('{"root": {"readonly": true}}', "no single plain root.path", id="no-path"),
    pytest.param('{"root": {"path": ""}}', "empty root.path", id="empty-path"),
    pytest.param('{"root": {"path": "root\\u0066s"}}', "no single plain root.path", id="escaped-path"),
    pytest.param('{"root": {"path": "rootfs"}, "x": {"root": {"path": "/"}}}', "more than one", id="two-roots"),
]


@pytest.mark.parametrize(("config", "expected"), BAD_CONFIGS)
def test_verify_hook_bad_config_rejected(shell_env, node, config, expected):
    host_dir, bundle = node
    (bundle / "config.json").write_text(config)
    result = run_hook(shell_env, state(bundle), str(host_dir))
    assert_rejected(result, expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param((), "expected one argument", id="none"),
        pytest.param(("/a", "/b"), "expected one argument", id="two"),
        pytest.param(("opt/nono-nri",), "not an absolute path", id="relative"),
    ],
)
def test_verify_hook_bad_arguments_rejected(shell_env, node, args, expected):
    _, bundle = node
    result = run_hook(shell_env, state(bundle), *args)
    assert_rejected(result, expected)
