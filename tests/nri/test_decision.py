import dataclasses

import pytest
from .nri_scenarios import BASE_ENV, H, M_OK, PR, PS, make_config, make_container

from kubefence.nri import seccomp
from kubefence.nri.config import clean_path
from kubefence.nri.decision import (
    apply_adjustment,
    audit_synchronize,
    decide_create,
    validate_final,
    wrapped_profile,
)
from kubefence.nri.environment import NONO_HOME
from kubefence.nri.model import Adjustment, Hook, Mount, Pod
from kubefence.nri.mounts import is_at_or_below_nono

CONFIG = make_config()
PREFIX = ("/nono/nono", "wrap", "--profile", "default", "--")
PINNED = (
    "NONO_PROFILE=default",
    "TMPDIR=/tmp",
    f"HOME={NONO_HOME}",
    f"XDG_CONFIG_HOME={NONO_HOME}/.config",
)
EVIL = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/n"


def _pod(annotations=None, handler="nono-runc"):
    return dataclasses.replace(PS, runtime_handler=handler, annotations=annotations if annotations is not None else {})


def _final(pod, container, config=CONFIG):
    decision = decide_create(pod, container, config)
    assert decision.decision == "inject", decision.reason
    return apply_adjustment(container, decision.adjustment)


def assert_wrapped(container, profile="default", host_dir=H):
    """The final-view invariants of every accepted container."""
    at_nono = [mount for mount in container.mounts if is_at_or_below_nono(mount.destination)]
    assert len(at_nono) == 1, container.mounts
    assert at_nono[0].destination == "/nono"
    assert clean_path(at_nono[0].source) == host_dir
    assert "ro" in at_nono[0].options
    assert "rw" not in at_nono[0].options
    assert container.args[:5] == ("/nono/nono", "wrap", "--profile", profile, "--")
    assert len(container.args) > 5
    for name, value in (
        ("NONO_PROFILE", profile),
        ("TMPDIR", "/tmp"),
        ("HOME", NONO_HOME),
        ("XDG_CONFIG_HOME", f"{NONO_HOME}/.config"),
    ):
        assert [entry for entry in container.env if entry.split("=", 1)[0] == name] == [f"{name}={value}"]
    assert not [entry for entry in container.env if entry.startswith("NONO_") and not entry.startswith("NONO_PROFILE=")]


# Opted in and not opted in


def test_decide_create_opted_in_wraps():
    container = make_container("ctr-a", ["sleep", "3600"])
    decision = decide_create(PS, container, CONFIG)
    assert decision.decision == "inject"
    assert decision.profile == "default"
    assert decision.fallback is False
    assert decision.warning == ""
    assert decision.adjustment == Adjustment(
        args=("", *PREFIX, "sleep", "3600"),
        env=tuple(tuple(entry.split("=", 1)) for entry in PINNED),
        mounts=(),
        seccomp=None,
    )
    assert_wrapped(apply_adjustment(container, decision.adjustment))


def test_decide_create_not_opted_in_skips():
    decision = decide_create(PR, make_container("ctr-p", pod=PR), CONFIG)
    assert decision.decision == "skip"
    assert decision.adjustment is None
    assert "'runc'" in decision.reason
    assert decision.warning == ""
    assert decision.message == ""


def test_decide_create_not_opted_in_with_annotation_warns():
    pod = dataclasses.replace(PR, annotations={"nono.sh/profile": "default"})
    decision = decide_create(pod, make_container("ctr-p", pod=pod), CONFIG)
    assert decision.decision == "skip"
    assert decision.adjustment is None
    assert "nono.sh/profile='default'" in decision.warning
    assert "'runc'" in decision.warning
    assert "web/web-1" in decision.warning


def test_decide_create_empty_handler_skips():
    pod = _pod({"nono.sh/profile": "default"}, handler="")
    assert decide_create(pod, make_container(pod=pod), CONFIG).decision == "skip"


# Profile annotation


INVALID_PROFILES = [
    pytest.param("--allow-all", "1 to 64 characters", id="flag"),
    pytest.param("../../etc/passwd", "1 to 64 characters", id="path"),
    pytest.param("/nono/profiles/x.json", "1 to 64 characters", id="absolute-path"),
    pytest.param("x" * 65, "1 to 64 characters", id="too-long"),
    pytest.param("my_profile", "1 to 64 characters", id="underscore"),
    pytest.param("", "1 to 64 characters", id="empty"),
    pytest.param("default ", "1 to 64 characters", id="trailing-space"),
    pytest.param("codex", "allowed profiles: default, swival", id="not-allowed"),
    pytest.param("Default", "allowed profiles: default, swival", id="wrong-case"),
]


