"""`kubefence certs generate` and `kubefence certs ensure` as a user runs them."""

import argparse
import ipaddress
import os
import stat
import subprocess
import sys

import orjson
import pytest
from .conftest import NAMESPACE
from cryptography import x509

import kubefence.cli
from kubefence.certs import cli as certs_cli
from kubefence.certs import pki


def run_certs(argv: list[str]) -> int:
    """Parse and run a `certs` command line with only the certs commands registered."""
    parser = argparse.ArgumentParser(prog="kubefence")
    certs_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def log_events(captured: str) -> list[dict]:
    return [orjson.loads(line) for line in captured.splitlines() if line.startswith("{")]


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_cli_certs_listed_in_command_modules():
    assert "kubefence.certs.cli" in kubefence.cli.COMMAND_MODULES


def test_cli_register_adds_both_commands():
    parser = argparse.ArgumentParser()
    certs_cli.register(parser.add_subparsers(dest="command"))

    assert parser.parse_args(["certs", "ensure", "--service", "s", "--ca-secret", "a", "--tls-secret", "b"]).func is certs_cli.run_ensure
    assert parser.parse_args(["certs", "generate", "--out", "x"]).func is certs_cli.run_generate


def test_generate_writes_files_with_modes(tmp_path, capsys):
    out = tmp_path / "out"
    previous = os.umask(0)
    try:
        status = run_certs(["certs", "generate", "--out", str(out)])
    finally:
        os.umask(previous)

    assert status == 0
    assert sorted(os.listdir(out)) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert mode_of(out / "ca.key") == 0o600
    assert mode_of(out / "tls.key") == 0o600
    assert mode_of(out / "ca.crt") == 0o644
    assert mode_of(out / "tls.crt") == 0o644
    ca = pki.load_certificates((out / "ca.crt").read_bytes(), "ca")[0]
    leaf, _ = pki.load_pair((out / "tls.crt").read_bytes(), (out / "tls.key").read_bytes(), ca.not_valid_before_utc + pki.BACKDATE, "tls")
    assert pki.is_issued_by(leaf, ca)
    assert pki.dns_names_of(leaf) == ["localhost"]
    event = log_events(capsys.readouterr().err)[-1]
    assert event["event"] == "certs.generated"
    assert event["key_type"] == "ecdsa-p256"


def test_generate_names_and_key_type(tmp_path):
    out = tmp_path / "out"

    status = run_certs(["certs", "generate", "--out", str(out), "--dns", "a.example", "--dns", "b.example", "--ip", "10.0.0.1", "--key-type", "rsa-2048"])

    assert status == 0
    leaf = pki.load_certificates((out / "tls.crt").read_bytes(), "tls")[0]
    assert pki.dns_names_of(leaf) == ["a.example", "b.example"]
    addresses = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert addresses == [ipaddress.ip_address("10.0.0.1")]
    assert pki.key_type_of(leaf.public_key()) == "rsa-2048"


def test_generate_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tls.key").write_bytes(b"keep me")

    status = run_certs(["certs", "generate", "--out", str(out)])

    assert status == 1
    assert (out / "tls.key").read_bytes() == b"keep me"
    assert not (out / "ca.crt").exists()
    event = log_events(capsys.readouterr().err)[-1]
    assert event["event"] == "certs.output_exists"
    assert "pass --force to replace them" in event["error"]


