import pytest

from kubefence.nri.seccomp import (
    BASELINE_DENIED_SYSCALLS,
    RESTRICTED_SYSCALLS,
    baseline_policy,
    denies,
    restricted_policy,
    satisfies,
    seccomp_adjustment,
)

RUNTIME_POLICY = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [
        {"names": ["read", "write", "ptrace", "seccomp", "io_uring_setup"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
    ],
}


def test_seccomp_baseline_shape():
    policy = baseline_policy()
    assert policy["defaultAction"] == "SCMP_ACT_ALLOW"
    assert "SCMP_ARCH_X86_64" in policy["architectures"]
    assert "SCMP_ARCH_AARCH64" in policy["architectures"]
    assert policy["syscalls"] == [
        {"names": list(BASELINE_DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    ]
    assert denies(policy, ("mount", "bpf", "kexec_load", "init_module"))
    assert not denies(policy, RESTRICTED_SYSCALLS)


def test_seccomp_restricted_on_baseline():
    policy = restricted_policy(None)
    assert denies(policy, RESTRICTED_SYSCALLS)
    assert denies(policy, BASELINE_DENIED_SYSCALLS)
    assert policy["syscalls"][-1] == {"names": list(RESTRICTED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}


def test_seccomp_restricted_extends_existing():
    policy = restricted_policy(RUNTIME_POLICY)
    assert policy["defaultAction"] == "SCMP_ACT_ERRNO"
    assert policy["defaultErrnoRet"] == 38
    assert policy["syscalls"][0] == {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}
    assert policy["syscalls"][1] == RUNTIME_POLICY["syscalls"][1]
    assert denies(policy, RESTRICTED_SYSCALLS)
    allowed = {name for rule in policy["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]}
    assert not allowed & set(RESTRICTED_SYSCALLS)


def test_seccomp_restricted_leaves_input_unchanged():
    before = repr(RUNTIME_POLICY)
    restricted_policy(RUNTIME_POLICY)
    assert repr(RUNTIME_POLICY) == before


def test_seccomp_restricted_drops_emptied_rules():
    current = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ALLOW"}]}
    policy = restricted_policy(current)
    assert policy["syscalls"] == [{"names": list(RESTRICTED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]


@pytest.mark.parametrize(
    ("mode", "current", "expected"),
    [
        pytest.param("runtime-default", None, "baseline", id="runtime-default-none"),
        pytest.param("runtime-default", RUNTIME_POLICY, None, id="runtime-default-keeps"),
        pytest.param("restricted", None, "restricted-baseline", id="restricted-none"),
        pytest.param("restricted", RUNTIME_POLICY, "restricted-runtime", id="restricted-existing"),
        pytest.param("restricted", restricted_policy(None), None, id="restricted-already"),
        pytest.param("", None, None, id="off"),
    ],
)
def test_seccomp_adjustment_table(mode, current, expected):
    results = {
        "baseline": baseline_policy(),
        "restricted-baseline": restricted_policy(None),
        "restricted-runtime": restricted_policy(RUNTIME_POLICY),
        None: None,
    }
    assert seccomp_adjustment(mode, current) == results[expected]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(None, False, id="none"),
        pytest.param({}, False, id="empty"),
        pytest.param(RUNTIME_POLICY, False, id="allow-list-allows-them"),
        pytest.param({"syscalls": [{"names": list(RESTRICTED_SYSCALLS), "action": "SCMP_ACT_ALLOW"}]}, False,
                     id="allowed-by-rule"),
        pytest.param({"syscalls": [{"names": list(RESTRICTED_SYSCALLS), "action": "SCMP_ACT_ERRNO",
                                    "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}, False,
                     id="conditional-deny"),
        pytest.param({"syscalls": [{"names": list(RESTRICTED_SYSCALLS), "action": "SCMP_ACT_KILL_PROCESS"}]}, True,
                     id="kill-rule"),
    ],
)
def test_seccomp_restricted_satisfied(policy, expected):
    assert satisfies("restricted", policy) is expected


def test_seccomp_satisfies_unknown_mode():
    with pytest.raises(ValueError, match="'strict'"):
        satisfies("strict", None)