@pytest.mark.parametrize(("value", "accepted"), INVALID_PROFILES)
def test_decide_create_invalid_profile_rejected(value, accepted):
    decision = decide_create(_pod({"nono.sh/profile": value}), make_container(), CONFIG)
    assert decision.decision == "reject"
    assert decision.adjustment is None
    assert repr(value) in decision.message
    assert accepted in decision.message
    assert "nono.sh/profile" in decision.message


def test_decide_create_missing_profile_rejected():
    decision = decide_create(_pod({}), make_container(), CONFIG)
    assert decision.decision == "reject"
    assert "nono.sh/profile is missing" in decision.message
    assert "default, swival" in decision.message


@pytest.mark.parametrize(("value", "accepted"), [*INVALID_PROFILES, pytest.param(None, "missing", id="missing")])
def test_decide_create_invalid_profile_falls_back(value, accepted):
    config = make_config(on_missing_profile="default")
    annotations = {} if value is None else {"nono.sh/profile": value}
    decision = decide_create(_pod(annotations), make_container(), config)
    assert decision.decision == "inject"
    assert decision.fallback is True
    assert decision.profile == "default"
    assert "fallback" in decision.reason
    assert accepted in decision.reason
    assert_wrapped(apply_adjustment(make_container(), decision.adjustment))


def test_decide_create_fallback_uses_configured_default():
    config = make_config(on_missing_profile="default", default_profile="swival")
    decision = decide_create(_pod({"nono.sh/profile": "codex"}), make_container(), config)
    assert decision.profile == "swival"
    assert_wrapped(apply_adjustment(make_container(), decision.adjustment), profile="swival")


def test_decide_create_other_allowed_profile():
    pod = _pod({"nono.sh/profile": "swival"})
    decision = decide_create(pod, make_container(), CONFIG)
    assert decision.profile == "swival"
    assert decision.fallback is False
    assert_wrapped(apply_adjustment(make_container(), decision.adjustment), profile="swival")


# Args


def test_decide_create_empty_args_rejected():
    decision = decide_create(PS, make_container(args=()), CONFIG)
    assert decision.decision == "reject"
    assert "empty args" in decision.message


def test_decide_create_prefix_without_command_rejected():
    decision = decide_create(PS, make_container(args=PREFIX), CONFIG)
    assert decision.decision == "reject"
    assert "no command" in decision.message


def test_decide_create_already_wrapped_claims_nothing():
    wrapped = _final(PS, make_container())
    decision = decide_create(PS, wrapped, CONFIG)
    assert decision.decision == "inject"
    assert decision.adjustment == Adjustment()
    assert decision.adjustment.is_empty()
    assert "already wrapped" in decision.reason
    assert apply_adjustment(wrapped, decision.adjustment) == wrapped


def test_decide_create_prefix_present_env_missing_sets_env_only():
    container = make_container(args=(*PREFIX, "python", "app.py"))
    decision = decide_create(PS, container, CONFIG)
    assert decision.adjustment.args is None
    assert dict(decision.adjustment.env)["HOME"] == NONO_HOME
    final = apply_adjustment(container, decision.adjustment)
    assert final.args == (*PREFIX, "python", "app.py")
    assert_wrapped(final)


def test_decide_create_wrapped_for_other_profile_rejected():
    container = make_container(args=("/nono/nono", "wrap", "--profile", "swival", "--", "sh"))
    decision = decide_create(PS, container, CONFIG)
    assert decision.decision == "reject"
    assert "'swival'" in decision.message
    assert "'default'" in decision.message


def test_decide_create_other_nono_invocation_wrapped_again():
    args = ("/nono/nono", "wrap", "--allow", "/", "--", "sh")
    decision = decide_create(PS, make_container(args=args), CONFIG)
    assert decision.adjustment.args == ("", *PREFIX, *args)


