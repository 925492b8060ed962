"""Conversion between NRI protobuf messages and the plain model."""

from kubefence.nri import api_pb2, convert
from kubefence.nri.model import Adjustment, Container, Hook, Mount, Pod

SECCOMP = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [
        {"names": ["ptrace", "io_uring_setup"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
    ],
}


def test_convert_seccomp_round_trip():
    assert convert.seccomp_from_proto(convert.seccomp_to_proto(SECCOMP)) == SECCOMP


def test_convert_seccomp_unset_errno_stays_unset():
    message = convert.seccomp_to_proto({"defaultAction": "SCMP_ACT_ERRNO"})
    assert not message.HasField("default_errno")
    assert convert.seccomp_from_proto(message) == {"defaultAction": "SCMP_ACT_ERRNO"}


def test_convert_container_round_trip_keeps_env_order_and_duplicates():
    container = Container(
        id="c", pod_sandbox_id="p", name="n", args=("a", "b"), env=("A=1", "B=2", "A=3"),
        mounts=(Mount("/nono", "bind", "/opt/nono-nri", ("rbind", "ro")),),
        annotations={"k": "v"}, state=api_pb2.CONTAINER_RUNNING, seccomp_policy=SECCOMP,
    )
    assert convert.container_from_proto(convert.container_to_proto(container)) == container


def test_convert_pod_round_trip():
    pod = Pod(id="p", name="n", namespace="ns", uid="u", runtime_handler="nono-runc",
              annotations={"nono.sh/profile": "default"})
    assert convert.pod_from_proto(convert.pod_to_proto(pod)) == pod


def test_convert_adjustment_round_trip():
    adjustment = Adjustment(
        args=("", "/nono/nono", "wrap"), env=(("NONO_PROFILE", "default"), ("-X", "")),
        mounts=(Mount("-/nono/nono"), Mount("/nono", "bind", "/h", ("ro",))), seccomp=SECCOMP,
    )
    message = convert.adjustment_to_proto(adjustment)
    assert list(message.args) == ["", "/nono/nono", "wrap"]
    assert message.linux.seccomp_policy.default_action == "SCMP_ACT_ALLOW"
    assert convert.adjustment_from_proto(message) == adjustment


def test_convert_empty_adjustment_is_empty_message():
    assert convert.adjustment_to_proto(Adjustment()).ByteSize() == 0
    assert convert.adjustment_from_proto(api_pb2.ContainerAdjustment()).is_empty()


HOOK = Hook(path="/opt/nono-nri/kubefence-verify", args=("/opt/nono-nri/kubefence-verify", "/opt/nono-nri"),
            env=("A=1",))


def test_convert_adjustment_hooks_are_create_container_hooks():
    message = convert.adjustment_to_proto(Adjustment(hooks=(HOOK,)))
    [hook] = message.hooks.create_container
    assert hook.path == HOOK.path
    assert list(hook.args) == list(HOOK.args)
    assert list(hook.env) == ["A=1"]
    assert not message.hooks.prestart
    assert not message.hooks.start_container
    assert convert.adjustment_from_proto(message) == Adjustment(hooks=(HOOK,))


def test_convert_adjustment_hooks_wire_field_numbers():
    # containerd/nri: ContainerAdjustment.hooks = 5, Hooks.create_container = 3,
    # Hook.path = 1, Hook.args = 2.
    message = convert.adjustment_to_proto(Adjustment(hooks=(Hook(path="/p", args=("a",)),)))
    hook = bytes([0x0A, 2]) + b"/p" + bytes([0x12, 1]) + b"a"
    hooks = bytes([0x1A, len(hook)]) + hook
    assert message.SerializeToString() == bytes([0x2A, len(hooks)]) + hooks


def test_convert_container_hooks_round_trip():
    container = Container(id="c", args=("sh",), hooks=(HOOK, Hook(path="/other")))
    message = convert.container_to_proto(container)
    assert [hook.path for hook in message.hooks.create_container] == [HOOK.path, "/other"]
    assert convert.container_from_proto(message) == container


def test_convert_container_other_hook_kinds_ignored():
    message = api_pb2.Container(id="c")
    message.hooks.prestart.add(path="/prestart")
    message.hooks.poststop.add(path="/poststop")
    assert convert.container_from_proto(message).hooks == ()
