"""`kubefence node-setup`: prepare a node for the NRI plugin.

Two jobs, both idempotent, run by the node-setup DaemonSet as root:

1. Install the nono binary into the trusted host directory
   (`/opt/nono-nri`): root-owned, mode 0755 for the directory and the file,
   copied atomically (temporary file plus rename in the same directory), and
   checked against a SHA-256 digest when one is given. The OCI
   createContainer hook script `kubefence-verify` goes next to it, with
   the same owner and mode (the plugin adds it when `verify_hook` is on).
2. Edit containerd's TOML configuration so that NRI and, on containerd 2.2+,
   its default validator are enabled (see `containerd_config`). A changed
   file is first copied to a timestamped backup next to it.

The command prints one JSON report on stdout and exits with:

* 0: done, nothing that needs a containerd restart changed;
* 3: done, and the containerd configuration changed: containerd must be
  restarted before the change takes effect;
* 1: failed (invalid TOML, unsupported containerd, digest mismatch, I/O
  error); nothing was changed on the node by the failing step.

`--dry-run` changes nothing and exits with the code the real run would
return.

Known limitations: only containerd is configured (CRI-O keeps NRI settings
in its own files), and configuration files that containerd imports are
reported but not edited.
"""

import argparse
import datetime
import difflib
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kubefence.common import contracts

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_RESTART_NEEDED = 3

DEFAULT_CONTAINERD_CONFIG = "/etc/containerd/config.toml"
DEFAULT_CONTAINERD_ADDRESS = "/run/containerd/containerd.sock"
# Path of the checked nono release binary in the Dockerfile.nri image.
DEFAULT_NONO_SOURCE = "/usr/local/libexec/kubefence/nono"
BINARY_NAME = "nono"
BINARY_MODE = 0o755
# Package data file that node-setup installs as <host_dir>/kubefence-verify.
VERIFY_HOOK_SOURCE = "verify_nono.sh"
BACKUP_SUFFIX = ".kubefence-backup-"

_VERSION_METHOD = "/containerd.services.version.v1.Version/Version"


class NodeSetupError(RuntimeError):
    """A node-setup step failed; the message names the path or value and what to do."""


@dataclass(frozen=True)
class BinaryResult:
    path: str
    sha256: str
    changes: tuple[str, ...]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "node-setup",
        help="install the nono binary on this node and enable NRI in containerd's config",
        description=(
            "Install the nono binary into the trusted host directory and enable NRI and its "
            "default validator in containerd's configuration. Prints a JSON report; exit code 0 "
            "when no containerd restart is needed, 3 when containerd must be restarted, 1 on failure."
        ),
    )

    binary = parser.add_argument_group("nono binary")
    binary.add_argument(
        "--host-dir",
        default=contracts.DEFAULT_HOST_DIR,
        help="trusted directory that receives the nono binary (default: %(default)s)",
    )
    binary.add_argument(
        "--nono-binary",
        default=DEFAULT_NONO_SOURCE,
        help="nono binary to install (default: %(default)s, where the NRI image ships it)",
    )
    binary.add_argument(
        "--nono-sha256",
        default="",
        help="expected SHA-256 of the nono binary as 64 hex digits; installation fails on a mismatch",
    )
    binary.add_argument(
        "--no-binary",
        action=_SkipStep,
        other="no_containerd_config",
        help="skip installing the nono binary and the kubefence-verify hook script",
    )

    containerd = parser.add_argument_group("containerd")
    containerd.add_argument(
        "--containerd-config",
        default=DEFAULT_CONTAINERD_CONFIG,
        help="containerd configuration file to edit (default: %(default)s)",
    )
    containerd.add_argument(
        "--containerd-version",
        default="auto",
        help=(
            "containerd release on this node, such as 2.2.2 or containerd://1.7.24; 'auto' asks containerd "
            "over --containerd-address and falls back to what the config file shows (default: %(default)s)"
        ),
    )
    containerd.add_argument(
        "--containerd-address",
        default=DEFAULT_CONTAINERD_ADDRESS,
        help="containerd's gRPC socket, used by --containerd-version auto (default: %(default)s)",
    )
    containerd.add_argument(
        "--runtime-handler",
        action="append",
        default=[],
        metavar="NAME",
        help=(
            "CRI runtime handler that must exist in containerd's config; a missing one is added as a copy "
            "of the runc runtime (repeatable; for runc-based RuntimeClasses such as nono-runc)"
        ),
    )
    containerd.add_argument(
        "--no-containerd-config", action=_SkipStep, other="no_binary", help="leave containerd's configuration alone"
    )

    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=(
            "change nothing and exit with the code a real run would return; print the report "
            "(with the config diff in its 'diff' field) and the diff on stderr"
        ),
    )
    parser.set_defaults(func=run)


