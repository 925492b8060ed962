"""Settings of the NRI plugin: a TOML file, overridden by command-line flags.

`load_config` reads the file with `tomllib`, applies the overrides and
builds a `PluginConfig`, which checks every field when it is built. Unknown
keys are errors, and every error names the field and the offending value.
Each key has a flag of the same name (`plugin_index` -> `--plugin-index`)
that `add_config_arguments` adds to an argparse parser.
"""

import argparse
import ipaddress
import posixpath
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from kubefence.common import contracts
from kubefence.common.policy import DEFAULT_ALLOWED_PROFILES
from kubefence.common.profiles import InvalidProfileError, validate_profile
from kubefence.common.settings import ConfigError

ON_MISSING_PROFILE = ("reject", "default")
SECCOMP_PROFILES = ("", "runtime-default", "restricted")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Plugin and runtime handler names end up in the runtime's plugin list and
# in CRI configuration keys, so they keep to a conservative character set.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_PLUGIN_INDEX = re.compile(r"[0-9]{2}")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


@dataclass(frozen=True)
class PluginConfig:
    """Validated settings of one NRI plugin instance.

    Building an instance checks every field and raises ConfigError listing
    each invalid one.
    """

    # Path of the runtime's NRI unix socket. The plugin connects to it.
    socket_path: str = "/var/run/nri/nri.sock"
    # Name the plugin registers with. The webhook lists the same name in the
    # pod's required-plugins annotation, so both must agree.
    plugin_name: str = contracts.DEFAULT_PLUGIN_NAME
    # Two-digit NRI plugin index. The runtime calls plugins in ascending
    # index order (string compare); 90 runs after most mutating plugins.
    plugin_index: str = "90"
    # CRI runtime handler names whose containers are wrapped with nono.
    # Containers of other handlers get no adjustment at all.
    runtime_handlers: tuple[str, ...] = ("nono-runc", "kata-nono-sandbox")
    # Profile used when `on_missing_profile` is "default" and the pod's
    # profile annotation is missing or invalid. Must be in `allowed_profiles`.
    default_profile: str = "default"
    # nono profiles this node accepts in the pod annotation.
    allowed_profiles: tuple[str, ...] = DEFAULT_ALLOWED_PROFILES
    # What happens to an opted-in container whose pod has no valid profile
    # annotation: "reject" fails the create, "default" uses
    # `default_profile` and marks the decision as a fallback.
    on_missing_profile: str = "reject"
    # Absolute host directory that holds the nono binary. It is mounted
    # read-only at /nono in every wrapped container; a /nono mount from any
    # other source is rejected.
    nono_host_dir: str = contracts.DEFAULT_HOST_DIR
    # Absolute directory for the audit records and the single-instance lock.
    state_dir: str = "/var/lib/kubefence-nri"
    # Seccomp policy added to wrapped containers: "" adds none,
    # "runtime-default" gives containers without a policy a baseline deny
    # list, "restricted" also denies io_uring, ptrace, seccomp and
    # pidfd_getfd. "restricted" stops nono from installing its own seccomp
    # network filter, which nono needs on kernels with Landlock ABI below 4.
    seccomp_profile: str = ""
    # Subscribe to ValidateContainerAdjustment (NRI v0.10 and later) and
    # reject a create whose final adjustment undoes the wrapping.
    validator: bool = True
    # Add the OCI createContainer hook `<nono_host_dir>/kubefence-verify` to
    # wrapped containers. Before pivot_root it checks that /nono in the
    # container is the trusted directory, which an image with a /nono
    # symlink and a pod volume at the link's target would otherwise replace.
    # Off by default because only `kubefence node-setup` installs the script,
    # and a hook whose file is missing fails every wrapped create.
    verify_hook: bool = False
    # host:port of the HTTP listener for Prometheus metrics.
    metrics_address: str = "0.0.0.0:9090"
    # Minimum level of the JSON log lines: debug, info, warning or error.
    log_level: str = "info"

    def __post_init__(self) -> None:
        # The other checks assume the right types, so a type error stops here.
        problem = _check_types(self)
        if problem:
            raise ConfigError([problem])
        problems = []
        for check in _FIELD_CHECKS:
            problem = check(self)
            if problem:
                problems.append(problem)
        if problems:
            raise ConfigError(problems)

    @property
    def registration_name(self) -> str:
        """The `<index>-<name>` form the runtime lists registered plugins by."""
        return f"{self.plugin_index}-{self.plugin_name}"


