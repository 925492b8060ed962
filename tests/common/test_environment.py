"""The shared environment rule: forbidden names and duplicated pinned names."""

import pytest

from kubefence.common.environment import PINNED_ENV_NAMES, env_name_problems, is_forbidden_env_name
from kubefence.nri.environment import pinned_env


@pytest.mark.parametrize(
    ("name", "forbidden"),
    [
        ("NONO_ALLOW", True),
        ("NONO_", True),
        ("NONO_PROFILE", False),
        ("nono_allow", False),
        ("LD_PRELOAD", True),
        ("LD_", True),
        ("GLIBC_TUNABLES", True),
        ("MY_LD_PRELOAD", False),
        ("PATH", False),
    ],
    ids=["nono-flag", "nono-prefix", "nono-profile", "lower-case", "ld-preload", "ld-prefix", "glibc", "ld-inside", "path"],
)
def test_is_forbidden_env_name_cases(name, forbidden):
    assert is_forbidden_env_name(name) is forbidden


def test_env_name_problems_duplicates_in_pin_order():
    problems = env_name_problems(["HOME", "TMPDIR", "HOME", "TMPDIR", "PATH", "PATH"])
    assert problems == [
        "environment variables set more than once: TMPDIR, HOME "
        "(the plugin pins them, and the runtime lets a later duplicate override the pinned value)"
    ]


def test_env_name_problems_clean_is_empty():
    assert env_name_problems(["PATH", "NONO_PROFILE", "HOME"]) == []


def test_pinned_env_names_match_plugin():
    assert tuple(name for name, _ in pinned_env("default")) == PINNED_ENV_NAMES