def test_decide_create_keeps_earlier_plugin_args():
    # Args in the request already hold earlier plugins' changes.
    container = make_container(args=("/usr/bin/tini", "--", "python", "app.py"))
    decision = decide_create(PS, container, CONFIG)
    assert decision.adjustment.args == ("", *PREFIX, "/usr/bin/tini", "--", "python", "app.py")


# /nono mounts


MOUNT_REJECTED = [
    pytest.param((Mount("/nono/", "bind", EVIL, ("rbind", "rw")),), "spelt differently", id="m1-trailing-slash"),
    pytest.param((Mount("//nono", "bind", EVIL, ("rbind", "rw")),), "spelt differently", id="m2-double-slash"),
    pytest.param((M_OK, Mount("/nono/./nono", "bind", "/var/lib/evil/nono", ("rbind", "ro"))), "below /nono",
                 id="m3-dot-below"),
    pytest.param((Mount("/nono/../nono", "bind", H, ("rbind", "ro")),), "spelt differently", id="dotdot-spelling"),
    pytest.param((Mount("/nono/.", "bind", H, ("rbind", "ro")),), "spelt differently", id="trailing-dot"),
    pytest.param((Mount("nono", "bind", H, ("rbind", "ro")),), "spelt differently", id="relative"),
    pytest.param((Mount("./nono", "bind", H, ("rbind", "ro")),), "spelt differently", id="relative-dot"),
    pytest.param((Mount("/nono/", "bind", H, ("rbind", "ro")),), "spelt differently", id="trusted-trailing-slash"),
    pytest.param((Mount("/nono", "bind", EVIL, ("rbind", "ro")),), "not a bind mount of the trusted", id="other-source"),
    pytest.param((Mount("/nono", "bind", "/opt/nono-nri-evil", ("rbind", "ro")),), "not a bind mount",
                 id="source-prefix-lookalike"),
    pytest.param((Mount("/nono", "bind", "/opt/nono-nri/sub", ("rbind", "ro")),), "not a bind mount",
                 id="source-subdir"),
    pytest.param((Mount("/nono", "bind", "opt/nono-nri", ("rbind", "ro")),), "not a bind mount", id="source-relative"),
    pytest.param((Mount("/nono", "tmpfs", "tmpfs", ("ro",)),), "not a bind mount", id="tmpfs"),
    pytest.param((Mount("/nono", "tmpfs", H, ("ro",)),), "not a bind mount", id="tmpfs-with-host-source"),
    pytest.param((Mount("/nono", "overlay", H, ("ro",)),), "not a bind mount", id="overlay-with-host-source"),
    pytest.param((M_OK, Mount("/nono/nono", "bind", "/tmp/evil", ("bind", "ro"))), "below /nono", id="over-binary"),
    pytest.param((M_OK, Mount("/nono//nono", "bind", "/tmp/evil", ("bind", "ro"))), "below /nono",
                 id="over-binary-double-slash"),
    pytest.param((M_OK, Mount("/nono/x/../nono", "bind", "/tmp/e", ("bind", "ro"))), "below /nono",
                 id="over-binary-dotdot"),
    pytest.param((M_OK, Mount("/nono/lib", "tmpfs", "tmpfs", ())), "below /nono", id="tmpfs-below"),
    pytest.param((M_OK, M_OK), "2 mounts at /nono", id="two-trusted"),
    pytest.param((M_OK, Mount("/nono", "bind", EVIL, ("rbind", "ro"))), "not a bind mount", id="trusted-and-other"),
]


@pytest.mark.parametrize(("mounts", "expected"), MOUNT_REJECTED)
def test_decide_create_hostile_mount_rejected(mounts, expected):
    decision = decide_create(PS, make_container("m", ["sh"], mounts=mounts), CONFIG)
    assert decision.decision == "reject"
    assert decision.adjustment is None
    assert expected in decision.message


