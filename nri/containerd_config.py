"""Enable NRI and its default validator in a containerd configuration file.

`edit_config` is a pure function: it takes the file's text and the
containerd version and returns the new text with a list of the changes, so
the caller decides about backups, writing and restarts. The edit goes
through tomlkit, which keeps every other key, comment and the file's
layout.

What each containerd release supports. Sources: the `containerd config
default` output of 1.6.20, 1.7.24 and 2.2.2 (tests/data/containerd), and
containerd's internal/nri/config.go and containerd/nri's
plugins/default-validator on their main branches.

* 1.6 has no NRI at all: the file is left alone and the caller gets an
  `UnsupportedContainerdError`.
* 1.7 has NRI, disabled by default (`disable = true`), and no default
  validator: NRI is enabled, but `required-plugins` annotations are not
  enforced.
* 2.0 and 2.1 enable NRI by default and have no default validator.
  NOTE: taken from the 2.2 release being the first with the validator;
  the 2.0 and 2.1 sources were not read.
* 2.2 adds the builtin default validator under
  `[plugins."io.containerd.nri.v1.nri".default_validator]`, off by default.
  Its key `enable` turns it on; it then rejects the containers of a pod
  whose `required-plugins.noderesource.dev` annotation names a plugin that
  is not registered.

The NRI plugin id `io.containerd.nri.v1.nri` is the same in configuration
version 2 (containerd 1.7 and 2.x) and version 3 (2.x only). Version 1
files use short plugin ids and are rejected rather than guessed at.
"""

import re
from dataclasses import dataclass, field
from typing import Any

NRI_PLUGIN_ID = "io.containerd.nri.v1.nri"
# Location of the CRI runtime handler tables, by configuration version.
CRI_RUNTIMES_PATH = {
    2: ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"),
    3: ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"),
}
# The runtime whose settings a new runc-based handler copies.
BASE_RUNTIME = "runc"
RUNC_RUNTIME_TYPE = "io.containerd.runc.v2"
_HANDLER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
VALIDATOR_TABLE = "default_validator"
DEFAULT_NRI_SOCKET = "/var/run/nri/nri.sock"

_VERSION_PATTERN = re.compile(r"(?:containerd://)?v?(\d+)\.(\d+)(?:\.(\d+))?")


class ContainerdConfigError(ValueError):
    """The configuration file cannot be edited safely (invalid TOML, unsupported layout)."""


class UnsupportedContainerdError(ContainerdConfigError):
    """The containerd release has no NRI support."""