CONFIG_KEYS = tuple(item.name for item in fields(PluginConfig))

# Type each key must have before the field checks run.
_KEY_TYPES = {
    "socket_path": str,
    "plugin_name": str,
    "plugin_index": str,
    "runtime_handlers": tuple,
    "default_profile": str,
    "allowed_profiles": tuple,
    "on_missing_profile": str,
    "nono_host_dir": str,
    "state_dir": str,
    "seccomp_profile": str,
    "validator": bool,
    "verify_hook": bool,
    "metrics_address": str,
    "log_level": str,
}


def _check_absolute_path(value: str, key: str) -> str:
    if not value.startswith("/"):
        return f"{key}: invalid value {value!r}; expected an absolute path"
    if "\x00" in value:
        return f"{key}: invalid value {value!r}; a path must not contain NUL"
    if clean_path(value) == "/":
        return f"{key}: invalid value {value!r}; the root directory is not accepted"
    return ""


def _check_socket_path(config: PluginConfig) -> str:
    return _check_absolute_path(config.socket_path, "socket_path")


def _check_plugin_name(config: PluginConfig) -> str:
    if not _NAME.fullmatch(config.plugin_name):
        return (
            f"plugin_name: invalid value {config.plugin_name!r}; expected 1 to 63 letters, digits, "
            "'.', '_' or '-', starting and ending with a letter or digit"
        )
    return ""


def _check_plugin_index(config: PluginConfig) -> str:
    if not _PLUGIN_INDEX.fullmatch(config.plugin_index):
        return f"plugin_index: invalid value {config.plugin_index!r}; expected exactly two digits such as '90'"
    return ""


def _check_runtime_handlers(config: PluginConfig) -> str:
    handlers = config.runtime_handlers
    if not handlers:
        return "runtime_handlers: must not be empty"
    for handler in handlers:
        if not _NAME.fullmatch(handler):
            return (
                f"runtime_handlers: invalid handler name {handler!r}; expected 1 to 63 letters, digits, "
                "'.', '_' or '-', starting and ending with a letter or digit"
            )
    duplicates = sorted({handler for handler in handlers if handlers.count(handler) > 1})
    if duplicates:
        return f"runtime_handlers: duplicate handler names {duplicates!r}"
    return ""


def _check_allowed_profiles(config: PluginConfig) -> str:
    profiles = config.allowed_profiles
    if not profiles:
        return "allowed_profiles: must not be empty"
    for profile in profiles:
        try:
            validate_profile(profile)
        except InvalidProfileError as error:
            return f"allowed_profiles: {error}"
    duplicates = sorted({profile for profile in profiles if profiles.count(profile) > 1})
    if duplicates:
        return f"allowed_profiles: duplicate profiles {duplicates!r}"
    return ""


def _check_default_profile(config: PluginConfig) -> str:
    try:
        validate_profile(config.default_profile)
    except InvalidProfileError as error:
        return f"default_profile: {error}"
    if config.default_profile not in config.allowed_profiles:
        return (
            f"default_profile: {config.default_profile!r} is not in allowed_profiles "
            f"({', '.join(config.allowed_profiles)})"
        )
    return ""


def _check_choice(key: str, choices: tuple[str, ...]):
    def check(config: PluginConfig) -> str:
        value = getattr(config, key)
        if value not in choices:
            accepted = ", ".join(repr(choice) for choice in choices)
            return f"{key}: invalid value {value!r}; expected one of: {accepted}"
        return ""

    return check