class _SkipStep(argparse.Action):
    """A flag that skips one of the two steps; giving both flags is an argument error, as nothing would run."""

    def __init__(self, option_strings, dest, other: str, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)
        self.other = other

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.other, False):
            parser.error("--no-binary and --no-containerd-config together skip every step; give at most one")
        setattr(namespace, self.dest, True)


def run(args: argparse.Namespace) -> int:
    from kubefence.common.logs import configure_logging, get_logger

    configure_logging(os.environ.get("KUBEFENCE_LOG_LEVEL", "info"))
    log = get_logger("kubefence.nodesetup")
    report: dict[str, Any] = {"dry_run": args.dry_run, "changed": False, "restart_needed": False, "warnings": []}
    try:
        # Plan the config edit first: an unsupported containerd or an invalid
        # file then stops the run before anything on the node changes.
        containerd = None
        if not args.no_containerd_config:
            containerd = plan_containerd(
                Path(args.containerd_config),
                args.containerd_version,
                args.containerd_address,
                tuple(args.runtime_handler),
            )
        if not args.no_binary:
            binary = install_binary(Path(args.nono_binary), Path(args.host_dir), args.nono_sha256, args.dry_run)
            report["binary"] = {"path": binary.path, "sha256": binary.sha256, "changes": list(binary.changes)}
            report["changed"] |= bool(binary.changes)
            log.info("nono binary checked", path=binary.path, sha256=binary.sha256, changes=list(binary.changes))
            hook = install_verify_hook(Path(args.host_dir), args.dry_run)
            report["verify_hook"] = {"path": hook.path, "sha256": hook.sha256, "changes": list(hook.changes)}
            report["changed"] |= bool(hook.changes)
            log.info("verify hook checked", path=hook.path, sha256=hook.sha256, changes=list(hook.changes))
        if containerd is not None:
            if containerd.edit.changed and not args.dry_run:
                containerd.report["backup"] = _backup_and_write(containerd.path, containerd.old_text, containerd.edit.text)
            if args.dry_run:
                report["diff"] = containerd.diff
                sys.stderr.write(containerd.diff)
            report["warnings"].extend(containerd.warnings)
            report["warnings"].extend(containerd.edit.warnings)
            report["containerd"] = containerd.report
            report["changed"] |= containerd.edit.changed
            report["restart_needed"] = containerd.edit.changed
            log.info(
                "containerd config checked",
                **{key: containerd.report[key] for key in ("config", "version", "version_source", "changes", "backup")},
            )
    except NodeSetupError as error:
        report["error"] = str(error)
        log.error("node setup failed", error=str(error))
        _print_report(report)
        return EXIT_FAILED
    for warning in report["warnings"]:
        log.warning("node setup warning", warning=warning)
    _print_report(report)
    return EXIT_RESTART_NEEDED if report["restart_needed"] else EXIT_OK


