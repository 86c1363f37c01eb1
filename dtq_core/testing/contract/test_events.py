"""Job lifecycle events and per-minute outcome counts.

Every state change records an event in the same atomic step; each final
outcome and each retry is counted in its minute. Event ids are opaque: the
tests only page with them, never compare them.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from dtq_core import (
    CancelOutcome,
    Engine,
    ErrorInfo,
    Event,
    JobStatus,
    Lease,
    Outcome,
    Queue,
    Worker,
    open_engine,
)
from dtq_core.engine import EVENT_MESSAGE_CHARS, MinuteCounts
from dtq_core.testing import running, wait_for

MakeWorker = Callable[..., Worker]
#: Redis trims its stream by whole nodes (``MAXLEN ~``) of up to 100 entries.
_TRIM_SLACK = 100


def _story(engine: Engine, job_id: str) -> list[tuple[str, int, str | None]]:
    """What happened to one job: (event type, attempt, worker), oldest first."""
    return [(e.type.value, e.attempt, e.worker) for e in engine.events(limit=1000) if e.job_id == job_id]


def _errors_of(engine: Engine, job_id: str) -> list[tuple[str, str | None, str | None]]:
    return [
        (e.type.value, e.error_type, e.error_message) for e in engine.events(limit=1000) if e.job_id == job_id
    ]


def _take(engine: Engine, worker_id: str, lease_s: float = 30) -> Lease:
    """Fetch one job of test_only as ``worker_id``, waiting for it to be due."""
    leases = wait_for(
        lambda: engine.fetch(["test_only"], count=1, lease_s=lease_s, worker_id=worker_id).leases
    )
    return leases[0]  # type: ignore[no-any-return]


@pytest.fixture
def capped_engine(dtq_url: str, dtq_namespace: str) -> Iterator[Callable[[int], Engine]]:
    """``capped_engine(n)``: the test's engine with ``events_max=n``."""
    made: list[Engine] = []

    def make(events_max: int) -> Engine:
        engine = open_engine(dtq_url, namespace=dtq_namespace, events_max=events_max)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def _totals(history: list[MinuteCounts]) -> dict[str, dict[str, int]]:
    """Counts summed over ``history``, so that a test crossing a minute boundary still adds up."""
    summed: dict[str, dict[str, int]] = {}
    for minute in history:
        for plugin, by_status in minute.counts.items():
            into = summed.setdefault(plugin, {})
            for status, n in by_status.items():
                into[status] = into.get(status, 0) + n
    return summed


# --- event sequences ---------------------------------------------------------------


def test_a_succeeded_job_records_appended_started_succeeded(
    dtq_queue: Queue, dtq_engine: Engine, dtq_make_worker: MakeWorker
) -> None:
    before_ms = time.time() * 1000
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="ok")
    worker = dtq_make_worker(mode="thread")
    worker.get_jobs()
    me = worker.worker_id
    assert _story(dtq_engine, "ok") == [("appended", 0, None), ("started", 1, me), ("succeeded", 1, me)]
    events = dtq_engine.events()
    assert all(e.plugin == "test_only" and e.error_type is None for e in events)
    assert all(abs(e.time_ms - before_ms) < 60_000 for e in events)  # the engine's clock, in ms
    assert json.loads(json.dumps(events[-1].to_dict()))["type"] == "succeeded"