MOUNT_ACCEPTED = [
    pytest.param((M_OK,), (), id="trusted-ro"),
    pytest.param((M_OK, Mount("/nonolib", "bind", "/tmp/x", ("rbind", "ro"))), (), id="m4-nonolib"),
    pytest.param((Mount("/nono-data", "bind", "/tmp/x", ("rbind",)),), None, id="nono-dash-sibling"),
    pytest.param((), None, id="missing"),
    pytest.param((Mount("/nono", "bind", H, ("rbind", "rw")),), "rw", id="m5-read-write"),
    pytest.param((Mount("/nono", "bind", H, ("rbind",)),), "rw", id="no-ro-option"),
    pytest.param((Mount("/nono", "bind", H, ("rbind", "ro", "rw")),), "rw", id="ro-and-rw"),
    pytest.param((Mount("/nono", "bind", H + "/", ("rbind", "ro")),), (), id="source-trailing-slash"),
    pytest.param((Mount("/nono", "", H, ("rbind", "ro")),), (), id="untyped-rbind"),
    pytest.param((Mount("/nono/..", "bind", EVIL, ("rbind", "ro")), M_OK), (), id="dotdot-is-root"),
]


@pytest.mark.parametrize(("mounts", "change"), MOUNT_ACCEPTED)
def test_decide_create_mount_accepted(mounts, change):
    container = make_container("m", ["sh"], mounts=mounts)
    decision = decide_create(PS, container, CONFIG)
    assert decision.decision == "inject", decision.reason
    added = Mount("/nono", "bind", H, ("rbind", "ro", "nosuid", "nodev"))
    if change == ():
        assert decision.adjustment.mounts == ()
    elif change is None:
        assert decision.adjustment.mounts == (added,)
    else:
        assert decision.adjustment.mounts == (Mount("-/nono"), added)
    assert_wrapped(apply_adjustment(container, decision.adjustment))


def test_decide_create_custom_host_dir():
    config = make_config(nono_host_dir="/srv/nono")
    decision = decide_create(PS, make_container(mounts=()), config)
    assert decision.adjustment.mounts[0].source == "/srv/nono"
    rejected = decide_create(PS, make_container(), config)
    assert rejected.decision == "reject"
    assert "'/srv/nono'" in rejected.message


# Environment


ENV_REJECTED = [
    pytest.param(("NONO_ALLOW=/",), ["NONO_ALLOW"], id="nono-allow"),
    pytest.param(("NONO_NET_ALLOW=1", "NONO_ALLOW_DOMAIN=x"), ["NONO_ALLOW_DOMAIN", "NONO_NET_ALLOW"], id="two-nono"),
    pytest.param(("NONO_ALLOW",), ["NONO_ALLOW"], id="nono-without-value"),
    pytest.param(("NONO_=x",), ["NONO_"], id="bare-prefix"),
    pytest.param(("NONO_PROFILE=default", "NONO_PROFILE=swival"), ["NONO_PROFILE"], id="profile-duplicate"),
    pytest.param(("TMPDIR=/tmp", "TMPDIR=/"), ["TMPDIR"], id="tmpdir-duplicate"),
    pytest.param(("HOME=/",), ["HOME"], id="home-duplicate"),
    pytest.param(("XDG_CONFIG_HOME=/a", "XDG_CONFIG_HOME=/b"), ["XDG_CONFIG_HOME"], id="xdg-duplicate"),
    pytest.param(("LD_PRELOAD=/tmp/x.so",), ["LD_PRELOAD"], id="ld-preload"),
    pytest.param(("LD_LIBRARY_PATH=/tmp",), ["LD_LIBRARY_PATH"], id="ld-library-path"),
    pytest.param(("LD_AUDIT=/tmp/a.so",), ["LD_AUDIT"], id="ld-audit"),
    pytest.param(("GLIBC_TUNABLES=glibc.x=1",), ["GLIBC_TUNABLES"], id="glibc-tunables"),
]


@pytest.mark.parametrize(("extra", "names"), ENV_REJECTED)
def test_decide_create_hostile_env_rejected(extra, names):
    container = make_container(env=(*BASE_ENV, *extra))
    decision = decide_create(PS, container, CONFIG)
    assert decision.decision == "reject"
    for name in names:
        assert name in decision.message


def test_decide_create_reject_lists_every_problem():
    container = make_container(env=(*BASE_ENV, "NONO_ALLOW=/"), mounts=(Mount("//nono", "bind", EVIL, ()),))
    decision = decide_create(PS, container, CONFIG)
    assert "NONO_ALLOW" in decision.message
    assert "'//nono'" in decision.message


