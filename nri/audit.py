"""Audit records: one JSON file per wrapped container under the state directory.

A record is written when a container is wrapped and removed on Stop or
Remove. The runtime does not always send those events (a container that
exits while the runtime is down is never removed), so `reconcile` drops the
records of every container the runtime no longer lists in Synchronize.

Each record is written to a temporary file in the same directory, flushed
with fsync and renamed over the final name, so a reader or a crash sees
either the old record or the new one, never a partial file. Files are
created with mode 0600. File names are the container ids themselves, which
the runtime makes 64 hex digits; an id that is not safe as a file name is
rejected.
"""

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

_SUFFIX = ".json"
_TEMPORARY_SUFFIX = ".tmp"
# Letters, digits, '.', '_' and '-', not starting with '.', at most 128 characters.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class InvalidContainerIdError(ValueError):
    """A container id that cannot be used as a record file name."""

    def __init__(self, container_id: object):
        super().__init__(
            f"invalid container id {container_id!r} for an audit record; expected 1 to 128 letters, digits, "
            "'.', '_' or '-', not starting with '.'"
        )
        self.container_id = container_id


def _is_safe_id(container_id: object) -> bool:
    return isinstance(container_id, str) and _SAFE_ID.fullmatch(container_id) is not None


class AuditStore:
    """Audit records in `state_dir`, keyed by container id."""

    def __init__(self, state_dir: str):
        """Open the store, creating `state_dir` (mode 0700) if needed.

        Temporary files left by a write that a crash interrupted are deleted
        here, at start-up, when no write of this process can be running.
        """
        self.state_dir = state_dir
        if os.path.lexists(state_dir) and not os.path.isdir(state_dir):
            # makedirs would report "File exists", which hides the problem.
            raise NotADirectoryError(f"state_dir {state_dir!r} exists and is not a directory")
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        for name in os.listdir(state_dir):
            if name.startswith(".") and name.endswith(_TEMPORARY_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(state_dir, name))

    def _path(self, container_id: str) -> str:
        if not _is_safe_id(container_id):
            raise InvalidContainerIdError(container_id)
        return os.path.join(self.state_dir, container_id + _SUFFIX)

    def write(self, container_id: str, record: Mapping[str, Any]) -> None:
        """Replace the record of `container_id` atomically (temporary file, fsync, rename)."""
        path = self._path(container_id)
        data = json.dumps(record, sort_keys=True, default=str).encode()
        descriptor, temporary = tempfile.mkstemp(
            dir=self.state_dir, prefix=f".{container_id}.", suffix=_TEMPORARY_SUFFIX
        )
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self._sync_directory()

    def read(self, container_id: str) -> dict[str, Any] | None:
        """Return the record of `container_id`, or None when there is none."""
        try:
            with open(self._path(container_id), "rb") as file:
                return json.load(file)
        except (FileNotFoundError, InvalidContainerIdError):
            return None

    def remove(self, container_id: str) -> bool:
        """Delete the record of `container_id`; return whether one existed.

        Unknown and invalid ids are not errors: Stop and Remove arrive for
        containers that were rejected or never wrapped.
        """
        try:
            os.unlink(self._path(container_id))
        except (FileNotFoundError, InvalidContainerIdError):
            return False
        self._sync_directory()
        return True

    def ids(self) -> set[str]:
        """Return the container ids that have a record."""
        found = set()
        for name in os.listdir(self.state_dir):
            if name.endswith(_SUFFIX):
                container_id = name[: -len(_SUFFIX)]
                if _is_safe_id(container_id):
                    found.add(container_id)
        return found

    def reconcile(self, live_ids: Iterable[str]) -> list[str]:
        """Delete the records of containers not in `live_ids`; return their ids, sorted."""
        live = set(live_ids)
        removed = sorted(self.ids() - live)
        for container_id in removed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(container_id))
        if removed:
            self._sync_directory()
        return removed

    def _sync_directory(self) -> None:
        """Flush the directory entry changes (rename, unlink) to disk."""
        descriptor = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
