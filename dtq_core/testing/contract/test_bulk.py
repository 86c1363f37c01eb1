"""Many jobs at once: bulk appends, prefetching workers, outcomes recorded in batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import attrs
import pytest

from dtq_core import (
    Appending,
    AppendOutcome,
    Completion,
    DuplicateJob,
    Engine,
    InvalidJob,
    JobStatus,
    Lease,
    Outcome,
    Queue,
    Recorded,
    ValidationError,
    Worker,
)
from dtq_core.job import Job, encode_payload, new_job_id


def _entry(job_id: str, text: str = "x", plugin: str = "test_only") -> Appending:
    job = Job(id=job_id, plugin=plugin, data={"action": "echo", "text": text})
    return Appending(job, encode_payload(job))


def test_append_many_answers_each_entry_in_order_and_dedupes_within_the_batch(dtq_engine: Engine) -> None:
    assert dtq_engine.append(_entry("old").job, _entry("old").payload) is AppendOutcome.CREATED
    entries = [_entry("a"), _entry("old"), _entry("old", "other"), _entry("b"), _entry("a"), _entry("a", "y")]
    outcomes = dtq_engine.append_many(entries)
    assert outcomes == [
        AppendOutcome.CREATED,
        AppendOutcome.EXISTS,
        AppendOutcome.CONFLICT,
        AppendOutcome.CREATED,
        AppendOutcome.EXISTS,
        AppendOutcome.CONFLICT,
    ]
    a, b = dtq_engine.get("a"), dtq_engine.get("b")
    assert a is not None and b is not None
    assert a.data == {"action": "echo", "text": "x"} and a.status is JobStatus.QUEUED
    assert dtq_engine.append_many([]) == []


def test_append_entry_appends_one_job_fresh_or_not_and_a_named_repeat_is_one_job(dtq_engine: Engine) -> None:
    """``fresh`` lets an engine skip the look for an id no job can have; a later sending of
    the same id without it still finds the job (a retry after a lost reply looks)."""
    job = Job(id=new_job_id(), plugin="test_only", data={"action": "echo"})
    fresh = Appending(job, encode_payload(job), fresh=True)
    assert dtq_engine.append_entry(fresh) is AppendOutcome.CREATED
    assert dtq_engine.append_entry(attrs.evolve(fresh, fresh=False)) is AppendOutcome.EXISTS
    other = Job(id=job.id, plugin="test_only", data={"action": "echo", "n": 1})
    assert dtq_engine.append_entry(Appending(other, encode_payload(other))) is AppendOutcome.CONFLICT
    stored = dtq_engine.get(job.id)
    assert stored is not None and stored.data == {"action": "echo"} and stored.status is JobStatus.QUEUED
    late = Job(id=new_job_id(), plugin="test_only", data={"action": "echo"})
    assert dtq_engine.append_entry(Appending(late, encode_payload(late), delay_s=60, fresh=True)) is (
        AppendOutcome.CREATED
    )
    scheduled = dtq_engine.get(late.id)
    assert scheduled is not None and scheduled.status is JobStatus.SCHEDULED


def test_enqueue_many_queues_every_job_in_order_with_options(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    jobs = dtq_queue.enqueue_many("test_only", ({"action": "echo", "n": n} for n in range(1200)), priority=3)
    assert len({job.id for job in jobs}) == 1200
    stored = dtq_queue.get(jobs[700].id)
    assert stored is not None and stored.status is JobStatus.QUEUED and stored.priority == 3
    assert stored.data == {"action": "echo", "n": 700}
    # Equal priorities are taken first in, first out, across the batch's script calls.
    first = dtq_queue.engine.fetch(["test_only"], count=600, lease_s=30, worker_id="w")
    assert [lease.job.data["n"] for lease in first.leases] == list(range(600))
    for lease in first.leases:
        dtq_queue.engine.release(lease, lost=False, max_lost_leases=3, ttl_s=60)
    done = dtq_make_worker(mode="thread", prefetch=50).get_jobs()
    assert sorted(job.id for job in done) == sorted(job.id for job in jobs)
    assert dtq_queue.result(jobs[-1].id, timeout=5) == {"action": "echo", "n": 1199}


def test_append_many_checks_every_job_before_appending_any(dtq_queue: Queue) -> None:
    good = {"id": "fine", "job": {"plugin": "test_only", "data": {"action": "echo"}}}
    bad = {"id": "bad", "job": {"plugin": "test_only", "data": {"action": "no-such-action"}}}
    with pytest.raises(ValidationError, match="job 1 of the batch"):
        dtq_queue.append_many([good, bad])
    with pytest.raises(InvalidJob, match="job 2 of the batch"):
        dtq_queue.append_many([good, good, {"job": {"plugin": "test_only", "data": [1]}}])
    assert dtq_queue.get("fine") is None


def test_append_many_schedules_delayed_jobs_and_reports_conflicts_after_appending_the_rest(
    dtq_queue: Queue,
) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="taken")
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    batch = [
        {
            "id": "soon",
            "job": {"plugin": "test_only", "data": {"action": "echo"}},
            "options": {"delay_s": 60},
        },
        {"id": "at", "job": {"plugin": "test_only", "data": {"action": "echo"}}, "options": {"eta": later}},
        {"id": "taken", "job": {"plugin": "test_only", "data": {"action": "echo", "other": 1}}},
        {"id": "plain", "job": {"plugin": "test_only", "data": {"action": "echo"}}},
    ]
    with pytest.raises(DuplicateJob, match="'taken'"):
        dtq_queue.append_many(batch)
    statuses = {job_id: getattr(dtq_queue.get(job_id), "status", None) for job_id in ("soon", "at", "plain")}
    assert statuses == {"soon": JobStatus.SCHEDULED, "at": JobStatus.SCHEDULED, "plain": JobStatus.QUEUED}
    again = dtq_queue.append_many(batch[:2] + batch[3:])  # a repeat appends nothing twice
    assert [job.status for job in again] == [JobStatus.SCHEDULED, JobStatus.SCHEDULED, JobStatus.QUEUED]


def test_a_prefetching_worker_runs_each_job_once_and_records_every_outcome(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    ok = dtq_queue.enqueue_many("test_only", ({"action": "echo", "n": n} for n in range(150)))
    failing = dtq_queue.enqueue("test_only", {"action": "fail", "message": "no"}, max_retries=0)
    done = dtq_make_worker(mode="thread", concurrency=3, prefetch=16).get_jobs()
    assert sorted(job.id for job in done) == sorted([job.id for job in ok] + [failing.id])
    for job in ok[::10]:
        stored = dtq_queue.get(job.id)
        assert stored is not None and stored.status is JobStatus.SUCCEEDED and stored.attempts == 1
    failed = dtq_queue.get(failing.id)
    assert failed is not None and failed.status in (JobStatus.FAILED, JobStatus.DEAD)
    assert dtq_queue.stats().queues[0].running == 0


def test_complete_and_fetch_with_a_wait_records_first_then_leases_a_job_appended_meanwhile(
    dtq_engine: Engine,
) -> None:
    # A worker whose queue ran dry waits for the next job in the call that records its
    # last outcome; the outcome must be recorded before the wait, not after it.
    dtq_engine.append_many([_entry("one")])
    # Leased as an idle worker leases it (woken by the append, whose wake-up that uses up).
    [lease] = dtq_engine.wait_and_fetch(["test_only"], 1.0, count=5, lease_s=30, worker_id="w").leases
    seen: dict[str, Job | None] = {}

    def append_later() -> None:
        time.sleep(0.3)
        seen["one"] = dtq_engine.get("one")
        dtq_engine.append_many([_entry("later")])

    appender = threading.Thread(target=append_later)
    appender.start()
    stored, batch = dtq_engine.complete_and_fetch(
        [Completion(lease, Outcome(JobStatus.SUCCEEDED, result_json='"ok"'), 60)],
        ["test_only"],
        count=5,
        lease_s=30,
        worker_id="w",
        wait_s=4.0,
    )
    appender.join()
    assert stored == [Recorded.STORED]
    one = seen["one"]
    assert one is not None and one.status is JobStatus.SUCCEEDED  # recorded while the call still waited
    # Fetched after the wait, however the engine waits (a wake-up, or the whole wait_s).
    assert [lease.job.id for lease in batch.leases] == ["later"]


def test_complete_and_fetch_records_outcomes_then_leases_the_next_jobs(dtq_engine: Engine) -> None:
    dtq_engine.append_many([_entry("one"), _entry("two"), _entry("three")])
    first = dtq_engine.fetch(["test_only"], count=2, lease_s=30, worker_id="w").leases
    assert [lease.job.id for lease in first] == ["one", "two"]
    done = Outcome(JobStatus.SUCCEEDED, result_json='"ok"')
    stale = Lease(first[1].job, first[1].token + "-stale")
    stored, batch = dtq_engine.complete_and_fetch(
        [Completion(first[0], done, 60), Completion(stale, done, 60)],
        ["test_only"],
        count=5,
        lease_s=30,
        worker_id="w",
    )
    assert stored == [Recorded.STORED, Recorded.REFUSED]  # a completion without the lease's token is refused
    assert [lease.job.id for lease in batch.leases] == ["three"]
    one, two = dtq_engine.get("one"), dtq_engine.get("two")
    assert one is not None and one.status is JobStatus.SUCCEEDED and one.result == "ok"
    assert two is not None and two.status is JobStatus.RUNNING
    # Repeating a recorded completion (a retry after a lost reply) is answered as recorded.
    assert dtq_engine.complete_many([Completion(first[0], done, 60)]) == [Recorded.STORED]
    stored, batch = dtq_engine.complete_and_fetch([], ["test_only"], count=5, lease_s=30, worker_id="w")
    assert stored == [] and batch.leases == []


def test_a_fetch_says_whether_it_left_jobs_queued_if_it_says_at_all(
    dtq_queue: Queue, dtq_engine: Engine
) -> None:
    # Batch.more is optional (None: the engine does not say); when given it must be right,
    # or a worker would wait for a next job while one is queued.
    dtq_queue.enqueue_many("test_only", [{"action": "echo", "n": n} for n in range(2)])
    first = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w")
    last = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w")
    assert len(first.leases) == len(last.leases) == 1
    assert (first.more, last.more) in ((True, False), (None, None))