ENV_ACCEPTED = [
    pytest.param(("NONO_PROFILE=swival",), id="profile-preset-other"),
    pytest.param(("NONO_PROFILE=default",), id="profile-preset-same"),
    pytest.param(("nono_allow=/", "Nono_Allow=/"), id="lower-case-nono"),
    pytest.param(("XDG_CONFIG_HOME=/root/.config", "TMPDIR=/"), id="pinned-once"),
    pytest.param(("EMPTY=",), id="empty-value"),
    pytest.param(("MY_NONO_ALLOW=/",), id="nono-not-prefix"),
]


@pytest.mark.parametrize("extra", ENV_ACCEPTED)
def test_decide_create_env_accepted(extra):
    container = make_container(env=(*BASE_ENV, *extra))
    final = _final(PS, container)
    assert_wrapped(final)
    for entry in extra:
        if entry.split("=", 1)[0] not in ("NONO_PROFILE", "TMPDIR", "XDG_CONFIG_HOME"):
            assert entry in final.env


def test_decide_create_env_keeps_workload_variables_in_order():
    container = make_container(env=("A=1", "HOME=/root", "B=2"))
    final = _final(PS, container)
    assert final.env[:3] == ("A=1", f"HOME={NONO_HOME}", "B=2")


# Seccomp


def test_decide_create_seccomp_off_by_default():
    assert decide_create(PS, make_container(), CONFIG).adjustment.seccomp is None


def test_decide_create_seccomp_restricted_added():
    config = make_config(seccomp_profile="restricted")
    decision = decide_create(PS, make_container(), config)
    assert seccomp.denies(decision.adjustment.seccomp, seccomp.RESTRICTED_SYSCALLS)


def test_decide_create_seccomp_runtime_default_keeps_existing():
    config = make_config(seccomp_profile="runtime-default")
    existing = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
    decision = decide_create(PS, make_container(seccomp_policy=existing), config)
    assert decision.adjustment.seccomp is None
    bare = decide_create(PS, make_container(), config)
    assert bare.adjustment.seccomp == seccomp.baseline_policy()


def test_decide_create_second_instance_claims_nothing_with_seccomp():
    config = make_config(seccomp_profile="restricted")
    final = _final(PS, make_container(mounts=()), config)
    decision = decide_create(PS, final, config)
    assert decision.adjustment.is_empty()


# The createContainer hook that checks /nono


VERIFY_HOOK = Hook(path=f"{H}/kubefence-verify", args=(f"{H}/kubefence-verify", H))


def test_decide_create_verify_hook_off_by_default():
    decision = decide_create(PS, make_container(), CONFIG)
    assert decision.adjustment.hooks == ()


def test_decide_create_verify_hook_added():
    config = make_config(verify_hook=True)
    decision = decide_create(PS, make_container(), config)
    assert decision.adjustment.hooks == (VERIFY_HOOK,)
    final = apply_adjustment(make_container(), decision.adjustment)
    assert final.hooks == (VERIFY_HOOK,)
    assert_wrapped(final)
    assert validate_final(PS, final, config).decision == "inject"


def test_decide_create_verify_hook_custom_host_dir():
    config = make_config(verify_hook=True, nono_host_dir="/srv/nono")
    container = make_container(mounts=())
    decision = decide_create(PS, container, config)
    assert decision.adjustment.hooks == (
        Hook(path="/srv/nono/kubefence-verify", args=("/srv/nono/kubefence-verify", "/srv/nono")),
    )


def test_decide_create_verify_hook_not_for_skipped_pod():
    config = make_config(verify_hook=True)
    decision = decide_create(_pod(handler="runc"), make_container(), config)
    assert decision.decision == "skip"
    assert decision.adjustment is None


def test_decide_create_second_instance_adds_no_second_hook():
    config = make_config(verify_hook=True)
    final = _final(PS, make_container(), config)
    decision = decide_create(PS, final, config)
    assert decision.adjustment.is_empty()
    assert "already wrapped" in decision.reason


def test_decide_create_verify_hook_added_after_earlier_hooks():
    config = make_config(verify_hook=True)
    other = Hook(path="/usr/libexec/oci/hooks.d/gpu", args=("gpu",))
    lookalike = Hook(path=f"{H}/kubefence-verify", args=(f"{H}/kubefence-verify", "/elsewhere"))
    container = make_container(hooks=(other, lookalike))
    decision = decide_create(PS, container, config)
    assert decision.adjustment.hooks == (VERIFY_HOOK,)
    assert apply_adjustment(container, decision.adjustment).hooks == (other, lookalike, VERIFY_HOOK)


