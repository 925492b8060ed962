"""Convert between NRI protobuf messages and the plain types in `model`.

Only the fields the decisions use are carried over. Env entries keep their
order and duplicates. Seccomp policies use the OCI JSON field names
(`defaultAction`, `syscalls`, ...) on the model side.
"""

from collections.abc import Mapping
from typing import Any

from kubefence.nri import api_pb2, model


def pod_from_proto(pod: api_pb2.PodSandbox) -> model.Pod:
    return model.Pod(
        id=pod.id,
        name=pod.name,
        namespace=pod.namespace,
        uid=pod.uid,
        runtime_handler=pod.runtime_handler,
        annotations=dict(pod.annotations),
    )


def pod_to_proto(pod: model.Pod) -> api_pb2.PodSandbox:
    return api_pb2.PodSandbox(
        id=pod.id,
        name=pod.name,
        namespace=pod.namespace,
        uid=pod.uid,
        runtime_handler=pod.runtime_handler,
        annotations=dict(pod.annotations),
    )


def mount_from_proto(mount: api_pb2.Mount) -> model.Mount:
    return model.Mount(
        destination=mount.destination,
        type=mount.type,
        source=mount.source,
        options=tuple(mount.options),
    )


def mount_to_proto(mount: model.Mount) -> api_pb2.Mount:
    return api_pb2.Mount(
        destination=mount.destination,
        type=mount.type,
        source=mount.source,
        options=list(mount.options),
    )


def hook_from_proto(hook: api_pb2.Hook) -> model.Hook:
    return model.Hook(path=hook.path, args=tuple(hook.args), env=tuple(hook.env))


def hook_to_proto(hook: model.Hook) -> api_pb2.Hook:
    return api_pb2.Hook(path=hook.path, args=list(hook.args), env=list(hook.env))


def container_from_proto(container: api_pb2.Container) -> model.Container:
    return model.Container(
        id=container.id,
        pod_sandbox_id=container.pod_sandbox_id,
        name=container.name,
        args=tuple(container.args),
        env=tuple(container.env),
        mounts=tuple(mount_from_proto(mount) for mount in container.mounts),
        annotations=dict(container.annotations),
        state=container.state,
        seccomp_policy=(
            seccomp_from_proto(container.linux.seccomp_policy)
            if container.HasField("linux") and container.linux.HasField("seccomp_policy")
            else None
        ),
        hooks=tuple(hook_from_proto(hook) for hook in container.hooks.create_container),
    )


def container_to_proto(container: model.Container) -> api_pb2.Container:
    message = api_pb2.Container(
        id=container.id,
        pod_sandbox_id=container.pod_sandbox_id,
        name=container.name,
        state=container.state,
        args=list(container.args),
        env=list(container.env),
        mounts=[mount_to_proto(mount) for mount in container.mounts],
        annotations=dict(container.annotations),
    )
    if container.seccomp_policy is not None:
        message.linux.seccomp_policy.CopyFrom(seccomp_to_proto(container.seccomp_policy))
    for hook in container.hooks:
        message.hooks.create_container.append(hook_to_proto(hook))
    return message


def adjustment_to_proto(adjustment: model.Adjustment) -> api_pb2.ContainerAdjustment:
    message = api_pb2.ContainerAdjustment()
    if adjustment.args is not None:
        message.args.extend(adjustment.args)
    for key, value in adjustment.env:
        message.env.add(key=key, value=value)
    for mount in adjustment.mounts:
        message.mounts.append(mount_to_proto(mount))
    if adjustment.seccomp is not None:
        message.linux.seccomp_policy.CopyFrom(seccomp_to_proto(adjustment.seccomp))
    for hook in adjustment.hooks:
        message.hooks.create_container.append(hook_to_proto(hook))
    return message


def adjustment_from_proto(adjustment: api_pb2.ContainerAdjustment) -> model.Adjustment:
    seccomp = None
    if adjustment.HasField("linux") and adjustment.linux.HasField("seccomp_policy"):
        seccomp = seccomp_from_proto(adjustment.linux.seccomp_policy)
    return model.Adjustment(
        args=tuple(adjustment.args) if adjustment.args else None,
        env=tuple((entry.key, entry.value) for entry in adjustment.env),
        mounts=tuple(mount_from_proto(mount) for mount in adjustment.mounts),
        seccomp=seccomp,
        hooks=tuple(hook_from_proto(hook) for hook in adjustment.hooks.create_container),
    )


def seccomp_to_proto(policy: Mapping[str, Any]) -> api_pb2.LinuxSeccomp:
    """Build an NRI LinuxSeccomp from an OCI `linux.seccomp` object."""
    message = api_pb2.LinuxSeccomp(
        default_action=policy.get("defaultAction", ""),
        architectures=list(policy.get("architectures", ())),
        flags=list(policy.get("flags", ())),
        listener_path=policy.get("listenerPath", ""),
        listener_metadata=policy.get("listenerMetadata", ""),
    )
    if "defaultErrnoRet" in policy:
        message.default_errno.value = policy["defaultErrnoRet"]
    for rule in policy.get("syscalls", ()):
        syscall = message.syscalls.add(names=list(rule.get("names", ())), action=rule.get("action", ""))
        if "errnoRet" in rule:
            syscall.errno_ret.value = rule["errnoRet"]
        for argument in rule.get("args", ()):
            syscall.args.add(
                index=argument.get("index", 0),
                value=argument.get("value", 0),
                value_two=argument.get("valueTwo", 0),
                op=argument.get("op", ""),
            )
    return message


def seccomp_from_proto(message: api_pb2.LinuxSeccomp) -> dict[str, Any]:
    """Build an OCI `linux.seccomp` object from an NRI LinuxSeccomp."""
    policy: dict[str, Any] = {"defaultAction": message.default_action}
    if message.HasField("default_errno"):
        policy["defaultErrnoRet"] = message.default_errno.value
    if message.architectures:
        policy["architectures"] = list(message.architectures)
    if message.flags:
        policy["flags"] = list(message.flags)
    if message.listener_path:
        policy["listenerPath"] = message.listener_path
    if message.listener_metadata:
        policy["listenerMetadata"] = message.listener_metadata
    syscalls = []
    for syscall in message.syscalls:
        rule: dict[str, Any] = {"names": list(syscall.names), "action": syscall.action}
        if syscall.HasField("errno_ret"):
            rule["errnoRet"] = syscall.errno_ret.value
        if syscall.args:
            rule["args"] = [
                {"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op} for a in syscall.args
            ]
        syscalls.append(rule)
    if syscalls:
        policy["syscalls"] = syscalls
    return policy
