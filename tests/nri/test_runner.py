"""Pieces of the asyncio shell that can be tested without a socket."""

import threading

import pytest

from kubefence.nri.runner import Backoff, DeferredWork, RateLimitedLog


class RecordingLog:
    def __init__(self):
        self.records = []

    def warning(self, event, **fields):
        self.records.append((event, fields))


def test_backoff_first_retry_under_one_second():
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays[0] < 1.0
    assert delays == sorted(delays)
    assert max(delays) == 5.0


def test_backoff_reset_starts_over():
    backoff = Backoff()
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.25


def test_rate_limited_log_counts_skipped_repeats():
    now = [0.0]
    log = RecordingLog()
    limited = RateLimitedLog(log, interval=30, clock=lambda: now[0])
    for second in range(0, 61, 1):
        now[0] = float(second)
        limited.warning("cannot connect", socket="/s")
    assert [fields["repeats_not_logged"] for _, fields in log.records] == [0, 29, 29]


def test_rate_limited_log_reset_logs_again():
    log = RecordingLog()
    limited = RateLimitedLog(log, clock=lambda: 5.0)
    limited.warning("x")
    limited.reset("x")
    limited.warning("x")
    assert len(log.records) == 2


def test_deferred_work_runs_in_order():
    done = []
    work = DeferredWork(RecordingLog())
    for number in range(50):
        work(lambda number=number: done.append(number))
    work.close()
    assert done == list(range(50))


def hold_worker(work):
    """Occupy the worker until the returned event is set, so the queue can be filled first."""
    started, gate = threading.Event(), threading.Event()

    def hold():
        started.set()
        gate.wait()

    work(hold)
    started.wait()
    return gate


def test_deferred_work_coalesces_same_key():
    done = []
    work = DeferredWork(RecordingLog())
    gate = hold_worker(work)
    work(lambda: done.append("write a"), key="a")
    work(lambda: done.append("write b"), key="b")
    work(lambda: done.append("remove a"), key="a")
    gate.set()
    work.close()
    assert done == ["remove a", "write b"]


def test_deferred_work_bounded_queue_drops_and_logs():
    log = RecordingLog()
    work = DeferredWork(log, max_pending=3)
    gate = hold_worker(work)
    done = []
    for number in range(6):
        work(lambda number=number: done.append(number))
    gate.set()
    work.close()
    assert len(done) == 3
    assert work.dropped == 3
    assert log.records[0][0] == "deferred work queue full; dropping work"


def test_deferred_work_failure_logged_worker_survives():
    log = RecordingLog()
    done = []
    work = DeferredWork(log)
    work(lambda: 1 / 0)
    work(lambda: done.append("after"))
    work.close()
    assert done == ["after"]
    assert log.records[0][0] == "deferred plugin work failed"
    assert "ZeroDivisionError" in log.records[0][1]["error"]


@pytest.mark.parametrize("interval", [0.0], ids=["zero-interval"])
def test_rate_limited_log_zero_interval_logs_all(interval):
    log = RecordingLog()
    limited = RateLimitedLog(log, interval=interval, clock=lambda: 1.0)
    limited.warning("x")
    limited.warning("x")
    assert len(log.records) == 2
