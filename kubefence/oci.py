"""Run real containers with runc on a busybox root filesystem.

`kubefence demo` and the end-to-end tests build a bundle (a root file
system plus the OCI `config.json` that `runc spec` writes), change the
process and mounts the way a runtime does after NRI, and run it with
`runc run` as root. Each run gets its own container id, and the container
is deleted afterwards, also when the run fails or times out.

The image is busybox in /bin plus the host's /usr mounted read-only, which
is like a Debian-based image such as python:3.12-slim. The nono stand-in
is a Python script, so it needs an interpreter and its shared libraries.

Only the standard library is imported here.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

# Busybox applets the tests' shell commands use.
BUSYBOX_APPLETS = (
    "sh", "cat", "echo", "tr", "id", "ls", "touch", "mkdir", "env", "head",
    "printf", "sleep", "true", "false", "test", "grep", "pwd", "stat", "rm",
)

# A file outside every profile's grants, for the read test.
SECRET_PATH = "/srv/secret.txt"
SECRET_TEXT = "secret-4b1d"

# Bounds for one runc call. The containers in the tests finish in well
# under a second.
RUN_TIMEOUT_SECONDS = 60
CLEANUP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class ContainerResult:
    """Exit code and output of one container run."""

    container_id: str
    exit_code: int
    stdout: str
    stderr: str


def build_rootfs(rootfs: Path, busybox: str) -> None:
    """Create a busybox root filesystem with the files the demo and the tests read and write."""
    for name in ("bin", "etc", "proc", "dev", "sys", "usr", "srv", "root", "workspace"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)

    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    # The host's /usr is mounted at /usr: its loader and libraries are found
    # through these links, as in a merged-/usr Debian image.
    (rootfs / "lib").symlink_to("usr/lib")
    (rootfs / "lib64").symlink_to("usr/lib64")

    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (rootfs / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (rootfs / SECRET_PATH.lstrip("/")).write_text(SECRET_TEXT + "\n")


def python_runtime_mounts() -> list[dict]:
    """Return read-only bind mounts that make this process's Python interpreter run in the container."""
    sources = ["/usr"]
    prefix = os.path.realpath(sys.base_prefix)
    if prefix != "/usr" and not prefix.startswith("/usr/"):
        sources.append(prefix)
    return [bind_mount(source, source) for source in sources]


def python_interpreter() -> str:
    """Return the path of the base interpreter (not the virtual environment's link)."""
    candidate = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if candidate.is_file():
        return str(candidate)
    return os.path.realpath(sys.executable)


def install_nono_standin(host_dir: Path, standin: Path) -> Path:
    """Fill `host_dir` with the Python nono stand-in and nono_py, root-owned and 0755.

    `standin` is the stand-in's source file. It runs with this process's
    base interpreter, which `python_runtime_mounts` makes visible in the
    container.
    """
    import nono_py

    prepare_host_dir(host_dir)
    binary = host_dir / "nono"
    binary.write_text(f"#!{python_interpreter()} -I\n{standin.read_text()}")
    os.chmod(binary, 0o755)

    library = host_dir / "lib" / "nono_py"
    shutil.copytree(Path(nono_py.__file__).parent, library, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [host_dir / "lib", *library.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() or path.suffix == ".so" else 0o644)
    return binary


def install_nono_binary(host_dir: Path, nono: Path) -> Path:
    """Fill `host_dir` with a copy of a real nono binary, root-owned and 0755."""
    prepare_host_dir(host_dir)
    binary = host_dir / "nono"
    shutil.copyfile(nono, binary)
    os.chmod(binary, 0o755)
    return binary


def prepare_host_dir(host_dir: Path) -> None:
    host_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(host_dir, 0o755)


def bind_mount(source: str, destination: str, read_only: bool = True) -> dict:
    """Return an OCI bind mount."""
    options = ["rbind", "ro" if read_only else "rw", "nosuid", "nodev"]
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def missing_requirement(busybox: str = "busybox", runc: str = "runc") -> str | None:
    """Return why confined containers cannot run on this machine, or None when they can.

    `busybox` and `runc` are command names looked up on PATH, or paths.
    """
    if os.geteuid() != 0:
        return "root is needed: runc runs the containers as root (run as root or with sudo)"
    for name, value, package in (("runc", runc, "runc"), ("busybox", busybox, "busybox-static")):
        if shutil.which(value) is not None:
            continue
        if os.sep in value and os.path.isfile(value):
            return f"{name} is not executable: {value!r} (chmod +x it, or pass another file)"
        return f"{name} not found: {value!r} (Debian and Ubuntu: apt-get install {package})"
    try:
        import nono_py
    except ImportError:
        return "nono-py is not installed (pip install nono-py, or pip install -e '.[test]' in a checkout)"
    try:
        nono_py.detect_abi()
    except RuntimeError as error:
        return f"Landlock is not available on this kernel: {error}"
    return None


class Runc:
    """runc with a private state directory, so parallel runs never meet."""

    def __init__(self, state_dir: Path, binary: str = "runc"):
        self.state_dir = state_dir
        self.binary = binary
        state_dir.mkdir(parents=True, exist_ok=True)

    def base_spec(self, bundle: Path) -> dict:
        """Return the config `runc spec` writes, made non-interactive with a writable root.

        The root filesystem stays writable so that a write to /etc inside a
        sandboxed container fails because of Landlock (EACCES), not because
        of a read-only mount (EROFS).
        """
        config = bundle / "config.json"
        config.unlink(missing_ok=True)
        subprocess.run(
            [self.binary, "spec", "--bundle", str(bundle)],
            check=True, capture_output=True, timeout=CLEANUP_TIMEOUT_SECONDS,
        )
        spec = json.loads(config.read_text())
        spec["process"]["terminal"] = False
        spec["root"]["readonly"] = False
        return spec

    def run(self, bundle: Path, spec: dict, timeout: float = RUN_TIMEOUT_SECONDS) -> ContainerResult:
        """Run the container to its end and return its exit code and output."""
        (bundle / "config.json").write_text(json.dumps(spec, indent=2))
        container_id = f"kubefence-e2e-{uuid.uuid4().hex[:12]}"
        command = [self.binary, "--root", str(self.state_dir), "run", "--bundle", str(bundle), container_id]
        try:
            completed = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            )
        finally:
            self.delete(container_id)
        return ContainerResult(container_id, completed.returncode, completed.stdout, completed.stderr)

    def delete(self, container_id: str) -> None:
        """Remove the container whatever its state; a container that never started is fine."""
        subprocess.run(
            [self.binary, "--root", str(self.state_dir), "delete", "--force", container_id],
            capture_output=True, timeout=CLEANUP_TIMEOUT_SECONDS,
        )

    def list_ids(self) -> list[str]:
        completed = subprocess.run(
            [self.binary, "--root", str(self.state_dir), "list", "--quiet"],
            capture_output=True, text=True, check=True, timeout=CLEANUP_TIMEOUT_SECONDS,
        )
        return completed.stdout.split()


def set_process(spec: dict, args: list[str], env: list[str] | None = None, cwd: str | None = None) -> None:
    """Set the process args, and env and working directory when given."""
    spec["process"]["args"] = list(args)
    if env is not None:
        spec["process"]["env"] = list(env)
    if cwd is not None:
        spec["process"]["cwd"] = cwd