def _print_report(report: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


# --- nono binary -------------------------------------------------------------


def install_binary(source: Path, host_dir: Path, expected_sha256: str = "", dry_run: bool = False) -> BinaryResult:
    """Copy `source` to `host_dir/nono`, root-owned with mode 0755, unless an identical copy is there."""
    expected = expected_sha256.strip().lower()
    if expected and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
        raise NodeSetupError(f"invalid --nono-sha256 {expected_sha256!r}: expected 64 hexadecimal digits")
    try:
        data = source.read_bytes()
    except OSError as error:
        raise NodeSetupError(f"cannot read the nono binary {str(source)!r}: {error.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected and digest != expected:
        raise NodeSetupError(
            f"nono binary {str(source)!r} has SHA-256 {digest}, expected {expected}; not installed"
        )
    changes: list[str] = []

    # Step 1: the directory, created or repaired to root:root 0755. A symlink
    # is rejected because it would redirect the trusted mount elsewhere.
    changes += _ensure_directory(host_dir, dry_run)

    # Step 2: the binary, replaced only when its content, owner or mode differ.
    target = host_dir / BINARY_NAME
    changes += _install_file(target, data, "nono", dry_run)
    return BinaryResult(path=str(target), sha256=digest, changes=tuple(changes))


def install_verify_hook(host_dir: Path, dry_run: bool = False) -> BinaryResult:
    """Copy the packaged hook script to `host_dir/kubefence-verify`, root-owned with mode 0755.

    The NRI plugin adds the script as an OCI createContainer hook when its
    `verify_hook` setting is on. `host_dir` is created or repaired as for
    the nono binary.
    """
    data = resources.files("kubefence.nri").joinpath(VERIFY_HOOK_SOURCE).read_bytes()
    changes = _ensure_directory(host_dir, dry_run)
    target = host_dir / contracts.VERIFY_HOOK_NAME
    changes += _install_file(target, data, "verify hook", dry_run)
    return BinaryResult(path=str(target), sha256=hashlib.sha256(data).hexdigest(), changes=tuple(changes))


def _install_file(target: Path, data: bytes, label: str, dry_run: bool) -> list[str]:
    """Write `data` to `target` as root:root 0755 unless an identical file is there; list the changes."""
    digest = hashlib.sha256(data).hexdigest()
    current = _lstat(target)
    if current is not None and not stat.S_ISREG(current.st_mode):
        raise NodeSetupError(f"{str(target)!r} exists and is not a regular file; remove it and run again")
    if current is None or _sha256_of(target) != digest:
        if not dry_run:
            _atomic_write(target, data, BINARY_MODE)
        return [f"{target}: installed {label} {digest[:12]}"]
    if current.st_uid != 0 or current.st_gid != 0 or stat.S_IMODE(current.st_mode) != BINARY_MODE:
        if not dry_run:
            _set_owner_and_mode(target, BINARY_MODE)
        return [f"{target}: owner and mode set to root:root {BINARY_MODE:04o}"]
    return []


def _ensure_directory(path: Path, dry_run: bool) -> list[str]:
    current = _lstat(path)
    if current is None:
        if not dry_run:
            try:
                path.mkdir(mode=BINARY_MODE, parents=True)
            except OSError as error:
                raise NodeSetupError(f"cannot create {str(path)!r}: {error.strerror}") from None
            _set_owner_and_mode(path, BINARY_MODE)
        return [f"{path}: created, root:root {BINARY_MODE:04o}"]
    if stat.S_ISLNK(current.st_mode) or not stat.S_ISDIR(current.st_mode):
        raise NodeSetupError(f"{str(path)!r} is not a directory (symlinks are rejected); expected a plain directory")
    if current.st_uid != 0 or current.st_gid != 0 or stat.S_IMODE(current.st_mode) != BINARY_MODE:
        if not dry_run:
            _set_owner_and_mode(path, BINARY_MODE)
        return [
            f"{path}: owner and mode {current.st_uid}:{current.st_gid} {stat.S_IMODE(current.st_mode):04o} "
            f"-> root:root {BINARY_MODE:04o}"
        ]
    return []


def _set_owner_and_mode(path: Path, mode: int) -> None:
    try:
        os.chown(path, 0, 0, follow_symlinks=False)
        os.chmod(path, mode, follow_symlinks=False)
    except OSError as error:
        raise NodeSetupError(
            f"cannot set owner root:root and mode {mode:04o} on {str(path)!r}: {error.strerror}; node-setup runs as root"
        ) from None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _atomic_write(target: Path, data: bytes, mode: int, owner: tuple[int, int] | None = (0, 0)) -> None:
    """Write `data` to a temporary file beside `target`, then rename it over `target`.

    Readers see the old file or the new one, never a partial copy. `owner`
    None keeps the current process's user and group.
    """
    temporary = target.with_name(f".{target.name}.kubefence-tmp")
    try:
        temporary.unlink(missing_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(data)
                stream.flush()
                if owner is not None:
                    os.fchown(stream.fileno(), *owner)
                os.fchmod(stream.fileno(), mode)
                os.fsync(stream.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, target)
        directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        raise NodeSetupError(f"cannot write {str(target)!r}: {error.strerror}") from None


# --- containerd configuration ------------------------------------------------


@dataclass(frozen=True)
class ContainerdPlan:
    """The planned edit of containerd's configuration, not yet written."""

    path: Path
    old_text: str
    edit: Any  # containerd_config.ConfigEdit
    diff: str
    report: dict[str, Any]
    # Problems that did not stop the plan, such as a version taken from the file.
    warnings: tuple[str, ...] = ()


def plan_containerd(
    config: Path, version_option: str, address: str, runtime_handlers: tuple[str, ...] = ()
) -> ContainerdPlan:
    """Read `config`, find the containerd version and compute the edit, without writing anything."""
    from kubefence.nri.containerd_config import ContainerdConfigError, edit_config

    current = _lstat(config)
    if current is not None and not stat.S_ISREG(current.st_mode):
        # A symlink could point outside the mounted configuration directory.
        raise NodeSetupError(f"containerd config {str(config)!r} is not a regular file (symlinks are rejected)")
    try:
        text = config.read_text(encoding="utf-8") if current is not None else ""
    except OSError as error:
        raise NodeSetupError(f"cannot read containerd config {str(config)!r}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise NodeSetupError(
            f"containerd config {str(config)!r} is not UTF-8 text (invalid byte at offset {error.start})"
        ) from None

    try:
        version, source, version_warning = _resolve_version(version_option, address, text)
        edit = edit_config(text, version, runtime_handlers)
    except ContainerdConfigError as error:
        raise NodeSetupError(f"{config}: {error}") from None
    except ValueError as error:
        raise NodeSetupError(str(error)) from None

    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), edit.text.splitlines(keepends=True), f"{config}", f"{config} (new)"
        )
    )
    report = {
        "config": str(config),
        "version": str(version),
        "version_source": source,
        "changes": list(edit.changes),
        "backup": None,
        "nri_enabled": True,
        "required_plugins_enforced": edit.required_plugins_enforced,
        "nri_socket_path": edit.nri_socket_path,
    }
    warnings = (version_warning,) if version_warning else ()
    return ContainerdPlan(path=config, old_text=text, edit=edit, diff=diff, report=report, warnings=warnings)


