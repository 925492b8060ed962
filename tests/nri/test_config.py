import argparse

import pytest

from kubefence.common.policy import DEFAULT_ALLOWED_PROFILES
from kubefence.common.settings import ConfigError
from kubefence.nri.config import (
    CONFIG_KEYS,
    PluginConfig,
    add_config_arguments,
    clean_path,
    load_config,
    overrides_from_args,
    split_host_port,
    verify_hook_path,
)


def _write(tmp_path, text):
    path = tmp_path / "nri.toml"
    path.write_text(text)
    return str(path)


def test_config_defaults():
    config = load_config(None, {})
    assert config.socket_path == "/var/run/nri/nri.sock"
    assert config.plugin_name == "kubefence"
    assert config.plugin_index == "90"
    assert config.runtime_handlers == ("nono-runc", "kata-nono-sandbox")
    assert config.default_profile == "default"
    assert config.allowed_profiles == DEFAULT_ALLOWED_PROFILES
    assert config.on_missing_profile == "reject"
    assert config.nono_host_dir == "/opt/nono-nri"
    assert config.state_dir == "/var/lib/kubefence-nri"
    assert config.seccomp_profile == ""
    assert config.validator is True
    assert config.verify_hook is False
    assert config.metrics_address == "0.0.0.0:9090"
    assert config.log_level == "info"
    assert config.registration_name == "90-kubefence"


def test_config_reads_every_key(tmp_path):
    path = _write(
        tmp_path,
        """
socket_path = "/run/nri/nri.sock"
plugin_name = "kubefence-test"
plugin_index = "10"
runtime_handlers = ["nono-runc"]
default_profile = "swival"
allowed_profiles = ["default", "swival"]
on_missing_profile = "default"
nono_host_dir = "/srv/nono"
state_dir = "/var/lib/kf"
seccomp_profile = "restricted"
validator = false
verify_hook = true
metrics_address = "127.0.0.1:9191"
log_level = "debug"
""",
    )
    config = load_config(path, {})
    assert config == PluginConfig(
        socket_path="/run/nri/nri.sock",
        plugin_name="kubefence-test",
        plugin_index="10",
        runtime_handlers=("nono-runc",),
        default_profile="swival",
        allowed_profiles=("default", "swival"),
        on_missing_profile="default",
        nono_host_dir="/srv/nono",
        state_dir="/var/lib/kf",
        seccomp_profile="restricted",
        validator=False,
        verify_hook=True,
        metrics_address="127.0.0.1:9191",
        log_level="debug",
    )


def test_config_override_beats_file(tmp_path):
    path = _write(tmp_path, 'plugin_index = "10"\nvalidator = true\n')
    config = load_config(path, {"plugin_index": "20", "validator": False, "state_dir": None})
    assert config.plugin_index == "20"
    assert config.validator is False
    assert config.state_dir == "/var/lib/kubefence-nri"


def test_config_unknown_key_rejected(tmp_path):
    path = _write(tmp_path, 'plugin_indx = "10"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    message = str(caught.value)
    assert "'plugin_indx'" in message
    assert "plugin_index" in message
    assert path in message


def test_config_unknown_override_rejected():
    with pytest.raises(ConfigError, match="unknown key 'nono_dir'"):
        load_config(None, {"nono_dir": "/x"})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        pytest.param("plugin_index", "9", "'9'", id="index-one-digit"),
        pytest.param("plugin_index", "100", "'100'", id="index-three-digits"),
        pytest.param("plugin_index", "a1", "'a1'", id="index-letter"),
        pytest.param("plugin_index", 90, "write it in quotes", id="index-int"),
        pytest.param("plugin_name", "", "''", id="name-empty"),
        pytest.param("plugin_name", "kube fence", "'kube fence'", id="name-space"),
        pytest.param("socket_path", "nri.sock", "'nri.sock'", id="socket-relative"),
        pytest.param("runtime_handlers", [], "must not be empty", id="handlers-empty"),
        pytest.param("runtime_handlers", ["nono-runc", "nono-runc"], "'nono-runc'", id="handlers-duplicate"),
        pytest.param("runtime_handlers", "nono-runc", "'nono-runc'", id="handlers-string"),
        pytest.param("runtime_handlers", ["a,b"], "'a,b'", id="handlers-comma"),
        pytest.param("allowed_profiles", ["default", "a_b"], "'a_b'", id="profiles-underscore"),
        pytest.param("allowed_profiles", ["default", "--allow-all"], "'--allow-all'", id="profiles-flag"),
        pytest.param("default_profile", "x" * 65, "x" * 65, id="default-too-long"),
        pytest.param("default_profile", "codex-x", "not in allowed_profiles", id="default-not-allowed"),
        pytest.param("on_missing_profile", "allow", "'allow'", id="on-missing-unknown"),
        pytest.param("nono_host_dir", "opt/nono", "'opt/nono'", id="host-dir-relative"),
        pytest.param("nono_host_dir", "/", "root directory", id="host-dir-root"),
        pytest.param("nono_host_dir", "/opt/nono-nri/", "'/opt/nono-nri'", id="host-dir-trailing-slash"),
        pytest.param("nono_host_dir", "/opt//nono-nri", "'/opt/nono-nri'", id="host-dir-double-slash"),
        pytest.param("nono_host_dir", "/opt/x/../nono-nri", "'/opt/nono-nri'", id="host-dir-dotdot"),
        pytest.param("state_dir", "//", "root directory", id="state-dir-root"),
        pytest.param("seccomp_profile", "unconfined", "'unconfined'", id="seccomp-unknown"),
        pytest.param("validator", "yes", "'yes'", id="validator-string"),
        pytest.param("verify_hook", 1, "1", id="verify-hook-integer"),
        pytest.param("metrics_address", "9090", "'9090'", id="metrics-no-host"),
        pytest.param("metrics_address", "0.0.0.0:0", "'0.0.0.0:0'", id="metrics-port-zero"),
        pytest.param("metrics_address", "0.0.0.0:70000", "'0.0.0.0:70000'", id="metrics-port-high"),
        pytest.param("metrics_address", "::1:9090", "'::1:9090'", id="metrics-ipv6-no-brackets"),
        pytest.param("log_level", "trace", "'trace'", id="log-level-unknown"),
    ],
)
def test_config_invalid_value_named(key, value, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(None, {key: value})
    message = str(caught.value)
    assert key in message
    assert expected in message


def test_config_lists_every_problem():
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"plugin_index": "1", "log_level": "loud"})
    assert len(caught.value.problems) == 2


