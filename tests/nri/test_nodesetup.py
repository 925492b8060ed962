"""`kubefence node-setup` on real files: containerd's default configs, a host directory, a gRPC socket.

containerd itself cannot run here, so the `auto` version lookup talks to a
small gRPC server on a unix socket that implements containerd's Version
service (the method path and message fields of containerd's version.proto).
"""

import argparse
import hashlib
import json
import os
import shutil
import stat
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import tomlkit

from kubefence.nri import nodesetup
from kubefence.nri.containerd_config import NRI_PLUGIN_ID

DATA = Path(__file__).parent.parent / "data" / "containerd"
NONO_CONTENT = b"\x7fELF stand-in for the nono binary\n"
NONO_SHA256 = hashlib.sha256(NONO_CONTENT).hexdigest()

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="node-setup sets root ownership, which needs root")


def _run(capsys, *arguments: str) -> tuple[int, dict]:
    parser = argparse.ArgumentParser(prog="kubefence")
    nodesetup.register(parser.add_subparsers())
    args = parser.parse_args(["node-setup", *arguments])
    code = args.func(args)
    report = json.loads(capsys.readouterr().out)
    return code, report


@pytest.fixture
def node(tmp_path):
    """A fake node root: the nono source binary, an empty host directory path, a config folder."""
    source = tmp_path / "image" / "nono"
    source.parent.mkdir()
    source.write_bytes(NONO_CONTENT)
    (tmp_path / "etc-containerd").mkdir()
    return tmp_path


def _arguments(node: Path, config_name: str, version: str, *extra: str) -> list[str]:
    config = node / "etc-containerd" / "config.toml"
    if config_name and not config.exists():
        shutil.copy(DATA / config_name, config)
    return [
        "--nono-binary", str(node / "image" / "nono"),
        "--host-dir", str(node / "opt-nono-nri"),
        "--containerd-config", str(config),
        "--containerd-version", version,
        "--containerd-address", str(node / "no-containerd.sock"),
        *extra,
    ]


def _backups(node: Path) -> list[Path]:
    return sorted((node / "etc-containerd").glob(f"config.toml{nodesetup.BACKUP_SUFFIX}*"))


@needs_root
@pytest.mark.parametrize(
    ("config_name", "version", "enforced"),
    [("config-v1.7.24-default.toml", "1.7.24", False), ("config-v2.2.2-default.toml", "2.2.2", True)],
    ids=["1.7.24", "2.2.2"],
)
def test_node_setup_edits_then_is_no_op(capsys, node, config_name, version, enforced):
    original = (DATA / config_name).read_text()

    code, report = _run(capsys, *_arguments(node, config_name, version))

    assert code == nodesetup.EXIT_RESTART_NEEDED
    assert report["restart_needed"] is True
    assert report["containerd"]["required_plugins_enforced"] is enforced
    config = node / "etc-containerd" / "config.toml"
    nri = tomlkit.parse(config.read_text()).unwrap()["plugins"][NRI_PLUGIN_ID]
    assert nri["disable"] is False
    assert nri.get("default_validator", {}).get("enable", False) is enforced
    backups = _backups(node)
    assert [str(path) for path in backups] == [report["containerd"]["backup"]]
    assert backups[0].read_text() == original

    code, report = _run(capsys, *_arguments(node, config_name, version))

    assert code == nodesetup.EXIT_OK
    assert report["restart_needed"] is False
    assert report["changed"] is False
    assert report["containerd"]["changes"] == []
    assert report["containerd"]["backup"] is None
    assert len(_backups(node)) == 1


@needs_root
def test_node_setup_1_7_reports_validator_missing(capsys, node):
    _, report = _run(capsys, *_arguments(node, "config-v1.7.24-default.toml", "1.7.24"))

    assert any("required-plugins annotations are not enforced" in warning for warning in report["warnings"])


