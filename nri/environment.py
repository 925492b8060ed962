"""The environment of a wrapped container: what nono reads and what the plugin pins.

nono reads its own environment before it applies Landlock (nono-cli at
commit ea334d2 of always-further/nono):

* `NONO_*` variables are defaults for its command-line flags
  (`NONO_ALLOW` adds grants).
* `$HOME`, `~` and `$TMPDIR` in profile paths expand from the environment,
  and nono resolves symlinks in the expanded paths before it grants them.
* Profile names resolve against `$XDG_CONFIG_HOME/nono/profiles/` (falling
  back to `$HOME/.config` when that directory does not exist) before the
  built-in profiles, also for the bases named in a profile's `extends`.

The plugin therefore sets `NONO_PROFILE` and pins `TMPDIR`, `HOME` and
`XDG_CONFIG_HOME`. `HOME` and `XDG_CONFIG_HOME` point into the read-only
/nono mount, which holds only what the node administrator put in the host
directory: the image cannot plant a symlink or a profile there, so home
grants such as `~/.cache` find no directory and nono skips them, and the
name lookup reaches the built-in profile. `TMPDIR` is `/tmp`, which the
built-in profiles grant anyway.

Env removal markers never reach the runtime, and an adjusted key replaces
only its first occurrence (a later duplicate wins). So a container that
carries a duplicate of a pinned key, or a `NONO_*` variable other than
`NONO_PROFILE`, is rejected rather than cleaned. The same goes for the
dynamic loader's variables: the released Linux nono binaries are linked
against glibc, so `LD_PRELOAD` and friends would run code inside nono before
the sandbox exists.

Lower-case `nono_*` names are left alone: nono reads the upper-case names
only, and environment names are case-sensitive.
"""

from collections.abc import Iterable

from kubefence.common.environment import PROFILE_ENV, env_name_problems

# Home directory of wrapped workloads: inside the read-only /nono mount.
# NOTE: the host directory does not normally contain `home`, so the
# workload gets a HOME that does not exist and cannot be created.
NONO_HOME = "/nono/home"

# Values pinned for every wrapped container, in the order they are set.
PINNED_ENV = (
    ("TMPDIR", "/tmp"),
    ("HOME", NONO_HOME),
    ("XDG_CONFIG_HOME", NONO_HOME + "/.config"),
)


def env_key(entry: str) -> str:
    """Return the name of an OCI env entry `KEY=VALUE` (the whole entry when it has no '=')."""
    return entry.split("=", 1)[0]


def pinned_env(profile: str) -> tuple[tuple[str, str], ...]:
    """Return every (name, value) pair the plugin pins for `profile`."""
    return ((PROFILE_ENV, profile), *PINNED_ENV)


def env_problems(env: Iterable[str]) -> list[str]:
    """List why `env` cannot be made safe by an adjustment; empty when it can."""
    return env_name_problems(env_key(entry) for entry in env)


def env_adjustment(env: Iterable[str], profile: str) -> tuple[tuple[str, str], ...]:
    """Return the pinned (name, value) pairs that `env` does not already carry exactly once."""
    entries = list(env)
    needed = []
    for name, value in pinned_env(profile):
        current = [entry for entry in entries if env_key(entry) == name]
        if current != [f"{name}={value}"]:
            needed.append((name, value))
    return tuple(needed)


def pinned_env_problems(env: Iterable[str], profile: str) -> list[str]:
    """List how a final environment differs from the pinned one (for the validator)."""
    entries = list(env)
    problems = env_problems(entries)
    for name, value in pinned_env(profile):
        values = [entry.split("=", 1)[1] if "=" in entry else None for entry in entries if env_key(entry) == name]
        if values != [value]:
            found = ", ".join(repr(item) for item in values) if values else "unset"
            problems.append(f"{name} must be {value!r} exactly once, found {found}")
    return problems
