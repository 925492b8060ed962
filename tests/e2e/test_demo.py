"""`kubefence demo` run as its real command, as a newcomer would run it."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

DEMO_TIMEOUT_SECONDS = 120


def run_demo(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kubefence", "demo", *args],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT_SECONDS, env=env, stdin=subprocess.DEVNULL,
    )


def access_table(stdout):
    """Return {access: (with kubefence, without kubefence)} from the demo's table."""
    rows = {}
    for line in stdout.splitlines():
        for access in ("read /etc/hosts", "write /tmp/agent-notes", "read /srv/secret.txt", "write /etc/profile"):
            if line.startswith(access + " "):
                cells = [cell.strip() for cell in line[len(access):].split("  ") if cell.strip()]
                rows[access] = tuple(cells)
    return rows


def test_demo_sample_confined(container_host):
    completed = run_demo()

    assert completed.returncode == 0, completed.stdout + completed.stderr
    table = access_table(completed.stdout)
    assert table["read /etc/hosts"] == ("allowed", "allowed")
    assert table["write /tmp/agent-notes"] == ("allowed", "allowed")
    assert table["read /srv/secret.txt"] == ("denied (Permission denied)", "allowed")
    assert table["write /etc/profile"] == ("denied (Permission denied)", "allowed")
    assert '"/nono/nono", "wrap", "--profile", "default", "--", "/bin/sh"' in completed.stdout
    assert "PID 1: sh " in completed.stdout


def test_demo_fake_nono_reported_unconfined(container_host, tmp_path):
    fake = tmp_path / "nono"
    fake.write_text("#!/bin/sh\nshift 4\nexec \"$@\"\n")
    os.chmod(fake, 0o755)

    completed = run_demo("--nono", str(fake))

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "NOT CONFINED" in completed.stdout
    assert access_table(completed.stdout)["read /srv/secret.txt"] == ("allowed", "allowed")


def test_demo_missing_runc_clear_error(tmp_path):
    # A PATH without runc: the demo must stop with a message, not a traceback.
    empty = tmp_path / "bin"
    empty.mkdir()

    completed = run_demo(env={**os.environ, "PATH": str(empty)})

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr
    assert "runc" in completed.stderr
    assert completed.stderr.startswith("kubefence demo: cannot run containers here: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--runc", "/nonexistent/runc"], "runc not found: '/nonexistent/runc'", id="runc-path"),
        pytest.param(["--busybox", "/nonexistent/busybox"], "busybox not found: '/nonexistent/busybox'", id="busybox-path"),
        pytest.param(["--pod", "/nonexistent/pod.yaml"], "cannot read --pod '/nonexistent/pod.yaml'", id="pod-missing"),
        pytest.param(["--nono", "/nonexistent/nono"], "--nono '/nonexistent/nono' is not an executable file", id="nono-missing"),
    ],
)
def test_demo_bad_input_clear_error(container_host, args, message):
    completed = run_demo(*args)

    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert message in completed.stderr


def test_demo_not_a_pod_clear_error(container_host, tmp_path):
    manifest = tmp_path / "service.yaml"
    manifest.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n")

    completed = run_demo("--pod", str(manifest))

    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "kind 'Service' has no pod to review" in completed.stderr


def test_demo_rejected_pod_exit_code(container_host, tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: agents\n"
        "  annotations:\n    nono.sh/profile: --allow=/etc\n"
        "spec:\n  runtimeClassName: nono-runc\n  containers:\n    - name: c\n      image: busybox\n"
    )

    completed = run_demo("--pod", str(manifest))

    assert completed.returncode == 1
    assert "denied: " in completed.stdout
    assert "--allow=/etc" in completed.stdout


def test_demo_binary_pod_clear_error(container_host, tmp_path):
    manifest = tmp_path / "bin.yaml"
    manifest.write_bytes(b"\xff\xfe\x00bin")

    completed = run_demo("--pod", str(manifest))

    assert completed.returncode == 2
    assert completed.stderr == f"kubefence demo: --pod {str(manifest)!r} is not UTF-8 text (invalid byte at offset 0)\n"


def test_demo_yaml_error_one_line(container_host, tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("kind: Pod\nmetadata: [\n  a: }\n")

    completed = run_demo("--pod", str(manifest))

    assert completed.returncode == 2
    assert completed.stderr == (
        f"kubefence demo: invalid pod manifest {str(manifest)!r}: invalid YAML at line 3, column 6: "
        "expected the node content, but found '}'\n"
    )