def test_a_retried_then_failed_job_records_each_attempt_and_its_error(
    dtq_queue: Queue, dtq_engine: Engine
) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="twice")
    first = _take(dtq_engine, "w1")
    retry = Outcome(JobStatus.SCHEDULED, error=ErrorInfo("RuntimeError", "first"), retry_in_s=0.05)
    assert dtq_engine.complete(first, retry, ttl_s=60)
    second = _take(dtq_engine, "w2")
    failure = Outcome(JobStatus.FAILED, error=ErrorInfo("ValueError", "second " + "x" * 1000))
    assert dtq_engine.complete(second, failure, ttl_s=60)
    assert _story(dtq_engine, "twice") == [
        ("appended", 0, None),
        ("started", 1, "w1"),
        ("retrying", 1, "w1"),
        ("started", 2, "w2"),
        ("failed", 2, "w2"),
    ]
    [retrying] = [e for e in dtq_engine.events() if e.type.value == "retrying"]
    assert (retrying.error_type, retrying.error_message, retrying.delay_ms) == ("RuntimeError", "first", 50)
    [failed] = [e for e in dtq_engine.events() if e.type.value == "failed"]
    assert failed.error_type == "ValueError" and failed.error_message is not None
    assert failed.error_message.startswith("second x") and len(failed.error_message) <= EVENT_MESSAGE_CHARS


def test_exhausted_retries_record_retrying_then_dead(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    dtq_queue.enqueue(
        "test_only", {"action": "fail", "message": "nope"}, id="doomed", max_retries=1, retry_backoff_s=0.01
    )
    with running(dtq_make_worker(mode="thread", poll_s=0.05)):
        wait_for(lambda: (j := dtq_queue.get("doomed")) is not None and j.status is JobStatus.DEAD)
    types = [(t, attempt) for t, attempt, _ in _story(dtq_queue.engine, "doomed")]
    assert types == [("appended", 0), ("started", 1), ("retrying", 1), ("started", 2), ("dead", 2)]
    errors = _errors_of(dtq_queue.engine, "doomed")
    assert errors[2][1:] == ("RuntimeError", "nope")
    assert errors[4][1] is not None and errors[4][2] is not None and "retries exhausted" in errors[4][2]


def test_cancelled_jobs_record_the_request_and_the_cancellation(dtq_queue: Queue, dtq_engine: Engine) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="queued", delay_s=60)
    assert dtq_queue.cancel("queued") is CancelOutcome.CANCELLED
    assert _story(dtq_engine, "queued") == [("scheduled", 0, None), ("cancelled", 0, None)]
    [scheduled] = [e for e in dtq_engine.events() if e.type.value == "scheduled"]
    assert scheduled.delay_ms is not None and 59_000 <= scheduled.delay_ms <= 60_000

    dtq_queue.enqueue("test_only", {"action": "echo"}, id="running")
    lease = _take(dtq_engine, "w")
    assert dtq_queue.cancel("running") is CancelOutcome.REQUESTED
    assert dtq_queue.cancel("running") is CancelOutcome.REQUESTED  # asked again: nothing new to record
    stopped = Outcome(JobStatus.CANCELLED, error=ErrorInfo("Cancelled", "stopped"))
    assert dtq_engine.complete(lease, stopped, ttl_s=60)
    assert _story(dtq_engine, "running") == [
        ("appended", 0, None),
        ("started", 1, "w"),
        ("cancel_requested", 1, "w"),
        ("cancelled", 1, "w"),
    ]
    assert _errors_of(dtq_engine, "running")[-1] == ("cancelled", "Cancelled", "stopped")


def test_lost_leases_record_lease_lost_then_requeued_or_dead(dtq_queue: Queue, dtq_engine: Engine) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="orphan")
    for worker_id in ("w1", "w2"):
        _take(dtq_engine, worker_id, lease_s=0.01)
        time.sleep(0.03)
        assert dtq_engine.recover("test_only", max_lost_leases=2, ttl_s=60) == 1
    assert _story(dtq_engine, "orphan") == [
        ("appended", 0, None),
        ("started", 1, "w1"),
        ("lease_lost", 1, "w1"),
        ("requeued", 1, "w1"),
        ("started", 2, "w2"),
        ("lease_lost", 2, "w2"),
        ("dead", 2, "w2"),
    ]
    errors = _errors_of(dtq_engine, "orphan")
    assert errors[2][1] == "LeaseLost" and errors[6][1] == "LeaseLost"
    assert errors[6][2] is not None and "lost its lease 2 times" in errors[6][2]

    dtq_queue.requeue("orphan")  # a dead job brought back, then handed back at shutdown
    lease = _take(dtq_engine, "w3")
    dtq_engine.release(lease, lost=False, max_lost_leases=2, ttl_s=60)
    assert _story(dtq_engine, "orphan")[7:] == [
        ("requeued", 0, None),
        ("started", 1, "w3"),
        ("requeued", 1, "w3"),
    ]


