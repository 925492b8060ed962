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