def test_node_setup_1_6_unsupported(capsys, node):
    code, report = _run(capsys, *_arguments(node, "config-v1.6.20-default.toml", "1.6.20"))

    assert code == nodesetup.EXIT_FAILED
    assert "containerd 1.6.20 has no NRI support" in report["error"]
    assert report["changed"] is False
    assert (node / "etc-containerd" / "config.toml").read_text() == (DATA / "config-v1.6.20-default.toml").read_text()
    assert _backups(node) == []
    # The config is checked before the binary is installed.
    assert not (node / "opt-nono-nri").exists()


def test_node_setup_invalid_toml_fails_clearly(capsys, node):
    config = node / "etc-containerd" / "config.toml"
    config.write_text('version = 2\n[plugins."io.containerd.nri.v1.nri"\n')

    code, report = _run(capsys, *_arguments(node, "", "2.2.2"))

    assert code == nodesetup.EXIT_FAILED
    assert report["error"].startswith(f"{config}: invalid TOML")
    assert config.read_text() == 'version = 2\n[plugins."io.containerd.nri.v1.nri"\n'
    assert _backups(node) == []


def test_node_setup_dry_run_changes_nothing(capsys, node):
    arguments = _arguments(node, "config-v2.2.2-default.toml", "2.2.2", "--dry-run")
    parser = argparse.ArgumentParser(prog="kubefence")
    nodesetup.register(parser.add_subparsers())
    args = parser.parse_args(["node-setup", *arguments])

    code = args.func(args)
    captured = capsys.readouterr()
    report = json.loads(captured.out)

    assert code == nodesetup.EXIT_RESTART_NEEDED
    assert report["dry_run"] is True
    assert "-      enable = false\n+      enable = true\n" in report["diff"]
    assert report["diff"] in captured.err
    assert (node / "etc-containerd" / "config.toml").read_text() == (DATA / "config-v2.2.2-default.toml").read_text()
    assert _backups(node) == []
    assert not (node / "opt-nono-nri").exists()


@needs_root
def test_node_setup_keeps_config_mode(capsys, node):
    arguments = _arguments(node, "config-v2.2.2-default.toml", "2.2.2")
    config = node / "etc-containerd" / "config.toml"
    config.chmod(0o600)

    _run(capsys, *arguments)

    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(_backups(node)[0].stat().st_mode) == 0o600


def test_node_setup_config_symlink_rejected(capsys, node):
    target = node / "elsewhere.toml"
    shutil.copy(DATA / "config-v2.2.2-default.toml", target)
    (node / "etc-containerd" / "config.toml").symlink_to(target)

    code, report = _run(capsys, *_arguments(node, "", "2.2.2"))

    assert code == nodesetup.EXIT_FAILED
    assert "symlinks are rejected" in report["error"]
    assert target.read_text() == (DATA / "config-v2.2.2-default.toml").read_text()


@needs_root
def test_node_setup_missing_config_is_created(capsys, node):
    code, report = _run(capsys, *_arguments(node, "", "2.2.2"))

    assert code == nodesetup.EXIT_RESTART_NEEDED
    document = tomlkit.parse((node / "etc-containerd" / "config.toml").read_text()).unwrap()
    assert document == {"version": 3, "plugins": {NRI_PLUGIN_ID: {"default_validator": {"enable": True}}}}
    assert report["containerd"]["backup"] is None


# --- containerd version lookup -------------------------------------------


def _version_response(version: str) -> bytes:
    """Encode containerd's VersionResponse {string version = 1; string revision = 2;}."""
    version_bytes = version.encode()
    revision = b"0123456789abcdef"
    return bytes([0x0A, len(version_bytes)]) + version_bytes + bytes([0x12, len(revision)]) + revision