def test_config_missing_file_named(tmp_path):
    missing = str(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="absent.toml"):
        load_config(missing, {})


def test_config_invalid_toml_named(tmp_path):
    path = _write(tmp_path, "plugin_index = \n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert "invalid TOML" in str(caught.value)
    assert path in str(caught.value)


def test_config_direct_construction_validated():
    with pytest.raises(ConfigError, match="plugin_index"):
        PluginConfig(plugin_index="9")


def test_config_wrong_type_stops_before_other_checks():
    with pytest.raises(ConfigError, match="runtime_handlers: expected a list of strings"):
        PluginConfig(runtime_handlers=["nono-runc"])


def _parser():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser


def test_config_flag_for_every_key():
    options = {option for action in _parser()._actions for option in action.option_strings}
    for key in CONFIG_KEYS:
        assert "--" + key.replace("_", "-") in options


def test_config_flags_become_overrides():
    args = _parser().parse_args(
        [
            "--plugin-index", "15",
            "--runtime-handlers", "nono-runc, kata-nono",
            "--allowed-profiles", "default,swival",
            "--no-validator",
            "--verify-hook",
            "--seccomp-profile", "",
            "--metrics-address", "[::1]:9100",
        ]
    )
    overrides = overrides_from_args(args)
    assert overrides == {
        "plugin_index": "15",
        "runtime_handlers": ["nono-runc", "kata-nono"],
        "allowed_profiles": ["default", "swival"],
        "validator": False,
        "verify_hook": True,
        "seccomp_profile": "",
        "metrics_address": "[::1]:9100",
    }
    config = load_config(None, overrides)
    assert config.runtime_handlers == ("nono-runc", "kata-nono")
    assert config.validator is False
    assert config.verify_hook is True


def test_config_no_verify_hook_flag():
    overrides = overrides_from_args(_parser().parse_args(["--no-verify-hook"]))
    assert overrides == {"verify_hook": False}


def test_config_verify_hook_path_in_host_dir():
    config = PluginConfig(nono_host_dir="/srv/nono")
    assert verify_hook_path(config) == "/srv/nono/kubefence-verify"


def test_config_no_flags_no_overrides():
    assert overrides_from_args(_parser().parse_args([])) == {}


def test_config_bad_flag_value_names_flag():
    overrides = overrides_from_args(_parser().parse_args(["--runtime-handlers", "a,,b"]))
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert "runtime_handlers" in str(caught.value)
    assert "''" in str(caught.value)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("//nono", "/nono", id="double-leading-slash"),
        pytest.param("/nono//", "/nono", id="trailing-slashes"),
        pytest.param("/nono/./x/..", "/nono", id="dot-and-dotdot"),
        pytest.param("/..", "/", id="above-root"),
        pytest.param("nono", "nono", id="relative"),
        pytest.param("", ".", id="empty"),
    ],
)
def test_clean_path_matches_go(path, expected):
    assert clean_path(path) == expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("0.0.0.0:9090", ("0.0.0.0", 9090), id="ipv4"),
        pytest.param("[::]:80", ("::", 80), id="ipv6"),
        pytest.param("localhost:1", ("localhost", 1), id="hostname"),
    ],
)
def test_split_host_port_accepted(address, expected):
    assert split_host_port(address) == expected


def test_config_binary_file_named(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00bin")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), {})
    assert str(caught.value) == f"{path}: not UTF-8 text (invalid byte at offset 0)"