def _check_nono_host_dir(config: PluginConfig) -> str:
    problem = _check_absolute_path(config.nono_host_dir, "nono_host_dir")
    if not problem and clean_path(config.nono_host_dir) != config.nono_host_dir:
        problem = (
            f"nono_host_dir: invalid value {config.nono_host_dir!r}; write it in clean form "
            f"{clean_path(config.nono_host_dir)!r} (no trailing '/', '//', '.' or '..')"
        )
    return problem


def _check_state_dir(config: PluginConfig) -> str:
    return _check_absolute_path(config.state_dir, "state_dir")


def _check_validator(config: PluginConfig) -> str:
    if not isinstance(config.validator, bool):
        return f"validator: expected true or false, got {config.validator!r}"
    return ""


def verify_hook_path(config: PluginConfig) -> str:
    """Return the host path of the createContainer hook script in `nono_host_dir`."""
    return posixpath.join(config.nono_host_dir, contracts.VERIFY_HOOK_NAME)


def _check_metrics_address(config: PluginConfig) -> str:
    try:
        split_host_port(config.metrics_address)
    except ValueError as error:
        return f"metrics_address: {error}"
    return ""


def _check_types(config: PluginConfig) -> str:
    for key, expected in _KEY_TYPES.items():
        value = getattr(config, key)
        if expected is tuple:
            if not isinstance(value, tuple) or not all(isinstance(item, str) for item in value):
                return f"{key}: expected a list of strings, got {value!r}"
        elif not isinstance(value, expected):
            return f"{key}: expected {expected.__name__}, got {value!r}"
    return ""


_FIELD_CHECKS = (
    _check_socket_path,
    _check_plugin_name,
    _check_plugin_index,
    _check_runtime_handlers,
    _check_allowed_profiles,
    _check_default_profile,
    _check_choice("on_missing_profile", ON_MISSING_PROFILE),
    _check_nono_host_dir,
    _check_state_dir,
    _check_choice("seccomp_profile", SECCOMP_PROFILES),
    _check_validator,
    _check_metrics_address,
    _check_choice("log_level", LOG_LEVELS),
)


def clean_path(path: str) -> str:
    """Clean `path` the way Go's `filepath.Clean` does.

    Repeated slashes collapse first, so "//nono" becomes "/nono" (Python's
    `posixpath.normpath` keeps a leading "//"), then "." and ".." resolve
    lexically. An empty path becomes ".".
    """
    collapsed = re.sub(r"/{2,}", "/", path)
    return posixpath.normpath(collapsed) if collapsed else "."


