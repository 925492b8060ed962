"""Shared fixtures for the whole test suite."""

import pytest

# Environment variables kubefence code reads; cleared so the developer's
# shell cannot change a test's outcome.
_OUR_ENVIRONMENT = ("KUBEFENCE_POLICY", "POD_NAMESPACE", "KUBEFENCE_LOG_LEVEL")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in _OUR_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _restore_logging():
    """Undo `configure_logging` calls made in-process by a test.

    A command run in-process binds structlog to the test's captured stream,
    which pytest closes afterwards; a later test would then fail to log.
    """
    import logging

    import structlog

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