def test_adjustment_with_only_hooks_not_empty():
    assert not Adjustment(hooks=(VERIFY_HOOK,)).is_empty()


# Applying adjustments the way the runtime does


APPLY_ENV = [
    pytest.param(("A=1", "B=2"), (("A", "x"),), ("A=x", "B=2"), id="replace-in-place"),
    pytest.param(("A=1", "B=2", "A=3"), (("A", "x"),), ("A=3", "B=2"), id="later-duplicate-wins"),
    pytest.param(("B=2", "B=3"), (("A", "x"),), ("B=3", "A=x"), id="duplicates-collapse"),
    pytest.param(("A=1",), (("C", "z"), ("B", "y")), ("A=1", "C=z", "B=y"), id="new-keys-appended-in-order"),
    pytest.param(("A=1", "B=2"), (("-A", ""),), ("A=1", "B=2"), id="pure-removal-dropped"),
    pytest.param(("A=1", "JUNK", "=x"), (("B", "y"),), ("A=1", "B=y"), id="malformed-entries-dropped"),
    pytest.param(("A=1", "JUNK"), (), ("A=1", "JUNK"), id="no-env-change-keeps-env"),
    pytest.param(("A=1",), (("A", ""),), ("A=",), id="empty-value-set"),
    pytest.param(("AB=1", "A=2"), (("A", "x"),), ("AB=1", "A=x"), id="prefix-key-distinct"),
]


@pytest.mark.parametrize(("env", "changes", "expected"), APPLY_ENV)
def test_apply_adjustment_env(env, changes, expected):
    container = make_container(env=env)
    assert apply_adjustment(container, Adjustment(env=changes)).env == expected


NONO_RW = Mount("/nono", "bind", H, ("rbind", "rw"))
NONO_RO = Mount("/nono", "bind", H, ("rbind", "ro"))
APPLY_MOUNTS = [
    pytest.param((NONO_RW,), (Mount("-/nono"), NONO_RO), (NONO_RO,), id="remove-and-add"),
    pytest.param((NONO_RW,), (NONO_RO,), (NONO_RO,), id="add-replaces-exact"),
    pytest.param((Mount("/nono/", "bind", EVIL),), (NONO_RO,), (NONO_RO, Mount("/nono/", "bind", EVIL)),
                 id="add-keeps-other-spelling"),
    pytest.param((Mount("/nono/nono", "bind", EVIL),), (Mount("-/nono"), NONO_RO),
                 (NONO_RO, Mount("/nono/nono", "bind", EVIL)), id="submount-survives-and-sorts-after"),
    pytest.param((Mount("/a"), Mount("/a")), (Mount("-/a"),), (Mount("/a"),), id="removal-takes-first-only"),
    pytest.param((Mount("/b/c"), Mount("/z")), (Mount("/a"),), (Mount("/a"), Mount("/z"), Mount("/b/c")),
                 id="sorted-by-depth-then-name"),
    pytest.param((Mount("/z"), Mount("/a")), (), (Mount("/z"), Mount("/a")), id="no-change-no-sort"),
]


@pytest.mark.parametrize(("mounts", "changes", "expected"), APPLY_MOUNTS)
def test_apply_adjustment_mounts(mounts, changes, expected):
    container = make_container(mounts=mounts)
    assert apply_adjustment(container, Adjustment(mounts=changes)).mounts == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(("", "a", "b"), ("a", "b"), id="override-form"),
        pytest.param(("a",), ("a",), id="plain"),
        pytest.param(None, ("sleep", "3600"), id="none"),
        pytest.param((), ("sleep", "3600"), id="empty"),
        pytest.param(("",), ("sleep", "3600"), id="only-override-marker"),
    ],
)
def test_apply_adjustment_args(changes, expected):
    assert apply_adjustment(make_container(), Adjustment(args=changes)).args == expected


def test_apply_adjustment_none_unchanged():
    container = make_container()
    assert apply_adjustment(container, None) is container


def test_apply_adjustment_seccomp_replaces():
    policy = {"defaultAction": "SCMP_ACT_ALLOW"}
    container = make_container(seccomp_policy={"defaultAction": "SCMP_ACT_ERRNO"})
    assert apply_adjustment(container, Adjustment(seccomp=policy)).seccomp_policy == policy
    assert apply_adjustment(container, Adjustment()).seccomp_policy == {"defaultAction": "SCMP_ACT_ERRNO"}


