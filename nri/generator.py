"""Apply an adjustment to a container the way containerd does.

This is a model of the runtime side, used by the validator and the tests to
judge the final OCI view. It follows containerd/nri at v0.11 (the version
containerd 2.2 vendors): the merge of all plugins' replies
(`pkg/adaptation/result.go`) followed by the spec generator
(`pkg/runtime-tools/generate`):

* Env: env removal markers with no addition of the same key are dropped in
  the merge. Once any env change is requested, the generator rebuilds the
  env: entries without '=' disappear; an adjusted key takes the place of
  its first occurrence; every later entry with an already present key
  overwrites that entry's value in place; new keys are appended in the
  order they were adjusted.
* Args: a leading "" (the override form) is stripped; non-empty args
  replace the container's args.
* Mounts: a removal marker "-DEST" removes the first mount whose
  destination is exactly DEST; an added mount first removes the first
  mount with exactly its destination, then is appended; the list is then
  sorted by the number of '/' in the cleaned destination, then by
  destination.
* Seccomp: a policy replaces the container's policy.
* Hooks: adjusted hooks are appended to the container's hooks of the same
  kind, after the hooks already there.
"""

import dataclasses

from kubefence.nri.config import clean_path
from kubefence.nri.model import REMOVAL_MARKER, Adjustment, Container, Mount


class _EnvBuilder:
    """An OCI env list with the generator's AddProcessEnv semantics, in linear time.

    Setting a key replaces the value of its first entry, or appends the key.
    An index from key to position keeps each set O(1): a container may carry
    thousands of entries, and the whole check must finish well inside the
    runtime's 2 s request timeout.
    """

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.positions: dict[str, int] = {}

    def set(self, key: str, value: str) -> None:
        if not key:
            return
        entry = f"{key}={value}"
        position = self.positions.get(key)
        if position is None:
            self.positions[key] = len(self.entries)
            self.entries.append(entry)
        else:
            self.entries[position] = entry


def apply_env(env: tuple[str, ...], changes: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """Return `env` after the env part of an adjustment."""
    # The runtime's merge drops removal markers that come without an
    # addition of the same key, which is every marker one plugin can send.
    additions = [(key, value) for key, value in changes if not key.startswith(REMOVAL_MARKER)]
    if not additions:
        return env
    pending = {key: value for key, value in additions}
    result = _EnvBuilder()
    for entry in env:
        if "=" not in entry:
            continue
        key, value = entry.split("=", 1)
        if key in pending:
            result.set(key, pending.pop(key))
            continue
        result.set(key, value)
    for key, value in additions:
        if key in pending:
            result.set(key, value)
    return tuple(result.entries)


def _remove_first(mounts: list[Mount], destination: str) -> None:
    for index, mount in enumerate(mounts):
        if mount.destination == destination:
            del mounts[index]
            return


def apply_mounts(mounts: tuple[Mount, ...], changes: tuple[Mount, ...]) -> tuple[Mount, ...]:
    """Return `mounts` after the mount part of an adjustment."""
    if not changes:
        return mounts
    result = list(mounts)
    for change in changes:
        if change.destination.startswith(REMOVAL_MARKER):
            _remove_first(result, change.destination[len(REMOVAL_MARKER):])
            continue
        _remove_first(result, change.destination)
        result.append(change)
    result.sort(key=lambda mount: (clean_path(mount.destination).count("/"), mount.destination))
    return tuple(result)


def apply_args(args: tuple[str, ...], changes: tuple[str, ...] | None) -> tuple[str, ...]:
    """Return `args` after the args part of an adjustment."""
    if not changes:
        return args
    if changes[0] == "":
        changes = changes[1:]
    return tuple(changes) if changes else args


def apply_adjustment(container: Container, adjustment: Adjustment | None) -> Container:
    """Return `container` as the runtime would start it after `adjustment`."""
    if adjustment is None:
        return container
    return dataclasses.replace(
        container,
        args=apply_args(container.args, adjustment.args),
        env=apply_env(container.env, adjustment.env),
        mounts=apply_mounts(container.mounts, adjustment.mounts),
        seccomp_policy=adjustment.seccomp if adjustment.seccomp is not None else container.seccomp_policy,
        hooks=container.hooks + adjustment.hooks,
    )