def _resolve_version(option: str, address: str, text: str):
    """Return (ContainerdVersion, how it was found, a warning or None)."""
    from kubefence.nri.containerd_config import ContainerdVersion, infer_version

    if option != "auto":
        return ContainerdVersion.parse(option), "option", None
    try:
        return ContainerdVersion.parse(query_containerd_version(address)), "containerd", None
    except (OSError, ValueError) as error:
        socket_problem = str(error)
    inferred = infer_version(text)
    if inferred is not None:
        warning = (
            f"asking containerd at {address!r} for its version failed ({socket_problem}); using {inferred}, "
            "the oldest release the config file can come from; pass --containerd-version to give the exact release"
        )
        return inferred, "config", warning
    raise NodeSetupError(
        f"cannot tell the containerd version: asking containerd at {address!r} failed ({socket_problem}) "
        "and the config file does not show it; pass --containerd-version"
    )


def query_containerd_version(address: str, timeout: float = 5.0) -> str:
    """Ask containerd's Version service over its unix socket; return the version string."""
    import grpc

    if not os.path.exists(address):
        raise OSError(f"socket {address!r} not found")
    channel = grpc.insecure_channel(f"unix://{address}")
    try:
        call = channel.unary_unary(
            _VERSION_METHOD,
            request_serializer=lambda _: b"",  # google.protobuf.Empty
            response_deserializer=_decode_version_response,
        )
        try:
            return call(None, timeout=timeout)
        except grpc.RpcError as error:
            raise OSError(f"Version call failed: {error.code().name} {error.details()}") from None
    finally:
        channel.close()


def _decode_version_response(data: bytes) -> str:
    """Read field 1 (`version`, a string) of a containerd VersionResponse message."""
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, position = _read_varint(data, position)
            value = data[position : position + length]
            if len(value) != length:
                raise ValueError("truncated VersionResponse")
            position += length
            if number == 1:
                return value.decode()
        elif wire_type == 0:
            _, position = _read_varint(data, position)
        else:
            raise ValueError(f"unexpected wire type {wire_type} in VersionResponse")
    raise ValueError("VersionResponse without a version")


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("invalid varint in VersionResponse")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _backup_and_write(config: Path, old_text: str, new_text: str) -> str | None:
    """Keep a timestamped copy of `old_text` next to `config`, then replace `config` atomically."""
    backup = None
    current = _lstat(config)
    mode = stat.S_IMODE(current.st_mode) if current else 0o644
    owner = (current.st_uid, current.st_gid) if current else None
    if current is not None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        backup_path = config.with_name(f"{config.name}{BACKUP_SUFFIX}{stamp}")
        _atomic_write(backup_path, old_text.encode(), mode, owner)
        backup = str(backup_path)
    else:
        try:
            config.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as error:
            raise NodeSetupError(f"cannot create {str(config.parent)!r}: {error.strerror}") from None
    _atomic_write(config, new_text.encode(), mode, owner)
    return backup