# --- reading events ------------------------------------------------------------------


def test_events_page_after_an_id(dtq_queue: Queue, dtq_engine: Engine) -> None:
    assert dtq_engine.events() == [] and dtq_engine.last_event_id() is None
    for i in range(5):
        dtq_queue.enqueue("test_only", {"action": "echo"}, id=f"p{i}")
    every = dtq_engine.events()
    assert [e.job_id for e in every] == [f"p{i}" for i in range(5)]
    assert len({e.id for e in every}) == 5
    first = dtq_engine.events(limit=2)
    assert first == every[:2]
    assert dtq_engine.events(after=first[-1].id, limit=2) == every[2:4]
    assert dtq_engine.events(after=every[3].id, limit=2) == every[4:]
    assert dtq_engine.events(after=every[-1].id) == []
    assert dtq_engine.last_event_id() == every[-1].id
    assert dtq_queue.events(after=every[0].id, limit=1) == every[1:2]
    with pytest.raises(ValueError):
        dtq_engine.events(after="not an event id")


def test_a_bulk_appends_events_are_one_per_job_and_page_anywhere(
    dtq_queue: Queue, dtq_engine: Engine
) -> None:
    """A bulk append records an event per job, in order, however the engine stores them
    (Redis puts many in one entry): pages of any size, cut anywhere, add up to them all."""
    queued = dtq_queue.enqueue_many("test_only", [{"action": "echo", "n": n} for n in range(230)])
    later = dtq_queue.enqueue_many("test_only", [{"action": "echo"}] * 3, delay_s=60)
    alone = dtq_queue.enqueue("test_only", {"action": "echo"}, id="alone")
    every = dtq_engine.events(limit=1000)
    assert [(e.type.value, e.job_id) for e in every] == [
        *(("appended", job.id) for job in queued),
        *(("scheduled", job.id) for job in later),
        ("appended", alone.id),
    ]
    assert len({e.id for e in every}) == len(every)
    assert {e.delay_ms for e in every[230:233]} == {60_000} and every[0].delay_ms is None
    for size in (1, 7, 100, 229):
        paged: list[Event] = []
        after = None
        while page := dtq_engine.events(after=after, limit=size):
            assert len(page) <= size
            paged += page
            after = page[-1].id
        assert paged == every
    assert dtq_engine.last_event_id() == every[-1].id
    assert dtq_engine.events(after=every[-1].id) == []
    assert dtq_engine.events(after=every[149].id, limit=2) == every[150:152]  # mid-way, on


def test_events_wait_for_one_appended_from_another_thread(dtq_queue: Queue, dtq_engine: Engine) -> None:
    started = time.monotonic()
    assert dtq_engine.events(block_s=0.2) == []
    assert time.monotonic() - started >= 0.15
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="before")
    now = dtq_engine.last_event_id()
    later = threading.Timer(0.3, lambda: dtq_queue.enqueue("test_only", {"action": "echo"}, id="later"))
    started = time.monotonic()
    later.start()
    try:
        seen: list[Event] = dtq_engine.events(after=now, block_s=10)
    finally:
        later.join()
    assert [e.job_id for e in seen] == ["later"]
    assert 0.2 <= time.monotonic() - started < 5


def test_events_max_caps_the_kept_events(
    dtq_url: str, dtq_namespace: str, capped_engine: Callable[[int], Engine]
) -> None:
    engine = capped_engine(10)
    queue = Queue(None, dtq_url, engine=engine, namespace=dtq_namespace)
    for i in range(200):
        queue.enqueue("test_only", {"action": "echo"}, id=f"j{i}")
    kept = engine.events(limit=1000)
    assert 10 <= len(kept) <= 10 + _TRIM_SLACK
    assert [e.job_id for e in kept] == [f"j{i}" for i in range(200 - len(kept), 200)]  # the newest
    assert engine.last_event_id() == kept[-1].id


