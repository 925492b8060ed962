"""Stand-in for the nono CLI's `wrap` command, for the end-to-end tests.

The images install the released nono binary at /nono/nono. That binary is
not installable on the test machines (there is no nono CLI in PyPI, npm or
Debian), so the tests put this script there instead. It is built on the
PyPI package nono-py, which carries the same Landlock engine and embedded
policy as the CLI, and it does what `nono wrap` does at container start:

    nono wrap --profile NAME_OR_PATH [--allow DIR]... -- CMD [ARG]...

1. Check that the kernel has Landlock.
2. Load the profile. A value with a '/' or ending in '.json' is a file.
   A name is looked up first as a user profile in
   `$XDG_CONFIG_HOME/nono/profiles/NAME.json` (default `$HOME/.config`),
   then among the built-in profiles, as nono does. So a user profile can
   shadow a built-in name. `extends` is followed the same way.
3. Build the capability set: the profile's policy groups (nono-py expands
   `~` from HOME and `$TMPDIR` from TMPDIR, default /tmp), its
   `filesystem` paths, the working directory when `workdir.access` is
   read or readwrite, and every `--allow` directory; with no `--allow` on
   the command line, the comma-separated NONO_ALLOW value is used, as
   the CLI does. Missing paths are skipped, as nono does.
4. Apply Landlock to this process. From here on the grants cannot widen.
5. Remove the variables nono strips (LD_*, PYTHONPATH, NODE_OPTIONS and
   the like) from the environment, start in / when the working directory
   is not granted, and exec the command, so it keeps this PID (PID 1 in a
   container) and exactly its own args.

Every failure of its own exits 1 with a message on stderr, before the
command runs: nono fails closed. Profiles that turn on proxy mode are
rejected, as `nono wrap` rejects them.

Known limitations: no network or proxy options, no signal or IPC scoping,
no refusal of start-up command names such as `pip` or `rm`, no
NONO_PROFILE fallback (the wrapper always passes --profile).

The script runs with the interpreter given in its first line, started
with -I so that the container's PYTHONPATH and the like cannot load code
into it before the sandbox is in place, and imports nono_py from the
`lib` directory next to it.
"""

import json
import os
import sys
from pathlib import Path

_LIB = Path(__file__).resolve().parent / "lib"
if _LIB.is_dir():
    sys.path.insert(0, str(_LIB))

EXIT_ERROR = 1

# Variables that let a parent environment load code into the command
# (dynamic loader, shells, interpreters). nono's own list is longer.
_DANGEROUS_EXACT = frozenset({
    "BASH_ENV", "ENV", "CDPATH", "GLOBIGNORE", "PROMPT_COMMAND", "IFS",
    "PYTHONPATH", "PYTHONSTARTUP", "NODE_OPTIONS", "NODE_PATH",
    "PERL5OPT", "PERL5LIB", "RUBYOPT", "RUBYLIB", "GEM_PATH", "GEM_HOME",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "DOTNET_STARTUP_HOOKS", "GOFLAGS",
})
_DANGEROUS_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_")

_PROXY_KEYS = ("network_profile", "allow_domain", "proxy", "credentials")
_MAX_EXTENDS_DEPTH = 16


class WrapError(Exception):
    """A failure that stops the wrap before the command runs."""


