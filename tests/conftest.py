"""Shared fixtures for the whole test suite."""

import pytest

# Environment variables kubefence code reads; cleared so the developer's
# shell cannot change a test's outcome.
_OUR_ENVIRONMENT = ("KUBEFENCE_POLICY", "POD_NAMESPACE", "KUBEFENCE_LOG_LEVEL")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in _OUR_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