@dataclass(frozen=True, order=True)
class ContainerdVersion:
    """A containerd release number."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> "ContainerdVersion":
        """Read `1.7.24`, `v2.2.2`, `containerd://2.2.2` or `1.7.24~ds1-6` (distribution suffixes are ignored)."""
        match = _VERSION_PATTERN.match(text.strip())
        if match is None:
            raise ValueError(f"invalid containerd version {text!r}: expected MAJOR.MINOR[.PATCH], for example 2.2.2")
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def has_nri(self) -> bool:
        return (self.major, self.minor) >= (1, 7)

    @property
    def nri_enabled_by_default(self) -> bool:
        return self.major >= 2

    @property
    def has_default_validator(self) -> bool:
        return (self.major, self.minor) >= (2, 2)

    @property
    def config_versions(self) -> tuple[int, ...]:
        """Configuration file versions this release reads (version 1 is left out on purpose)."""
        return (2, 3) if self.major >= 2 else (2,)


@dataclass(frozen=True)
class ConfigEdit:
    """The outcome of `edit_config`."""

    text: str
    # One line per changed key: "<dotted key>: <old> -> <new>".
    changes: tuple[str, ...]
    required_plugins_enforced: bool
    nri_socket_path: str
    warnings: tuple[str, ...] = ()
    # Keys (as tuples of TOML key parts) that `edit_config` may change; tests
    # compare everything else.
    edited_keys: tuple[tuple[str, ...], ...] = field(default=(), compare=False)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def infer_version(text: str) -> ContainerdVersion | None:
    """Return the oldest containerd release the file must come from, or None when the file cannot tell.

    Only a `default_validator` table under the NRI plugin is conclusive: it
    exists in containerd 2.2 and newer alone. Configuration version 3 shows
    containerd 2.x but not whether it has the validator, and a file without
    an NRI table can come from any release, because node configurations often
    list only the keys they change.
    """
    document = _parse(text)
    nri = _get_path(document, ("plugins", NRI_PLUGIN_ID))
    if isinstance(nri, dict) and VALIDATOR_TABLE in nri:
        return ContainerdVersion(2, 2, 0)
    return None


def edit_config(text: str, version: ContainerdVersion, runtime_handlers: tuple[str, ...] = ()) -> ConfigEdit:
    """Return `text` with NRI (and on containerd 2.2+ the default validator) enabled.

    Each name in `runtime_handlers` that the file does not define yet becomes
    a CRI runtime handler with the settings of the `runc` runtime (or plain
    runc v2 when the file does not configure `runc`), so that RuntimeClasses
    naming it work. Existing handlers are left alone.

    Raises UnsupportedContainerdError for containerd older than 1.7, and
    ContainerdConfigError for invalid TOML or a layout this function does not
    edit (configuration version 1, a version the release cannot read, NRI
    settings given as inline tables).
    """
    import tomlkit
    from tomlkit.items import Bool, Integer, String

    if not version.has_nri:
        raise UnsupportedContainerdError(
            f"containerd {version} has no NRI support (NRI arrived in containerd 1.7); "
            "upgrade containerd to 2.2 or newer, the first release whose NRI default validator "
            "enforces required-plugins annotations"
        )
    document = _parse(text)
    changes: list[str] = []
    warnings: list[str] = []
    edited: list[tuple[str, ...]] = []
    created: list[Any] = []

    # Step 1: the configuration version decides the plugin ids.
    config_version = document.get("version")
    if config_version is None and not document:
        # An empty file: containerd reads it as version 1, which has no
        # plugins to rename yet, so it is safe to state the current version.
        config_version = max(version.config_versions)
        document["version"] = config_version
        changes.append(f"version: (absent) -> {config_version}")
        edited.append(("version",))
    if config_version not in version.config_versions:
        raise ContainerdConfigError(
            f"unsupported configuration version {config_version!r} for containerd {version}: "
            f"expected one of {', '.join(map(str, version.config_versions))}; version 1 files "
            "(no `version` key) use short plugin ids, convert them first "
            "(`containerd config migrate` on containerd 2.x)"
        )

    # Step 2: NRI must not be listed in disabled_plugins.
    disabled = document.get("disabled_plugins")
    if disabled is not None and NRI_PLUGIN_ID in disabled:
        old = list(disabled)
        while NRI_PLUGIN_ID in disabled:
            disabled.remove(NRI_PLUGIN_ID)
        changes.append(f"disabled_plugins: {old!r} -> {list(disabled)!r}")
    edited.append(("disabled_plugins",))

    # Step 3: the NRI plugin table, created when missing.
    nri = _ensure_table(document, ("plugins", NRI_PLUGIN_ID), created)
    disable = nri.get("disable", not version.nri_enabled_by_default)
    if disable is not False:
        changes.append(f"plugins.{NRI_PLUGIN_ID!r}.disable: {_show(nri.get('disable'))} -> false")
        nri["disable"] = False
    edited.append(("plugins", NRI_PLUGIN_ID, "disable"))

    # Step 4: external plugins (ours runs in a DaemonSet) must be allowed to connect.
    if nri.get("disable_connections", False) is not False:
        changes.append(f"plugins.{NRI_PLUGIN_ID!r}.disable_connections: {_show(nri['disable_connections'])} -> false")
        nri["disable_connections"] = False
    edited.append(("plugins", NRI_PLUGIN_ID, "disable_connections"))

    socket_path = nri.get("socket_path", DEFAULT_NRI_SOCKET)
    if not isinstance(socket_path, str):
        raise ContainerdConfigError(f"plugins.{NRI_PLUGIN_ID!r}.socket_path: expected a string, got {socket_path!r}")

    # Step 5: the default validator, where the release has one.
    if version.has_default_validator:
        validator = _ensure_table(nri, (VALIDATOR_TABLE,), created, where=f"plugins.{NRI_PLUGIN_ID!r}")
        if validator.get("enable", False) is not True:
            changes.append(
                f"plugins.{NRI_PLUGIN_ID!r}.{VALIDATOR_TABLE}.enable: {_show(validator.get('enable'))} -> true"
            )
            validator["enable"] = True
        edited.append(("plugins", NRI_PLUGIN_ID, VALIDATOR_TABLE, "enable"))
        tolerate = validator.get("tolerate_missing_plugins_annotation", "")
        if tolerate:
            warnings.append(
                f"the default validator lets pods opt out of required plugins with the annotation {str(tolerate)!r}; "
                "the webhook does not stop pods from setting it"
            )
    else:
        warnings.append(
            f"containerd {version} has no NRI default validator (added in containerd 2.2): "
            "required-plugins annotations are not enforced, so containers of opted-in pods start "
            "unwrapped while the NRI plugin is not registered"
        )

    # Step 6: runc-based runtime handlers for the opted-in RuntimeClasses.
    for name in runtime_handlers:
        changes += _ensure_runtime_handler(document, int(config_version), name, created)
        edited.append((*CRI_RUNTIMES_PATH[int(config_version)], name))

    if _get_path(document, ("imports",)):
        warnings.append(
            f"the configuration imports {list(document['imports'])!r}; settings in those files "
            "override this file and were not changed"
        )

    # A blank line after each new table keeps the next section apart.
    for table in created:
        if any(isinstance(item, (Bool, Integer, String)) for _, item in table.value.body):
            table.add(tomlkit.nl())
    new_text = tomlkit.dumps(document) if changes else text
    return ConfigEdit(
        text=new_text,
        changes=tuple(changes),
        required_plugins_enforced=version.has_default_validator,
        nri_socket_path=socket_path,
        warnings=tuple(warnings),
        edited_keys=tuple(edited),
    )


def _ensure_runtime_handler(document: Any, config_version: int, name: str, created: list[Any]) -> list[str]:
    import tomlkit

    if not _HANDLER_NAME.fullmatch(name) or len(name) > 63:
        raise ContainerdConfigError(f"invalid runtime handler name {name!r}: expected a DNS label such as nono-runc")
    path = CRI_RUNTIMES_PATH[config_version]
    runtimes = _ensure_table(document, path, created, holds_tables=True)
    if name in runtimes:
        return []
    base = runtimes.get(BASE_RUNTIME)
    settings = base.unwrap() if isinstance(base, dict) else {"runtime_type": RUNC_RUNTIME_TYPE}
    if settings.get("runtime_type") != RUNC_RUNTIME_TYPE:
        raise ContainerdConfigError(
            f"runtime {BASE_RUNTIME!r} has runtime_type {settings.get('runtime_type')!r}, expected "
            f"{RUNC_RUNTIME_TYPE!r}; define the runtime handler {name!r} yourself"
        )
    table = tomlkit.item(settings)
    runtimes[name] = table
    # A blank line after the new table (or its last sub-table) keeps the next section apart.
    last = runtimes[name]
    for value in list(last.values()):
        if isinstance(value, dict):
            last = value
    last.add(tomlkit.nl())
    where = ".".join(repr(part) if "." in part else part for part in path)
    source = f"a copy of {BASE_RUNTIME!r}" if isinstance(base, dict) else f"runtime_type {RUNC_RUNTIME_TYPE!r}"
    return [f"{where}.{name}: (absent) -> {source}"]


def _parse(text: str):
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        return tomlkit.parse(text)
    except TOMLKitError as error:
        raise ContainerdConfigError(f"invalid TOML: {error}") from None


def _get_path(document: Any, keys: tuple[str, ...]) -> Any:
    node = document
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _ensure_table(parent: Any, keys: tuple[str, ...], created: list[Any], where: str = "", holds_tables: bool = False):
    """Return the table at `keys` under `parent`, creating standard tables on the way (appended to `created`)."""
    import tomlkit
    from tomlkit.items import InlineTable

    node = parent
    for index, key in enumerate(keys):
        where = f"{where}.{key!r}" if where else key
        if key not in node:
            # Tables on the way hold only sub-tables, so they need no [header] line.
            table = tomlkit.table(is_super_table=holds_tables or index < len(keys) - 1)
            node[key] = table
            node = node[key]
            created.append(node)
            continue
        node = node[key]
        if isinstance(node, InlineTable):
            # Adding keys to an inline table would rewrite the whole line.
            raise ContainerdConfigError(
                f"{where}: inline tables are not edited; write it as a standard [table] section"
            )
        if not isinstance(node, dict):
            raise ContainerdConfigError(f"{where}: expected a table, got {node!r}")
    return node


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
