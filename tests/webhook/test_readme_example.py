"""The README's webhook example, run as written from a checkout: generate the pair, then serve with it."""

import shlex
import subprocess
import sys
from pathlib import Path

from .webhook_support import TlsMaterial, WebhookProcess

ROOT = Path(__file__).resolve().parent.parent.parent


def readme_webhook_commands() -> list[list[str]]:
    """Return the commands of the first sh block in the README's Webhook section."""
    section = (ROOT / "README.md").read_text().split("\n## Webhook\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_readme_webhook_example_serves(tmp_path):
    generate, serve = readme_webhook_commands()
    assert generate[:3] == ["kubefence", "certs", "generate"]
    assert serve[:2] == ["kubefence", "webhook"]

    completed = subprocess.run(
        [sys.executable, "-m", "kubefence", *generate[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr

    # The webhook child runs in the test's working directory, so relative
    # paths are resolved here: the policy from the checkout, tls/ from tmp_path.
    args = []
    for arg in serve[2:]:
        if arg.startswith("tls/"):
            arg = str(tmp_path / arg)
        elif not arg.startswith("-"):
            assert (ROOT / arg).is_file(), f"{arg} does not exist in the checkout"
            arg = str(ROOT / arg)
        args.append(arg)
    tls = TlsMaterial(tmp_path / "tls" / "ca.crt", tmp_path / "tls" / "tls.crt", tmp_path / "tls" / "tls.key")
    server = WebhookProcess(args, tmp_path / "stderr.jsonl", tls)
    try:
        assert server.client.get("/readyz").status_code == 200
    finally:
        assert server.stop() == 0


def test_readme_tls_directory_ignored():
    completed = subprocess.run(
        ["git", "check-ignore", "--no-index", "tls/tls.key"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert completed.returncode == 0
    assert completed.stdout.strip() == "tls/tls.key"


def test_readme_plugin_index_quoted():
    assert 'plugin_index = "90"' in (ROOT / "README.md").read_text()