@pytest.fixture
def fake_containerd(tmp_path):
    """Serve containerd's Version service on a unix socket; yields (socket path, requests seen)."""
    seen: list[bytes] = []
    socket_path = tmp_path / "containerd.sock"

    def version(request, context):
        seen.append(request)
        return _version_response("v2.2.2")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    handler = grpc.method_handlers_generic_handler(
        "containerd.services.version.v1.Version",
        {
            "Version": grpc.unary_unary_rpc_method_handler(
                version, request_deserializer=lambda data: data, response_serializer=lambda data: data
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    yield socket_path, seen
    server.stop(grace=None)


def test_query_containerd_version_over_socket(fake_containerd):
    socket_path, seen = fake_containerd

    assert nodesetup.query_containerd_version(str(socket_path)) == "v2.2.2"
    assert seen == [b""]


@needs_root
def test_node_setup_auto_version_asks_containerd(capsys, node, fake_containerd):
    socket_path, _ = fake_containerd
    arguments = _arguments(node, "config-v1.7.24-default.toml", "auto")
    arguments[arguments.index("--containerd-address") + 1] = str(socket_path)

    code, report = _run(capsys, *arguments)

    assert code == nodesetup.EXIT_RESTART_NEEDED
    assert report["containerd"]["version"] == "2.2.2"
    assert report["containerd"]["version_source"] == "containerd"
    # A 1.7 file on a node upgraded to 2.2 gets the validator table.
    nri = tomlkit.parse((node / "etc-containerd" / "config.toml").read_text()).unwrap()["plugins"][NRI_PLUGIN_ID]
    assert nri["default_validator"]["enable"] is True


@needs_root
def test_node_setup_auto_version_falls_back_to_config(capsys, node):
    code, report = _run(capsys, *_arguments(node, "config-v2.2.2-default.toml", "auto"))

    assert code == nodesetup.EXIT_RESTART_NEEDED
    assert report["containerd"]["version_source"] == "config"
    address = str(node / "no-containerd.sock")
    assert report["warnings"][0] == (
        f"asking containerd at {address!r} for its version failed (socket {address!r} not found); using 2.2.0, "
        "the oldest release the config file can come from; pass --containerd-version to give the exact release"
    )


def test_node_setup_auto_version_unknown_fails(capsys, node):
    code, report = _run(capsys, *_arguments(node, "config-v1.7.24-default.toml", "auto"))

    assert code == nodesetup.EXIT_FAILED
    assert "cannot tell the containerd version" in report["error"]
    assert "--containerd-version" in report["error"]


def test_node_setup_invalid_version_option_fails(capsys, node):
    code, report = _run(capsys, *_arguments(node, "config-v2.2.2-default.toml", "latest"))

    assert code == nodesetup.EXIT_FAILED
    assert "invalid containerd version 'latest'" in report["error"]


@pytest.mark.parametrize(
    "payload",
    [b"\x0a\x10v2", b"\x12\x02ab", b"\x0d\x00\x00\x00\x00", b"\x0a\x80"],
    ids=["truncated-string", "no-version-field", "fixed32-wire-type", "truncated-varint"],
)
def test_decode_version_response_invalid_raises(payload):
    with pytest.raises(ValueError):
        nodesetup._decode_version_response(payload)


# --- nono binary ---------------------------------------------------------------


@needs_root
def test_install_binary_root_owned_0755(node):
    result = nodesetup.install_binary(node / "image" / "nono", node / "opt-nono-nri", NONO_SHA256)

    target = node / "opt-nono-nri" / "nono"
    assert target.read_bytes() == NONO_CONTENT
    for path in (target, target.parent):
        status = path.lstat()
        assert (status.st_uid, status.st_gid) == (0, 0)
        assert stat.S_IMODE(status.st_mode) == 0o755
    assert result.sha256 == NONO_SHA256
    assert not list(target.parent.glob(".*kubefence-tmp"))


@needs_root
def test_install_binary_second_run_is_no_op(node):
    nodesetup.install_binary(node / "image" / "nono", node / "opt-nono-nri")
    before = (node / "opt-nono-nri" / "nono").stat().st_ino

    result = nodesetup.install_binary(node / "image" / "nono", node / "opt-nono-nri")

    assert result.changes == ()
    assert (node / "opt-nono-nri" / "nono").stat().st_ino == before


@needs_root
def test_install_binary_replaces_changed_content(node):
    host = node / "opt-nono-nri"
    nodesetup.install_binary(node / "image" / "nono", host)
    (host / "nono").write_bytes(b"tampered")

    result = nodesetup.install_binary(node / "image" / "nono", host)

    assert (host / "nono").read_bytes() == NONO_CONTENT
    assert result.changes == (f"{host / 'nono'}: installed nono {NONO_SHA256[:12]}",)


@needs_root
def test_install_binary_repairs_mode_and_owner(node):
    host = node / "opt-nono-nri"
    nodesetup.install_binary(node / "image" / "nono", host)
    os.chown(host / "nono", 1000, 1000)
    os.chmod(host / "nono", 0o777)
    os.chmod(host, 0o777)

    result = nodesetup.install_binary(node / "image" / "nono", host)

    assert len(result.changes) == 2
    for path in (host, host / "nono"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert path.stat().st_uid == 0


def test_install_binary_digest_mismatch_installs_nothing(node):
    wrong = "0" * 64

    with pytest.raises(nodesetup.NodeSetupError) as caught:
        nodesetup.install_binary(node / "image" / "nono", node / "opt-nono-nri", wrong)

    assert f"has SHA-256 {NONO_SHA256}, expected {wrong}" in str(caught.value)
    assert not (node / "opt-nono-nri").exists()


@pytest.mark.parametrize("digest", ["abc", "g" * 64, NONO_SHA256 + "0"], ids=["short", "not-hex", "long"])
def test_install_binary_invalid_digest_raises(node, digest):
    with pytest.raises(nodesetup.NodeSetupError) as caught:
        nodesetup.install_binary(node / "image" / "nono", node / "opt-nono-nri", digest)

    assert f"invalid --nono-sha256 {digest!r}" in str(caught.value)


def test_install_binary_host_dir_symlink_rejected(node):
    elsewhere = node / "elsewhere"
    elsewhere.mkdir()
    (node / "opt-nono-nri").symlink_to(elsewhere)

    with pytest.raises(nodesetup.NodeSetupError) as caught:
        nodesetup.install_binary(node / "image" / "nono", node / "opt-nono-nri")

    assert "symlinks are rejected" in str(caught.value)
    assert list(elsewhere.iterdir()) == []


@needs_root
def test_install_binary_target_directory_rejected(node):
    (node / "opt-nono-nri" / "nono").mkdir(parents=True)
    os.chmod(node / "opt-nono-nri", 0o755)

    with pytest.raises(nodesetup.NodeSetupError) as caught:
        nodesetup.install_binary(node / "image" / "nono", node / "opt-nono-nri")

    assert "is not a regular file" in str(caught.value)


def test_install_binary_missing_source_raises(node):
    with pytest.raises(nodesetup.NodeSetupError) as caught:
        nodesetup.install_binary(node / "image" / "absent", node / "opt-nono-nri")

    assert "cannot read the nono binary" in str(caught.value)


@needs_root
def test_node_setup_no_binary_skips_install(capsys, node):
    code, report = _run(capsys, *_arguments(node, "config-v2.2.2-default.toml", "2.2.2", "--no-binary"))

    assert code == nodesetup.EXIT_RESTART_NEEDED
    assert "binary" not in report
    assert "verify_hook" not in report
    assert not (node / "opt-nono-nri").exists()


@needs_root
def test_node_setup_binary_only(capsys, node):
    code, report = _run(
        capsys, *_arguments(node, "", "2.2.2", "--no-containerd-config", "--nono-sha256", NONO_SHA256)
    )

    assert code == nodesetup.EXIT_OK
    assert report["changed"] is True
    assert report["restart_needed"] is False
    assert report["binary"]["sha256"] == NONO_SHA256
    assert report["verify_hook"]["path"] == str(node / "opt-nono-nri" / "kubefence-verify")
    assert report["verify_hook"]["changes"]
    assert (node / "opt-nono-nri" / "kubefence-verify").is_file()
    assert not (node / "etc-containerd" / "config.toml").exists()


@needs_root
def test_node_setup_runtime_handler_added_once(capsys, node):
    arguments = _arguments(node, "config-v2.2.2-default.toml", "2.2.2", "--runtime-handler", "nono-runc")

    code, report = _run(capsys, *arguments)
    again_code, again = _run(capsys, *arguments)

    assert code == nodesetup.EXIT_RESTART_NEEDED
    assert "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nono-runc: (absent) -> a copy of 'runc'" in (
        report["containerd"]["changes"]
    )
    runtimes = tomlkit.parse((node / "etc-containerd" / "config.toml").read_text()).unwrap()["plugins"][
        "io.containerd.cri.v1.runtime"
    ]["containerd"]["runtimes"]
    assert runtimes["nono-runc"] == runtimes["runc"]
    assert again_code == nodesetup.EXIT_OK
    assert again["containerd"]["changes"] == []


def test_node_setup_binary_config_fails_clearly(capsys, node):
    config = node / "etc-containerd" / "config.toml"
    config.write_bytes(b"\xff\xfe\x00bin")

    code, report = _run(capsys, *_arguments(node, "", "2.2.2"), "--dry-run")

    assert code == nodesetup.EXIT_FAILED
    assert report["error"] == f"containerd config {str(config)!r} is not UTF-8 text (invalid byte at offset 0)"
    assert config.read_bytes() == b"\xff\xfe\x00bin"


@pytest.mark.parametrize(
    "flags", [["--no-binary", "--no-containerd-config"], ["--no-containerd-config", "--no-binary"]], ids=["binary-first", "config-first"]
)
def test_node_setup_skipping_both_steps_argument_error(capsys, flags):
    parser = argparse.ArgumentParser(prog="kubefence")
    nodesetup.register(parser.add_subparsers())
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["node-setup", *flags])
    assert caught.value.code == 2
    assert "--no-binary and --no-containerd-config together skip every step" in capsys.readouterr().err

PACKAGED_HOOK = (Path(nodesetup.__file__).parent / "verify_nono.sh").read_bytes()


@needs_root
def test_install_verify_hook_root_owned_0755(node):
    result = nodesetup.install_verify_hook(node / "opt-nono-nri")

    target = node / "opt-nono-nri" / "kubefence-verify"
    assert target.read_bytes() == PACKAGED_HOOK
    for path in (target, target.parent):
        status = path.lstat()
        assert (status.st_uid, status.st_gid) == (0, 0)
        assert stat.S_IMODE(status.st_mode) == 0o755
    assert result.path == str(target)
    assert result.sha256 == hashlib.sha256(PACKAGED_HOOK).hexdigest()


@needs_root
def test_install_verify_hook_second_run_is_no_op(node):
    nodesetup.install_verify_hook(node / "opt-nono-nri")

    result = nodesetup.install_verify_hook(node / "opt-nono-nri")

    assert result.changes == ()


@needs_root
def test_install_verify_hook_replaces_changed_content(node):
    host = node / "opt-nono-nri"
    nodesetup.install_verify_hook(host)
    (host / "kubefence-verify").write_text("#!/bin/sh\nexit 0\n")

    result = nodesetup.install_verify_hook(host)

    assert (host / "kubefence-verify").read_bytes() == PACKAGED_HOOK
    assert result.changes == (f"{host / 'kubefence-verify'}: installed verify hook {result.sha256[:12]}",)


@needs_root
def test_install_verify_hook_dry_run_writes_nothing(node):
    result = nodesetup.install_verify_hook(node / "opt-nono-nri", dry_run=True)

    assert result.changes
    assert not (node / "opt-nono-nri").exists()


@needs_root
def test_install_verify_hook_passes_plugin_check(node):
    from kubefence.nri.checks import check_verify_hook

    host = node / "opt-nono-nri"
    nodesetup.install_binary(node / "image" / "nono", host)
    nodesetup.install_verify_hook(host)

    assert check_verify_hook(str(host)) == str(host / "kubefence-verify")