def test_events_max_0_records_no_events_but_still_counts(
    dtq_url: str, dtq_namespace: str, capped_engine: Callable[[int], Engine]
) -> None:
    engine = capped_engine(0)
    queue = Queue(None, dtq_url, engine=engine, namespace=dtq_namespace)
    queue.enqueue("test_only", {"action": "echo"}, id="quiet")
    queue.enqueue("test_only", {"action": "echo"}, id="gone", delay_s=60)
    assert engine.complete(_take(engine, "w"), Outcome(JobStatus.SUCCEEDED, result_json="1"), ttl_s=60)
    queue.cancel("gone")
    assert engine.events() == [] and engine.last_event_id() is None
    assert _totals(engine.history(2)) == {"test_only": {"succeeded": 1, "cancelled": 1}}


# --- outcomes per minute -------------------------------------------------------------


def _outcomes(queue: Queue, engine: Engine) -> None:
    """Two successes, a retry, a failure, a dead job and a cancellation of test_only; one of elsewhere."""
    for i in range(5):
        queue.enqueue("test_only", {"action": "echo"}, id=f"o{i}")
    queue.enqueue("elsewhere", {}, id="away")
    queue.enqueue("test_only", {"action": "echo"}, id="o-cancelled", delay_s=60)
    error = ErrorInfo("RuntimeError", "boom")
    endings = [
        Outcome(JobStatus.SUCCEEDED, result_json="1"),
        Outcome(JobStatus.SUCCEEDED, result_json="2"),
        Outcome(JobStatus.SCHEDULED, error=error, retry_in_s=60),
        Outcome(JobStatus.FAILED, error=error),
        Outcome(JobStatus.DEAD, error=error),
    ]
    for ending in endings:
        assert engine.complete(_take(engine, "w"), ending, ttl_s=60)
    queue.cancel("o-cancelled")
    queue.cancel("away")


def test_history_counts_outcomes_per_minute_plugin_and_status(dtq_url: str, dtq_namespace: str) -> None:
    with Queue(["test_only", "elsewhere"], dtq_url, namespace=dtq_namespace) as queue:
        _outcomes(queue, queue.engine)
        history = queue.history(60)
        [current] = queue.history(1)
    assert len(history) == 60
    starts = [m.start.timestamp() for m in history]
    assert all(b - a == 60 for a, b in itertools.pairwise(starts))
    assert 0 <= time.time() - starts[-1] < 120  # the last is the current minute (or was, a moment ago)
    assert all(m.counts == {} for m in history[:-2])
    assert _totals(history[-2:]) == {
        "test_only": {"succeeded": 2, "retrying": 1, "failed": 1, "dead": 1, "cancelled": 1},
        "elsewhere": {"cancelled": 1},
    }
    assert current.start == history[-1].start or current.start.timestamp() == starts[-1] + 60


def test_queue_stats_carry_the_last_hours_outcomes_and_throughput(dtq_url: str, dtq_namespace: str) -> None:
    with Queue(["test_only", "elsewhere"], dtq_url, namespace=dtq_namespace) as queue:
        _outcomes(queue, queue.engine)
        stats = queue.stats()
    by_plugin = {q.plugin: q for q in stats.queues}
    mine = by_plugin["test_only"]
    assert (mine.succeeded, mine.failed, mine.dead) == (2, 1, 1)
    assert mine.throughput > 0  # five finished within the last five minutes
    away = by_plugin["elsewhere"]
    assert (away.succeeded, away.failed, away.dead) == (0, 0, 0) and away.throughput > 0
    assert {"succeeded", "failed", "dead", "throughput", "served"} <= set(mine.to_dict())
    assert stats.unserved() == ["test_only"]  # one retry scheduled, no live worker
