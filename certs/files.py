"""Write certificate material to a directory: keys with mode 0600, certificates 0644."""

import os
from pathlib import Path

KEY_MODE = 0o600
CERT_MODE = 0o644


class OutputExistsError(FileExistsError):
    """A file that `write_files` would replace exists and overwriting was not allowed."""


def write_files(directory: str | os.PathLike, files: dict[str, tuple[bytes, int]], *, force: bool = False) -> list[Path]:
    """Write each `name: (content, mode)` into `directory` and return the paths written.

    Every file is created with its final mode by os.open, so a key is never
    readable by others, not even for a moment. Without `force`, nothing is
    written when any of the files exists. With `force`, each file is first
    written to a new temporary name and then renamed over the old one, which
    also replaces the mode of an existing file.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    paths = {name: target / name for name in files}
    if not force:
        existing = [str(path) for path in paths.values() if path.exists() or path.is_symlink()]
        if existing:
            raise OutputExistsError(f"not overwriting existing {', '.join(existing)}; pass --force to replace them")
    written = []
    for name, (content, mode) in files.items():
        path = paths[name]
        if force:
            temporary = target / f".{name}.{os.getpid()}.tmp"
            _create(temporary, content, mode)
            os.replace(temporary, path)
        else:
            _create(path, content, mode)
        written.append(path)
    return written


def _create(path: Path, content: bytes, mode: int) -> None:
    # O_EXCL also fails on a symlink planted at the path, so it is never followed.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            descriptor = -1
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        if descriptor >= 0:
            os.close(descriptor)
        path.unlink(missing_ok=True)
        raise
