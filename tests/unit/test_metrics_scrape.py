"""A scrape of a worker's metrics when its engine hangs or fails: the queue depths are left
out in time, and the worker's own metrics still come (a hung Redis held a scrape about
40 s, past Prometheus's 10 s, and took them all down with it)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import cast

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from dtq_core import Engine, Queue
from dtq_core.engine import Stats
from dtq_core.metrics import QueueDepths


class _Held:
    """An engine whose stats wait until released, as a hung server's would; then read."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.released = threading.Event()
        self.reads = 0

    def stats(self) -> Stats:
        self.reads += 1
        self.released.wait(30)
        return self.engine.stats()


class _Unsupported:
    def stats(self) -> Stats:
        raise NotImplementedError("no stats here")


def _scrape(depths: object) -> tuple[str, float]:
    registry = CollectorRegistry()
    registry.register(cast(QueueDepths, depths))
    Gauge("dtq_worker_concurrency", "Jobs this worker runs at once.", registry=registry).set(2)
    started = time.monotonic()
    text = generate_latest(registry).decode()
    return text, time.monotonic() - started


def test_a_hung_engine_leaves_the_queue_depths_out_of_the_scrape_in_time() -> None:
    with Queue(["test_only"], f"memory://{uuid.uuid4().hex}") as queue:
        queue.enqueue("test_only", {"action": "echo"})
        held = _Held(queue.engine)
        depths = QueueDepths(cast(Engine, held), budget_s=0.3)
        text, took = _scrape(depths)
        assert "dtq_worker_concurrency 2.0" in text and "dtq_queue_jobs" not in text
        assert took < 3.0  # the budget, not the engine's hang
        _scrape(depths)  # the read still out is waited on again, not started anew
        assert held.reads == 1
        held.released.set()
        time.sleep(0.1)
        text, _took = _scrape(depths)  # a fresh read, now answered
        assert 'dtq_queue_jobs{plugin="test_only",state="waiting"} 1.0' in text
        assert held.reads == 2


def test_an_engine_that_cannot_give_stats_leaves_the_rest_of_the_scrape() -> None:
    text, _took = _scrape(QueueDepths(cast(Engine, _Unsupported())))
    assert "dtq_worker_concurrency 2.0" in text and "dtq_queue_jobs" not in text
