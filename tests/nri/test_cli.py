"""The `kubefence nri` command line."""

import pytest

from kubefence.cli import build_parser
from kubefence.nri.config import CONFIG_KEYS


def test_cli_nri_registered():
    args = build_parser().parse_args(["nri", "--config", "/etc/kubefence/nri.toml"])
    assert args.command == "nri"
    assert args.config == "/etc/kubefence/nri.toml"


@pytest.mark.parametrize("key", CONFIG_KEYS)
def test_cli_nri_flag_per_config_key(key):
    help_text = build_parser()._subparsers._group_actions[0].choices["nri"].format_help()
    assert f"--{key.replace('_', '-')}" in help_text


def test_cli_nri_flags_override_values():
    args = build_parser().parse_args(
        ["nri", "--plugin-index", "42", "--runtime-handlers", "a,b", "--no-validator"]
    )
    assert args.plugin_index == "42"
    assert args.runtime_handlers == ["a", "b"]
    assert args.validator is False


def test_cli_nri_warns_about_dynamic_nono(tmp_path):
    """A dynamically linked nono starts with a warning naming its loader; a script gets one too."""
    import os
    import shutil
    import time

    from .plugin_harness import PluginProcess, make_host_dir

    host = make_host_dir(tmp_path / "host")
    shutil.copy("/bin/true", host / "nono")  # dynamically linked on Debian
    os.chmod(host / "nono", 0o755)
    plugin = PluginProcess(tmp_path, str(tmp_path / "missing.sock"), nono_host_dir=str(host)).start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not plugin.events("effective configuration"):
            time.sleep(0.1)
        [warning] = [line for line in plugin.log_lines() if line["event"].startswith("nono binary is dynamically linked")]
        assert warning["level"] == "warning"
        assert warning["path"] == str(host / "nono")
        assert "ld-linux" in warning["interpreter"]
    finally:
        plugin.stop()


def test_cli_nri_verify_hook_missing_stops_startup(tmp_path):
    """With verify_hook on and no hook script in the host directory, start-up fails with exit status 2."""
    from kubefence.nri.cli import EXIT_STARTUP_FAILED

    from .plugin_harness import PluginProcess

    plugin = PluginProcess(tmp_path, str(tmp_path / "missing.sock"), verify_hook=True).start()
    try:
        assert plugin.process.wait(30) == EXIT_STARTUP_FAILED
    finally:
        plugin.stop()
    [failure] = plugin.events("start-up check failed")
    assert failure["check"] == "verify_hook"
    assert "kubefence-verify" in failure["error"]
    assert "does not exist" in failure["error"]


def test_cli_nri_verify_hook_present_starts(tmp_path):
    import os
    import time

    from .plugin_harness import PluginProcess, make_host_dir

    host = make_host_dir(tmp_path / "host")
    (host / "kubefence-verify").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(host / "kubefence-verify", 0o755)
    plugin = PluginProcess(tmp_path, str(tmp_path / "missing.sock"), nono_host_dir=str(host), verify_hook=True).start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not plugin.events("effective configuration"):
            time.sleep(0.1)
        [started] = plugin.events("effective configuration")
        assert started["verify_hook"] is True
        assert plugin.events("start-up check failed") == []
    finally:
        plugin.stop()