# Final view of every accepted container


FINAL_VIEW_CASES = [
    pytest.param(make_container(), id="scenario-container"),
    pytest.param(make_container(mounts=()), id="no-mounts"),
    pytest.param(make_container(mounts=(NONO_RW,)), id="read-write-nono"),
    pytest.param(make_container(env=()), id="no-env"),
    pytest.param(make_container(env=("HOME=/", "TMPDIR=/", "XDG_CONFIG_HOME=/", "NONO_PROFILE=x")), id="pinned-once"),
    pytest.param(make_container(env=("A", "B=1")), id="malformed-env"),
    pytest.param(make_container(args=(*PREFIX, "sh")), id="prefix-present"),
    pytest.param(make_container(mounts=(Mount("/data", "bind", "/x"), M_OK, Mount("/", "bind", "/y"))),
                 id="other-mounts"),
]


@pytest.mark.parametrize("container", FINAL_VIEW_CASES)
def test_final_view_accepted_container_wrapped(container):
    final = _final(PS, container)
    assert_wrapped(final)
    assert validate_final(PS, final, CONFIG).decision == "inject"


# Validator: the final adjustment of all plugins


def _later_plugin(adjustment):
    """Final container when a later plugin's changes are merged after ours."""
    ours = decide_create(PS, make_container(), CONFIG).adjustment
    merged = Adjustment(
        args=adjustment.args if adjustment.args is not None else ours.args,
        env=ours.env + adjustment.env,
        mounts=ours.mounts + adjustment.mounts,
        seccomp=adjustment.seccomp,
    )
    return apply_adjustment(make_container(), merged)


VALIDATOR_REJECTED = [
    pytest.param(Adjustment(args=("", "sleep", "3600")), "do not start with the nono wrapper", id="prefix-removed"),
    pytest.param(Adjustment(args=("", "/nono/nono", "wrap", "--profile", "swival", "--", "sh")),
                 "do not start with the nono wrapper", id="profile-changed"),
    pytest.param(Adjustment(mounts=(Mount("-/nono"),)), "no read-only bind mount", id="nono-removed"),
    pytest.param(Adjustment(mounts=(Mount("/nono", "bind", EVIL, ("rbind", "ro")),)), "not a bind mount",
                 id="nono-replaced"),
    pytest.param(Adjustment(mounts=(NONO_RW,)), "no read-only bind mount", id="nono-made-writable"),
    pytest.param(Adjustment(mounts=(Mount("/nono/nono", "bind", EVIL, ("bind", "ro")),)), "below /nono",
                 id="mount-below-nono"),
    pytest.param(Adjustment(mounts=(Mount("//nono", "bind", EVIL, ("bind", "ro")),)), "spelt differently",
                 id="second-spelling"),
    pytest.param(Adjustment(env=(("HOME", "/"),)), "HOME must be", id="home-changed"),
    pytest.param(Adjustment(env=(("TMPDIR", "/"),)), "TMPDIR must be", id="tmpdir-changed"),
    pytest.param(Adjustment(env=(("NONO_PROFILE", "swival"),)), "NONO_PROFILE must be", id="profile-env-changed"),
    pytest.param(Adjustment(env=(("NONO_ALLOW", "/"),)), "NONO_ALLOW", id="nono-allow-added"),
    pytest.param(Adjustment(env=(("LD_PRELOAD", "/x.so"),)), "LD_PRELOAD", id="ld-preload-added"),
]


@pytest.mark.parametrize(("later", "expected"), VALIDATOR_REJECTED)
def test_validate_final_later_plugin_rejected(later, expected):
    final = _later_plugin(later)
    decision = validate_final(PS, final, CONFIG)
    assert decision.decision == "reject"
    assert expected in decision.message
    assert "undoes the nono wrapping" in decision.message


def test_validate_final_unrelated_change_accepted():
    final = _later_plugin(Adjustment(env=(("OTHER", "1"),), mounts=(Mount("/data", "bind", "/srv/data"),)))
    assert validate_final(PS, final, CONFIG).decision == "inject"


def test_validate_final_duplicate_pinned_key_rejected():
    final = dataclasses.replace(_final(PS, make_container()), env=(*PINNED, "HOME=/"))
    decision = validate_final(PS, final, CONFIG)
    assert decision.decision == "reject"
    assert "HOME" in decision.message


