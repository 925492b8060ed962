"""The environment rule that the NRI plugin enforces and the webhook checks early.

nono reads `NONO_*` variables as defaults for its command-line flags, and
the glibc dynamic loader reads `LD_*` and `GLIBC_TUNABLES` inside nono
before the sandbox applies, so a wrapped container must not set them
(`NONO_PROFILE` excepted: the plugin sets it). The plugin pins
`NONO_PROFILE`, `TMPDIR`, `HOME` and `XDG_CONFIG_HOME`, and the runtime lets
a later duplicate override an adjusted value, so each may appear at most
once. `kubefence.nri.environment` explains where nono reads each name.

Lower-case `nono_*` names are allowed: nono reads the upper-case names
only, and environment names are case-sensitive.
"""

import re
from collections.abc import Iterable

PROFILE_ENV = "NONO_PROFILE"
# The names the NRI plugin pins, in the order it sets them.
PINNED_ENV_NAMES = (PROFILE_ENV, "TMPDIR", "HOME", "XDG_CONFIG_HOME")
NONO_ENV_PREFIX = "NONO_"
# Read by the glibc dynamic loader before nono's main() runs.
LOADER_ENV_PREFIX = "LD_"
LOADER_ENV_NAMES = ("GLIBC_TUNABLES",)


# The same rule as one expression, because the webhook applies it to every
# env entry of a pod, which can be thousands.
_FORBIDDEN_ENV_NAME = re.compile(
    rf"{NONO_ENV_PREFIX}(?!{PROFILE_ENV[len(NONO_ENV_PREFIX):]}\Z)|{LOADER_ENV_PREFIX}"
    + "".join(rf"|{re.escape(name)}\Z" for name in LOADER_ENV_NAMES)
)


def is_forbidden_env_name(name: str) -> bool:
    """Return True for a variable name that a nono-wrapped container must not set at all.

    That is `NONO_*` other than `NONO_PROFILE`, `LD_*`, and `GLIBC_TUNABLES`.
    """
    return _FORBIDDEN_ENV_NAME.match(name) is not None


def env_name_problems(names: Iterable[str]) -> list[str]:
    """List why a container with these variable names cannot be wrapped; empty when it can."""
    names = list(names)
    problems = []
    forbidden = sorted({name for name in names if is_forbidden_env_name(name)})
    if forbidden:
        problems.append(
            f"environment variables not allowed in a nono-wrapped container: {', '.join(forbidden)} "
            "(nono reads NONO_* as flag defaults, and the dynamic loader reads LD_* and GLIBC_TUNABLES "
            "inside nono before the sandbox applies)"
        )
    duplicated = [name for name in PINNED_ENV_NAMES if names.count(name) > 1]
    if duplicated:
        problems.append(
            f"environment variables set more than once: {', '.join(duplicated)} "
            "(the plugin pins them, and the runtime lets a later duplicate override the pinned value)"
        )
    return problems
