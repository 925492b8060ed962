"""The sandbox and containers that the kubelet and the runtime hand to NRI for a pod.

`kubefence demo` and the end-to-end tests have no kubelet and no
containerd. These pure functions compute what those would send in
RunPodSandbox and CreateContainer for a pod manifest after admission: the
sandbox with its runtime handler and annotations, and each container's
OCI args, env and mounts. They also put the final container into the
process and mounts of an OCI runtime spec.

The rules followed are the Kubernetes ones for `command` and `args`
against the image's ENTRYPOINT and CMD, and env order image first, then
the container's `env`. Supported volumes are hostPath and emptyDir (whose
host directory the caller provides). Other volume kinds, `envFrom`,
`valueFrom` and service links are not computed and raise
`UnsupportedPodError`.
"""

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from kubefence.nri.model import Container, Mount, Pod

# The handler a runtime uses for a pod without runtimeClassName.
DEFAULT_HANDLER = "runc"


class UnsupportedPodError(ValueError):
    """A pod that uses a feature these functions do not compute."""


@dataclass(frozen=True)
class Image:
    """The parts of an image config that a runtime reads to start a container."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


def sandbox(pod: Mapping, sandbox_id: str, handlers: Mapping[str, str] | None = None) -> Pod:
    """Return the NRI pod sandbox for a pod manifest.

    `handlers` maps RuntimeClass names to CRI runtime handlers. A class
    that is not in it is taken to have a handler of the same name.
    """
    metadata = pod.get("metadata") or {}
    runtime_class = (pod.get("spec") or {}).get("runtimeClassName") or ""
    handler = (handlers or {}).get(runtime_class, runtime_class) if runtime_class else DEFAULT_HANDLER
    return Pod(
        id=sandbox_id,
        name=metadata.get("name", ""),
        namespace=metadata.get("namespace", "default"),
        uid=metadata.get("uid", ""),
        runtime_handler=handler,
        annotations=dict(metadata.get("annotations") or {}),
    )


def container_args(container: Mapping, image: Image) -> tuple[str, ...]:
    """Return the process args: `command` replaces ENTRYPOINT, `args` replaces CMD."""
    command = container.get("command")
    args = container.get("args")
    if command:
        return tuple(command) + tuple(args or ())
    if args:
        return image.entrypoint + tuple(args)
    return image.entrypoint + image.cmd


def container_env(container: Mapping, image: Image) -> tuple[str, ...]:
    """Return the env in OCI `KEY=VALUE` form: the image's, then the container's."""
    if container.get("envFrom"):
        raise UnsupportedPodError(f"container {container.get('name')!r}: envFrom is not supported here")
    env = list(image.env)
    for entry in container.get("env") or ():
        if "valueFrom" in entry:
            raise UnsupportedPodError(
                f"container {container.get('name')!r}: env {entry.get('name')!r} uses valueFrom, which is not supported here"
            )
        env.append(f"{entry['name']}={entry.get('value', '')}")
    return tuple(env)


def container_mounts(pod: Mapping, container: Mapping, empty_dirs: Mapping[str, str]) -> tuple[Mount, ...]:
    """Return the bind mounts for the container's volumeMounts.

    `empty_dirs` maps emptyDir volume names to the host directories that
    back them.
    """
    volumes = {volume["name"]: volume for volume in (pod.get("spec") or {}).get("volumes") or ()}
    mounts = []
    for volume_mount in container.get("volumeMounts") or ():
        name = volume_mount["name"]
        volume = volumes.get(name)
        if volume is None:
            raise UnsupportedPodError(f"volumeMount {name!r} names no volume of the pod")
        if "hostPath" in volume:
            source = volume["hostPath"]["path"]
        elif "emptyDir" in volume:
            if name not in empty_dirs:
                raise UnsupportedPodError(f"emptyDir volume {name!r} has no host directory")
            source = empty_dirs[name]
        else:
            kinds = sorted(set(volume) - {"name"})
            raise UnsupportedPodError(f"volume {name!r} of kind {kinds!r} is not supported here: only hostPath and emptyDir")
        if volume_mount.get("subPath"):
            source = posixpath.join(source, volume_mount["subPath"])
        access = "ro" if volume_mount.get("readOnly") else "rw"
        mounts.append(Mount(
            destination=volume_mount["mountPath"], type="bind", source=source, options=("rbind", "rprivate", access),
        ))
    return tuple(mounts)


def create_request(
    pod: Mapping,
    container: Mapping,
    sandbox_id: str,
    container_id: str,
    image: Image,
    empty_dirs: Mapping[str, str],
) -> Container:
    """Return the container as a runtime describes it in NRI CreateContainer."""
    return Container(
        id=container_id,
        pod_sandbox_id=sandbox_id,
        name=container["name"],
        args=container_args(container, image),
        env=container_env(container, image),
        mounts=container_mounts(pod, container, empty_dirs),
    )


def apply_to_spec(spec: dict, container: Container, working_dir: str | None = None) -> None:
    """Set an OCI runtime spec's args, env, added mounts and createContainer hooks from the final container."""
    spec["process"]["args"] = list(container.args)
    spec["process"]["env"] = list(container.env)
    if working_dir:
        spec["process"]["cwd"] = working_dir
    for mount in container.mounts:
        spec["mounts"].append({
            "destination": mount.destination,
            "type": mount.type or "bind",
            "source": mount.source,
            "options": list(mount.options),
        })
    for hook in container.hooks:
        entry = {"path": hook.path, "args": list(hook.args)}
        if hook.env:
            entry["env"] = list(hook.env)
        spec.setdefault("hooks", {}).setdefault("createContainer", []).append(entry)