def test_validate_final_seccomp_removed_rejected():
    config = make_config(seccomp_profile="restricted")
    final = _final(PS, make_container(), config)
    assert validate_final(PS, final, config).decision == "inject"
    weakened = dataclasses.replace(final, seccomp_policy=None)
    decision = validate_final(PS, weakened, config)
    assert decision.decision == "reject"
    assert "seccomp" in decision.message


def test_validate_final_not_opted_in_skips():
    decision = validate_final(PR, make_container(pod=PR), CONFIG)
    assert decision.decision == "skip"


def test_validate_final_invalid_profile_rejected():
    pod = _pod({"nono.sh/profile": "--allow-all"})
    decision = validate_final(pod, _final(PS, make_container()), CONFIG)
    assert decision.decision == "reject"
    assert "'--allow-all'" in decision.message


# Synchronize audit


def test_audit_synchronize_reports_unwrapped():
    wrapped = _final(PS, make_container("ctr-a"))
    unwrapped = make_container("ctr-b", state=3)
    bad_mount = dataclasses.replace(wrapped, id="ctr-c", mounts=(Mount("/nono", "bind", EVIL, ("ro",)),))
    findings = audit_synchronize([PS, PR], [wrapped, unwrapped, bad_mount], CONFIG)
    assert [finding.container_id for finding in findings] == ["ctr-b", "ctr-c"]
    assert findings[0].pod == PS
    assert findings[0].container_name == "ctr-b"
    assert "running without nono" in findings[0].reason
    assert "args do not start" in findings[0].reason
    assert "not a bind mount" in findings[1].reason


def test_audit_synchronize_ignores_others():
    stopped = make_container("ctr-stopped", state=4)
    plain = make_container("ctr-plain", pod=PR, state=3)
    orphan = make_container("ctr-orphan", pod=Pod(id="gone", runtime_handler="nono-runc"), state=3)
    assert audit_synchronize([PS, PR], [stopped, plain, orphan], CONFIG) == []


def test_audit_synchronize_disallowed_profile_reported():
    container = make_container(args=("/nono/nono", "wrap", "--profile", "codex", "--", "sh"), state=3)
    findings = audit_synchronize([PS], [container], CONFIG)
    assert len(findings) == 1
    assert "'codex'" in findings[0].reason


def test_audit_synchronize_large_node():
    pods = []
    containers = []
    for index in range(150):
        opted_in = index % 2 == 0
        pod = Pod(id=f"pod-{index}", runtime_handler="nono-runc" if opted_in else "runc",
                  annotations={"nono.sh/profile": "default"} if opted_in else {})
        pods.append(pod)
        for slot in range(2):
            container = make_container(f"c-{index}-{slot}", pod=pod, state=3,
                                       env=tuple(f"V{n}=x" for n in range(20)))
            if opted_in and slot == 0:
                container = _final(pod, container)
            containers.append(container)
    findings = audit_synchronize(pods, containers, CONFIG)
    assert len(containers) == 300
    assert len(findings) == 75
    assert all(finding.container_id.endswith("-1") for finding in findings)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param((*PREFIX, "sh"), "default", id="wrapped"),
        pytest.param(PREFIX, None, id="no-command"),
        pytest.param(("/nono/nono", "wrap", "--profile", "x", "-x", "sh"), None, id="no-separator"),
        pytest.param(("sh",), None, id="plain"),
        pytest.param((), None, id="empty"),
    ],
)
def test_wrapped_profile(args, expected):
    assert wrapped_profile(args) == expected


def test_apply_adjustment_env_large_keeps_generator_order():
    """Thousands of entries with duplicates: the adjusted key takes its first place, a later duplicate wins."""
    env = ("TMPDIR=/var/tmp",) + tuple(f"K{index}=v{index}" for index in range(20000)) + ("K7=late", "TMPDIR=/etc")
    changes = (("TMPDIR", "/tmp"), ("NONO_PROFILE", "default"))
    result = apply_adjustment(make_container(env=env), Adjustment(env=changes)).env
    assert len(result) == 20002
    assert result[0] == "TMPDIR=/etc"
    assert result[8] == "K7=late"
    assert result[20001] == "NONO_PROFILE=default"
