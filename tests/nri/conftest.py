"""Fixtures for the NRI tests."""

import io

import pytest

from kubefence.common.logs import configure_logging


@pytest.fixture(autouse=True)
def _log_to_memory():
    """Send in-process log lines to a fresh buffer.

    Logging is configured globally, and another test may have left it
    writing to a capture stream that pytest has closed since.
    """
    configure_logging("debug", stream=io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True))
    yield
