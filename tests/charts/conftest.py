"""Render helpers for the chart tests: the real Helm engine (helm-python-sdk), offline."""

from pathlib import Path

import pytest
import yaml
from helm_python import Chart

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "kubefence"
RELEASE = "kf"
NAMESPACE = "kubefence-system"


class Rendered:
    """The objects of one render, addressable by kind and name."""

    def __init__(self, manifests: dict[str, str]):
        self.notes = ""
        self.objects: list[dict] = []
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                self.notes = text
                continue
            for document in yaml.safe_load_all(text):
                if document:
                    self.objects.append(document)

    def of_kind(self, kind: str) -> list[dict]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict:
        matches = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"].endswith(name_suffix)]
        assert len(matches) == 1, f"expected one {kind} named *{name_suffix}, got {[m['metadata']['name'] for m in matches]}"
        return matches[0]


@pytest.fixture(scope="session")
def chart():
    """The chart, loaded once: loading is read-only and the handle is thread-safe."""
    with Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart):
    def _render(values: dict | None = None, namespace: str = NAMESPACE) -> Rendered:
        return Rendered(chart.render(values or {}, name=RELEASE, namespace=namespace))

    return _render