def test_generate_refuses_symlink_at_key_path(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere"
    (out / "ca.key").symlink_to(target)

    assert run_certs(["certs", "generate", "--out", str(out)]) == 1
    assert not target.exists()


def test_generate_force_replaces_and_fixes_mode(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old_key = out / "tls.key"
    old_key.write_bytes(b"old")
    old_key.chmod(0o644)

    status = run_certs(["certs", "generate", "--out", str(out), "--force"])

    assert status == 0
    assert mode_of(old_key) == 0o600
    assert old_key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [name for name in os.listdir(out) if name.endswith(".tmp")] == []


def test_generate_invalid_ip(tmp_path, capsys):
    status = run_certs(["certs", "generate", "--out", str(tmp_path / "out"), "--ip", "300.1.1.1"])

    assert status == 2
    assert "--ip: invalid IP address '300.1.1.1'" in log_events(capsys.readouterr().err)[-1]["error"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--leaf-validity", "0s"], "--leaf-validity: invalid duration '0s'; expected more than zero"),
        (["--ca-validity", "0h"], "--ca-validity: invalid duration '0s'; expected more than zero"),
        (
            ["--ca-validity", "1h", "--leaf-validity", "8760h"],
            "--leaf-validity '8760h' is longer than --ca-validity '1h'; a serving certificate cannot outlive its CA",
        ),
        (["--dns", "bad name!"], "--dns: invalid DNS name 'bad name!'"),
        (["--dns", "a..b"], "--dns: invalid DNS name 'a..b'"),
        (["--dns=-a.example"], "--dns: invalid DNS name '-a.example'"),
        (["--dns", "a" * 64 + ".example"], "--dns: invalid DNS name 'aaaa"),
        (["--dns", "*"], "--dns: invalid DNS name '*'"),
        (["--dns", "127.0.0.1"], "--dns: '127.0.0.1' is an IP address, not a DNS name; pass it with --ip"),
        (["--dns", "::1"], "--dns: '::1' is an IP address, not a DNS name; pass it with --ip"),
    ],
    ids=["leaf-zero", "ca-zero", "leaf-outlives-ca", "dns-space", "dns-empty-label", "dns-hyphen", "dns-long-label",
         "dns-bare-wildcard", "dns-ipv4", "dns-ipv6"],
)
def test_generate_invalid_option_rejected(tmp_path, capsys, options, message):
    status = run_certs(["certs", "generate", "--out", str(tmp_path / "out"), *options])

    assert status == 2
    assert log_events(capsys.readouterr().err)[-1]["error"].startswith(message)
    assert not (tmp_path / "out").exists()


def test_generate_wildcard_and_equal_validity_accepted(tmp_path):
    status = run_certs(
        ["certs", "generate", "--out", str(tmp_path), "--dns", "*.example.com", "--ca-validity", "2h", "--leaf-validity", "2h"]
    )

    assert status == 0
    certificate = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["*.example.com"]


ENSURE_ARGS = ["certs", "ensure", "--service", "kubefence-webhook", "--ca-secret", "kubefence-ca", "--tls-secret", "kubefence-tls", "--webhook-config", "kubefence"]


def test_ensure_cli_runs_against_kubeconfig(kube_stub, kubeconfig, monkeypatch, capsys):
    monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)
    kube_stub.add_webhook_config("kubefence", ["pods.kubefence.dev"])

    status = run_certs([*ENSURE_ARGS, "--kubeconfig", kubeconfig, "--key-type", "rsa-2048", "--leaf-validity", "2160h"])

    assert status == 0
    tls = kube_stub.secret_data(NAMESPACE, "kubefence-tls")
    leaf = pki.load_certificates(tls["tls.crt"], "tls")[0]
    assert pki.key_type_of(leaf.public_key()) == "rsa-2048"
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 90
    events = [event["event"] for event in log_events(capsys.readouterr().err)]
    assert "certs.ensure" in events


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--renew-before", "30 days"], "--renew-before: invalid duration '30 days'"),
        (["--leaf-validity", "24h"], "--leaf-validity '24h' must be longer than --renew-before '720h'"),
        (["--namespace", "Bad_NS"], "--namespace: invalid namespace 'Bad_NS'"),
    ],
    ids=["duration", "validity-window", "namespace"],
)
def test_ensure_cli_invalid_options(kubeconfig, monkeypatch, capsys, extra, message):
    monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)

    status = run_certs([*ENSURE_ARGS, "--kubeconfig", kubeconfig, *extra])

    assert status == 2
    event = log_events(capsys.readouterr().err)[-1]
    assert event["event"] == "certs.invalid_options"
    assert message in event["error"]


def test_ensure_cli_needs_namespace(kubeconfig, capsys):
    status = run_certs([*ENSURE_ARGS, "--kubeconfig", kubeconfig])

    assert status == 2
    assert "pass --namespace or set POD_NAMESPACE" in log_events(capsys.readouterr().err)[-1]["error"]


def test_ensure_cli_api_failure_exit_status(kube_stub, tmp_path, capsys):
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(kube_stub.kubeconfig().replace("stub-token", "wrong"))

    status = run_certs([*ENSURE_ARGS, "--namespace", NAMESPACE, "--kubeconfig", str(path)])

    assert status == 1
    event = log_events(capsys.readouterr().err)[-1]
    assert event["event"] == "certs.ensure_failed"
    assert "HTTP 401" in event["error"]


def test_ensure_cli_missing_kubeconfig(tmp_path, capsys):
    status = run_certs([*ENSURE_ARGS, "--namespace", NAMESPACE, "--kubeconfig", str(tmp_path / "absent.yaml")])

    assert status == 1
    assert log_events(capsys.readouterr().err)[-1]["event"] == "certs.kubeconfig_failed"


def test_kubefence_command_runs_certs_subcommands(kube_stub, kubeconfig, tmp_path):
    """The installed entry point dispatches to both certs commands in a fresh process."""
    environment = {**os.environ, "POD_NAMESPACE": NAMESPACE}

    generated = subprocess.run(
        [sys.executable, "-m", "kubefence", "certs", "generate", "--out", str(tmp_path / "out")],
        capture_output=True, env=environment, timeout=120,
    )
    ensured = subprocess.run(
        [sys.executable, "-m", "kubefence", *ENSURE_ARGS, "--kubeconfig", kubeconfig],
        capture_output=True, env=environment, timeout=120,
    )

    assert generated.returncode == 0, generated.stderr.decode()
    assert mode_of(tmp_path / "out" / "tls.key") == 0o600
    assert ensured.returncode == 0, ensured.stderr.decode()
    assert (NAMESPACE, "kubefence-tls") in kube_stub.secrets
    events = [event["event"] for event in log_events(ensured.stderr.decode())]
    assert "certs.ensure" in events