def split_host_port(address: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 hosts in brackets) and check both parts.

    Raises ValueError naming the address and the accepted form.
    """
    accepted = "expected host:port such as '0.0.0.0:9090' or '[::1]:9090', with a port from 1 to 65535"
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"invalid address {address!r}; {accepted}")
    host, _, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"invalid address {address!r}; {accepted}") from None
        host = host[1:-1]
    elif ":" in host or not host:
        raise ValueError(f"invalid address {address!r}; {accepted}")
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"invalid address {address!r}; {accepted}")
    if not port_text.isdigit() or not port_text.isascii() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid address {address!r}; {accepted}")
    return host, int(port_text)


def _coerce(key: str, value: Any, where: str) -> Any:
    """Convert a TOML or flag value to the field type, or raise ConfigError."""
    expected = _KEY_TYPES[key]
    if expected is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError([f"{where}: expected a list of strings, got {value!r}"])
        for item in value:
            if not isinstance(item, str):
                raise ConfigError([f"{where}: expected a list of strings, got item {item!r}"])
        return tuple(value)
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError([f"{where}: expected true or false, got {value!r}"])
        return value
    if not isinstance(value, str):
        hint = " (write it in quotes, for example plugin_index = \"90\")" if key == "plugin_index" else ""
        raise ConfigError([f"{where}: expected a string, got {value!r}{hint}"])
    return value


def load_config(path: str | None, overrides: Mapping[str, Any] | None = None) -> PluginConfig:
    """Read the TOML file at `path` (None: defaults only), apply `overrides`, and validate.

    `overrides` maps config keys to values that replace the file's; a None
    value means "not given". Raises ConfigError naming the file or flag, the
    field and the value.
    """
    document: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except FileNotFoundError:
            raise ConfigError([f"configuration file {path!r} not found"]) from None
        except OSError as error:
            raise ConfigError([f"cannot read configuration file {path!r}: {error.strerror}"]) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError([f"invalid TOML: {error}"], source=path) from None
        except UnicodeDecodeError as error:
            raise ConfigError([f"not UTF-8 text (invalid byte at offset {error.start})"], source=path) from None

    problems: list[str] = []
    values: dict[str, Any] = {}
    sources = [(key, value, key) for key, value in document.items()]
    for key, value in (overrides or {}).items():
        if value is not None:
            sources.append((key, value, f"{key} (--{key.replace('_', '-')})"))
    for key, value, where in sources:
        if key not in CONFIG_KEYS:
            problems.append(f"unknown key {key!r}; accepted keys: {', '.join(CONFIG_KEYS)}")
            continue
        try:
            values[key] = _coerce(key, value, where)
        except ConfigError as error:
            problems.extend(error.problems)
    if problems:
        raise ConfigError(problems, source=path or "")
    try:
        return PluginConfig(**values)
    except ConfigError as error:
        raise ConfigError(error.problems, source=path or "") from None


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")] if text else []


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per config key; a flag given on the command line overrides the file."""
    group = parser.add_argument_group(
        "plugin settings", "Each flag overrides the key of the same name in the configuration file."
    )
    group.add_argument("--socket-path", metavar="PATH", help="NRI unix socket of the runtime (default: /var/run/nri/nri.sock)")
    group.add_argument("--plugin-name", metavar="NAME", help="name the plugin registers with (default: kubefence)")
    group.add_argument(
        "--plugin-index",
        metavar="NN",
        help="two-digit plugin index; the runtime calls plugins in ascending index order (default: 90)",
    )
    group.add_argument(
        "--runtime-handlers",
        metavar="LIST",
        type=_comma_list,
        help="comma-separated CRI runtime handlers whose containers are wrapped "
        "(default: nono-runc,kata-nono-sandbox)",
    )
    group.add_argument(
        "--default-profile",
        metavar="PROFILE",
        help="profile used when --on-missing-profile=default and the annotation is missing or invalid (default: default)",
    )
    group.add_argument(
        "--allowed-profiles",
        metavar="LIST",
        type=_comma_list,
        help=f"comma-separated nono profiles this node accepts (default: {','.join(DEFAULT_ALLOWED_PROFILES)})",
    )
    group.add_argument(
        "--on-missing-profile",
        choices=ON_MISSING_PROFILE,
        help="reject the container or use the default profile when the profile annotation is missing or invalid "
        "(default: reject)",
    )
    group.add_argument(
        "--nono-host-dir",
        metavar="DIR",
        help="host directory with the nono binary, mounted read-only at /nono (default: /opt/nono-nri)",
    )
    group.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory for audit records and the instance lock (default: /var/lib/kubefence-nri)",
    )
    group.add_argument(
        "--seccomp-profile",
        choices=SECCOMP_PROFILES,
        metavar="{'',runtime-default,restricted}",
        help="seccomp policy added to wrapped containers; empty adds none (default: empty)",
    )
    group.add_argument(
        "--validator",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="subscribe to ValidateContainerAdjustment and reject creates that undo the wrapping (default: on)",
    )
    group.add_argument(
        "--verify-hook",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the createContainer hook NONO_HOST_DIR/kubefence-verify, which fails the create unless /nono "
        "in the container is the trusted directory; needs the script from node-setup (default: off)",
    )
    group.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="listen address of the Prometheus metrics endpoint (default: 0.0.0.0:9090)",
    )
    group.add_argument("--log-level", choices=LOG_LEVELS, help="minimum log level (default: info)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Return the config keys whose flags were given, for `load_config`."""
    return {key: getattr(args, key) for key in CONFIG_KEYS if getattr(args, key, None) is not None}
