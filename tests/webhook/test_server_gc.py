"""The webhook's garbage-collector tuning, checked in a fresh interpreter.

`tune_garbage_collector` changes process-wide state, so it runs in a child
Python process and not in the test process.
"""

import json
import subprocess
import sys

from kubefence.webhook.server import GC_FIRST_GENERATION_THRESHOLD

_PROBE = """
import gc, json
from kubefence.webhook.server import tune_garbage_collector
before = gc.get_threshold()
tune_garbage_collector()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def _run_probe() -> dict:
    completed = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_tune_garbage_collector_freezes_startup_objects():
    result = _run_probe()

    # The imports alone leave thousands of tracked objects to freeze.
    assert result["frozen"] > 1000


def test_tune_garbage_collector_raises_first_threshold_only():
    result = _run_probe()

    assert result["after"][0] == GC_FIRST_GENERATION_THRESHOLD
    assert result["after"][0] > result["before"][0]
    assert result["after"][1:] == result["before"][1:]
