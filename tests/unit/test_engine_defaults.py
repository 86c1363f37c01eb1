"""The Engine contract's optional methods: their defaults refuse clearly instead of pretending."""

from __future__ import annotations

import threading
import time

import pytest

from dtq_core import Engine, JobStatus, NotSupported
from dtq_core.engines.memory import MemoryEngine


def test_browse_and_delete_defaults_say_the_engine_does_not_support_them() -> None:
    engine = MemoryEngine()
    with pytest.raises(NotSupported, match="MemoryEngine engine cannot list queued jobs"):
        Engine.browse(engine, JobStatus.QUEUED, "test_only")
    with pytest.raises(NotSupported, match="MemoryEngine engine cannot delete one job"):
        Engine.delete(engine, "job-1")


def test_the_memory_engine_ends_an_idle_wait_when_woken() -> None:
    engine = MemoryEngine()
    ended: list[float] = []

    def wait() -> None:
        batch = engine.wait_and_fetch(["test_only"], 10.0, count=1, lease_s=30, worker_id="w")
        assert batch.leases == []
        ended.append(time.monotonic())

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)  # waiting
    woken = time.monotonic()
    engine.wake("w")
    thread.join(10)
    assert ended and ended[0] - woken < 2.0


def test_the_memory_engine_keeps_a_wake_up_that_comes_before_the_wait() -> None:
    engine = MemoryEngine()
    engine.wake("w")  # asked to stop before it reached its wait
    started = time.monotonic()
    assert engine.wait_and_fetch(["test_only"], 10.0, count=1, lease_s=30, worker_id="w").leases == []
    assert time.monotonic() - started < 2.0
    started = time.monotonic()  # taken by that wait: the next one waits its time
    engine.wait_and_fetch(["test_only"], 0.3, count=1, lease_s=30, worker_id="w")
    assert time.monotonic() - started >= 0.25