def parse_args(argv):
    """Return (profile, allow_dirs, command) from `wrap` arguments."""
    if not argv or argv[0] != "wrap":
        raise WrapError(f"unsupported command {argv[:1]!r}: this stand-in implements only 'wrap'")
    profile = None
    allow = []
    rest = argv[1:]
    index = 0
    while index < len(rest):
        arg = rest[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-"):
            break
        name, has_value, value = arg.partition("=")
        if name in ("--profile", "-p", "--allow", "-a"):
            if not has_value:
                index += 1
                if index >= len(rest):
                    raise WrapError(f"option {name} needs a value")
                value = rest[index]
            if name in ("--profile", "-p"):
                profile = value
            else:
                allow.append(value)
        else:
            raise WrapError(f"unknown option {arg!r}: accepted are --profile and --allow")
        index += 1
    command = rest[index:]
    if not command:
        raise WrapError("no command given after '--'")
    if profile is None:
        raise WrapError("missing --profile")
    return profile, allow, command


def is_valid_profile_name(name):
    return (
        0 < len(name) <= 64
        and all(c.isascii() and (c.isalnum() or c == "-") for c in name)
        and not name.startswith("-")
        and not name.endswith("-")
    )


def user_profile_dir(environ):
    """Return the directory of user profiles, or None without HOME or XDG_CONFIG_HOME."""
    raw = environ.get("XDG_CONFIG_HOME", "")
    if raw and os.path.isabs(raw) and os.path.exists(raw):
        return Path(os.path.realpath(raw)) / "nono" / "profiles"
    home = environ.get("HOME", "")
    if home:
        return Path(home) / ".config" / "nono" / "profiles"
    return None


def load_profile(name_or_path, builtins, environ, depth=0):
    """Load a profile and merge the profiles it extends into it."""
    if depth > _MAX_EXTENDS_DEPTH:
        raise WrapError(f"profile {name_or_path!r}: 'extends' goes deeper than {_MAX_EXTENDS_DEPTH}")
    if "/" in name_or_path or name_or_path.endswith(".json"):
        profile = read_profile_file(Path(name_or_path))
    elif not is_valid_profile_name(name_or_path):
        raise WrapError(f"invalid profile name {name_or_path!r}")
    else:
        directory = user_profile_dir(environ)
        user_file = directory / f"{name_or_path}.json" if directory else None
        if user_file is not None and user_file.is_file():
            profile = read_profile_file(user_file)
        elif name_or_path in builtins:
            profile = builtins[name_or_path]
        else:
            raise WrapError(f"profile {name_or_path!r} not found")

    bases = profile.get("extends") or []
    if isinstance(bases, str):
        bases = [bases]
    merged = {"groups": [], "filesystem": {}, "workdir": "none", "network": {}}
    for base in bases:
        merge_into(merged, load_profile(base, builtins, environ, depth + 1))
    merge_into(merged, flatten(profile))
    return merged


def read_profile_file(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WrapError(f"failed to read profile file {str(path)!r}: {error}") from error


def flatten(profile):
    return {
        "groups": list(profile.get("security", {}).get("groups", [])),
        "filesystem": dict(profile.get("filesystem", {})),
        "workdir": profile.get("workdir", {}).get("access", "none"),
        "network": dict(profile.get("network", {})),
    }


def merge_into(merged, child):
    for group in child["groups"]:
        if group not in merged["groups"]:
            merged["groups"].append(group)
    for key, paths in child["filesystem"].items():
        merged["filesystem"].setdefault(key, []).extend(paths)
    if child["workdir"] != "none":
        merged["workdir"] = child["workdir"]
    merged["network"].update(child["network"])


def expand(path, environ, workdir):
    home = environ["HOME"]
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    for name, value in (
        ("$WORKDIR", workdir),
        ("$TMPDIR", environ["TMPDIR"].rstrip("/") or "/"),
        ("$XDG_CONFIG_HOME", environ.get("XDG_CONFIG_HOME") or home + "/.config"),
        ("$HOME", home),
    ):
        path = path.replace(name, value)
    return path


def build_capabilities(nono_py, profile, allow_dirs, environ, workdir):
    """Return the capability set for the profile, the working directory and --allow."""
    caps = nono_py.CapabilitySet()
    resolved = nono_py.load_embedded_policy().resolve_groups(profile["groups"], caps)

    modes = {
        "allow": (nono_py.AccessMode.READ_WRITE, False),
        "read": (nono_py.AccessMode.READ, False),
        "write": (nono_py.AccessMode.WRITE, False),
        "allow_file": (nono_py.AccessMode.READ_WRITE, True),
        "read_file": (nono_py.AccessMode.READ, True),
        "write_file": (nono_py.AccessMode.WRITE, True),
    }
    for key, paths in profile["filesystem"].items():
        if key not in modes:
            raise WrapError(f"profile filesystem key {key!r} is not supported by this stand-in")
        mode, is_file = modes[key]
        for raw in paths:
            grant(caps, expand(raw, environ, workdir), mode, is_file)

    workdir_modes = {"read": nono_py.AccessMode.READ, "readwrite": nono_py.AccessMode.READ_WRITE}
    if profile["workdir"] in workdir_modes:
        grant(caps, workdir, workdir_modes[profile["workdir"]], False)
    for raw in allow_dirs:
        grant(caps, raw, nono_py.AccessMode.READ_WRITE, False)

    if resolved.needs_unlink_overrides:
        nono_py.apply_unlink_overrides(caps)
    nono_py.validate_deny_overlaps(resolved.deny_paths, caps)
    if profile["network"].get("block"):
        caps.block_network()
    return caps


def grant(caps, path, mode, is_file):
    if not os.path.exists(path):
        print(f"nono: skipping missing path {path!r}", file=sys.stderr)
        return
    if is_file:
        caps.allow_file(path, mode)
    else:
        caps.allow_path(path, mode)


def clean_environment(environ):
    return {
        key: value
        for key, value in environ.items()
        if key not in _DANGEROUS_EXACT and not key.startswith(_DANGEROUS_PREFIXES)
    }


def wrap(argv, environ):
    """Confine this process and exec the command; return only on failure."""
    profile_ref, allow_dirs, command = parse_args(argv)
    if not allow_dirs and environ.get("NONO_ALLOW"):
        allow_dirs = [item for item in environ["NONO_ALLOW"].split(",") if item]

    try:
        import nono_py
    except ImportError as error:
        raise WrapError(f"nono_py is not importable: {error}") from error
    try:
        nono_py.detect_abi()
    except RuntimeError as error:
        raise WrapError(f"Landlock is not available, so the command does not run unconfined: {error}") from error

    child_environ = clean_environment(environ)
    environ = dict(environ)
    environ.setdefault("TMPDIR", "/tmp")
    if not os.path.isabs(environ["TMPDIR"]):
        raise WrapError(f"TMPDIR must be an absolute path, got {environ['TMPDIR']!r}")
    if not environ.get("HOME"):
        raise WrapError("HOME is not set")
    # nono_py expands ~ and $TMPDIR in policy groups from this process's environment.
    os.environ["TMPDIR"] = environ["TMPDIR"]
    os.environ["HOME"] = environ["HOME"]

    builtins = json.loads(nono_py.embedded_policy_json())["profiles"]
    profile = load_profile(profile_ref, builtins, environ)
    proxy_keys = [key for key in _PROXY_KEYS if profile["network"].get(key)]
    if proxy_keys:
        raise WrapError(f"profile {profile_ref!r} turns on proxy mode ({', '.join(proxy_keys)}), which wrap does not support")

    workdir = os.getcwd()
    caps = build_capabilities(nono_py, profile, allow_dirs, environ, workdir)
    nono_py.apply(caps)

    if not caps.path_covered(workdir):
        os.chdir("/")
    try:
        os.execvpe(command[0], command, child_environ)
    except FileNotFoundError:
        raise WrapError(f"command not found: {command[0]!r}") from None
    except PermissionError as error:
        raise WrapError(f"failed to execute {command[0]!r}: {error.strerror}") from None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        wrap(argv, os.environ)
    except WrapError as error:
        print(f"nono: {error}", file=sys.stderr)
    except Exception as error:  # fail closed on anything unexpected
        print(f"nono: {type(error).__name__}: {error}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
