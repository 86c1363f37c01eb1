"""The worker and the dtq_engine's lease operations, in one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from dtq_core import (
    AppendOutcome,
    Completion,
    Engine,
    ErrorInfo,
    Job,
    JobStatus,
    Lease,
    Outcome,
    Queue,
    Recorded,
    ReleaseOutcome,
    Worker,
)
from dtq_core.job import encode_payload


def test_failing_plugin_marks_the_job_failed_and_the_worker_carries_on(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    dtq_queue.enqueue("test_only", {"action": "fail", "message": "kaput"}, id="bad")
    dtq_queue.enqueue("test_only", {"action": "duplicate_text", "text": "ok"}, id="good")
    done = {job.id: job for job in dtq_make_worker().get_jobs()}
    assert done["bad"].status is JobStatus.FAILED
    assert done["good"].result == "okok"
    stored = dtq_queue.get("bad")
    assert stored is not None and stored.error is not None
    assert (stored.status, stored.error.type, stored.error.message) == (
        JobStatus.FAILED,
        "RuntimeError",
        "kaput",
    )
    assert "Traceback" in stored.error.traceback and "_fail" in stored.error.traceback


def test_echo_returns_the_data_as_result(dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]) -> None:
    data = {"action": "echo", "nested": {"list": [1, 2.5, None, True, "é"]}}
    dtq_queue.enqueue("test_only", data, id="e")
    dtq_make_worker().get_jobs()
    assert dtq_queue.result("e", timeout=5) == data


def test_worker_only_takes_jobs_of_plugins_it_serves(
    dtq_url: str, dtq_namespace: str, dtq_make_worker: Callable[..., Worker]
) -> None:
    with Queue(["test_only", "elsewhere"], dtq_url, namespace=dtq_namespace) as dtq_queue:
        dtq_queue.enqueue("elsewhere", {"x": 1}, id="foreign")
        dtq_queue.enqueue("test_only", {"action": "echo"}, id="mine")
        assert [job.id for job in dtq_make_worker().get_jobs()] == ["mine"]
        foreign = dtq_queue.get("foreign")
        assert foreign is not None and foreign.status is JobStatus.QUEUED


def test_worker_refuses_to_start_when_a_named_plugin_does_not_load(dtq_url: str, dtq_namespace: str) -> None:
    with pytest.raises(Exception) as caught:
        Worker(["test_only", "missing_plugin"], dtq_url, namespace=dtq_namespace)
    assert "no plugin named 'missing_plugin' is installed" in str(caught.value)


def test_completion_with_a_lost_lease_is_rejected(dtq_queue: Queue, dtq_engine: Engine) -> None:
    """A stale worker cannot overwrite the result of the job's new owner (fencing)."""
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="contested")
    [stale] = dtq_engine.fetch(["test_only"], count=1, lease_s=0.05, worker_id="stale").leases
    time.sleep(0.1)
    assert dtq_engine.recover("test_only", max_lost_leases=3, ttl_s=60) == 1
    [owner] = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="owner").leases
    assert owner.token != stale.token
    assert dtq_engine.renew([stale], 30).lost == ["contested"]
    assert not dtq_engine.complete(stale, Outcome(JobStatus.SUCCEEDED, result_json='"stale"'), ttl_s=60)
    assert dtq_engine.complete(owner, Outcome(JobStatus.SUCCEEDED, result_json='"owner"'), ttl_s=60)
    assert not dtq_engine.complete(stale, Outcome(JobStatus.SUCCEEDED, result_json='"stale"'), ttl_s=60)
    final = dtq_queue.get("contested")
    assert final is not None
    assert (final.result, final.attempts, final.lost_leases) == ("owner", 2, 1)


def test_a_requeued_job_leased_again_by_the_same_worker_fences_off_the_stale_attempt(
    dtq_queue: Queue, dtq_engine: Engine
) -> None:
    """A requeue starts the attempts at 0 again: the same worker's next delivery must still
    get a token its stalled first delivery did not have, or the stale outcome is taken."""
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="again")
    [stale] = dtq_engine.fetch(["test_only"], count=1, lease_s=0.05, worker_id="w").leases
    time.sleep(0.1)  # the worker stalls past its lease; the job ends dead
    assert dtq_engine.recover("test_only", max_lost_leases=1, ttl_s=60) == 1
    dtq_queue.requeue("again")
    [fresh] = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
    assert fresh.job.attempts == stale.job.attempts == 1
    assert fresh.token != stale.token
    assert dtq_engine.renew([stale], 30).lost == ["again"]
    assert not dtq_engine.complete(stale, Outcome(JobStatus.SUCCEEDED, result_json='"stale"'), ttl_s=60)
    assert dtq_engine.complete(fresh, Outcome(JobStatus.SUCCEEDED, result_json='"fresh"'), ttl_s=60)
    assert dtq_queue.result("again", timeout=1) == "fresh"


def test_an_id_appended_again_after_its_record_expired_fences_off_the_first_job_s_attempt(
    dtq_queue: Queue, dtq_engine: Engine
) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="reused")
    [stale] = dtq_engine.fetch(["test_only"], count=1, lease_s=0.05, worker_id="w").leases
    time.sleep(0.1)
    assert dtq_engine.recover("test_only", max_lost_leases=3, ttl_s=60) == 1
    [other] = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="other").leases
    assert dtq_engine.complete(other, Outcome(JobStatus.SUCCEEDED, result_json="1"), ttl_s=1)
    time.sleep(1.2)  # the succeeded record expires: the id is free again
    assert dtq_engine.append(*_job_and_payload("reused")) is AppendOutcome.CREATED
    [fresh] = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
    assert fresh.job.attempts == stale.job.attempts == 1
    assert fresh.token != stale.token
    assert not dtq_engine.complete(stale, Outcome(JobStatus.FAILED), ttl_s=60)
    running = dtq_queue.get("reused")
    assert running is not None and running.status is JobStatus.RUNNING


def test_a_job_handed_back_unstarted_keeps_its_retries_and_each_delivery_its_own_token(
    dtq_queue: Queue, dtq_engine: Engine
) -> None:
    """A prefetched job a stopping worker hands back was never attempted: shutdowns must
    not use up its retries, yet a stale holder of an earlier delivery stays fenced off."""
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="returned", max_retries=0)
    tokens = []
    for _ in range(3):
        [lease] = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
        assert lease.job.attempts == 1
        tokens.append(lease.token)
        assert dtq_engine.hand_back(lease, max_lost_leases=3, ttl_s=60) is ReleaseOutcome.REQUEUED
        assert dtq_engine.hand_back(lease, max_lost_leases=3, ttl_s=60) is ReleaseOutcome.NOT_HELD
    waiting = dtq_queue.get("returned")
    assert waiting is not None
    assert (waiting.status, waiting.attempts, waiting.lost_leases, waiting.started_at) == (
        JobStatus.QUEUED,
        0,
        0,
        None,
    )
    [owner] = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
    assert len({*tokens, owner.token}) == 4
    stale = Lease(owner.job, tokens[0])
    assert not dtq_engine.complete(stale, Outcome(JobStatus.SUCCEEDED, result_json='"stale"'), ttl_s=60)
    assert dtq_engine.complete(owner, Outcome(JobStatus.SUCCEEDED, result_json='"owner"'), ttl_s=60)
    final = dtq_queue.get("returned")
    assert final is not None and (final.result, final.attempts) == ("owner", 1)
    # Too late: the job ended (a finished record may keep its token), and stays as it ended.
    assert dtq_engine.hand_back(owner, max_lost_leases=3, ttl_s=60) is ReleaseOutcome.NOT_HELD
    after = dtq_queue.get("returned")
    assert after is not None
    assert (after.status, after.attempts, after.started_at) == (JobStatus.SUCCEEDED, 1, final.started_at)


def test_repeated_completion_by_the_holder_is_idempotent(dtq_queue: Queue, dtq_engine: Engine) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="twice")
    [lease] = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
    assert dtq_engine.complete(lease, Outcome(JobStatus.SUCCEEDED, result_json="1"), ttl_s=60)
    assert dtq_engine.complete(lease, Outcome(JobStatus.SUCCEEDED, result_json="2"), ttl_s=60)
    assert dtq_queue.result("twice", timeout=1) == 1


def test_unexpired_leases_are_not_recovered(dtq_queue: Queue, dtq_engine: Engine) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="held")
    assert len(dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases) == 1
    assert dtq_engine.recover("test_only", max_lost_leases=3, ttl_s=60) == 0
    assert dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="other").leases == []


def test_job_that_keeps_losing_its_lease_ends_dead(dtq_queue: Queue, dtq_engine: Engine) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="poison")
    for _ in range(3):
        assert len(dtq_engine.fetch(["test_only"], count=1, lease_s=0.01, worker_id="w").leases) == 1
        time.sleep(0.03)
        dtq_engine.recover("test_only", max_lost_leases=3, ttl_s=60)
    dead = dtq_queue.get("poison")
    assert dead is not None and dead.error is not None
    assert (dead.status, dead.lost_leases, dead.error.type) == (JobStatus.DEAD, 3, "LeaseLost")
    assert "lost its lease 3 times" in dead.error.message
    assert dtq_engine.fetch(["test_only"], count=1, lease_s=1, worker_id="w").leases == []
    [counts] = dtq_engine.stats().queues
    assert (counts.waiting, counts.scheduled, counts.running) == (0, 0, 0)


def test_heartbeat_keeps_a_job_longer_than_three_leases_with_its_worker(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    dtq_queue.enqueue("test_only", {"action": "sleep", "seconds": 1.2}, id="long")
    busy = dtq_make_worker(lease_s=0.3)
    thread = threading.Thread(target=busy.get_jobs)
    thread.start()
    # The rival starts once the busy worker holds the job: on a loaded machine its thread
    # could otherwise be slower to take it than the rival.
    deadline = time.monotonic() + 10
    while (job := dtq_queue.get("long")) is None or job.status is not JobStatus.RUNNING:
        assert time.monotonic() < deadline, "the busy worker never took the job"
        time.sleep(0.01)
    rival = dtq_make_worker(lease_s=0.3)
    taken = []
    deadline = time.monotonic() + 1.1
    while time.monotonic() < deadline:  # a rival keeps trying to take it
        taken += rival.get_jobs()
        time.sleep(0.05)
    thread.join()
    assert taken == []
    final = dtq_queue.get("long")
    assert final is not None
    assert (final.status, final.attempts, final.lost_leases) == (JobStatus.SUCCEEDED, 1, 0)
    assert final.worker == busy.worker_id


def test_get_jobs_recovers_expired_leases_first(
    dtq_queue: Queue, dtq_engine: Engine, dtq_make_worker: Callable[..., Worker]
) -> None:
    dtq_queue.enqueue("test_only", {"action": "duplicate_text", "text": "x"}, id="orphan")
    assert len(dtq_engine.fetch(["test_only"], count=1, lease_s=0.01, worker_id="dead-worker").leases) == 1
    time.sleep(0.03)
    [job] = dtq_make_worker().get_jobs()
    assert (job.id, job.result, job.attempts) == ("orphan", "xx", 2)


def test_an_idle_wait_leases_a_job_appended_while_it_blocks(dtq_queue: Queue, dtq_engine: Engine) -> None:
    assert dtq_engine.wait_and_fetch(["test_only"], 0.2, count=5, lease_s=30, worker_id="w").leases == []
    timer = threading.Timer(0.3, dtq_queue.enqueue, ["test_only", {"action": "echo"}], {"id": "late"})
    timer.start()
    try:
        batch = dtq_engine.wait_and_fetch(["test_only"], 10, count=5, lease_s=30, worker_id="w")
        if not batch.leases:  # a wake-up may come a moment before the job is visible
            batch = dtq_engine.fetch(["test_only"], count=5, lease_s=30, worker_id="w")
    finally:
        timer.join()
    assert [lease.job.id for lease in batch.leases] == ["late"]
    running = dtq_queue.get("late")
    assert running is not None and running.status is JobStatus.RUNNING


def test_a_wait_with_no_time_reads_the_job_once(dtq_queue: Queue, dtq_engine: Engine) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="queued")
    started = time.monotonic()
    job = dtq_engine.wait_for_final("queued", 0)
    assert job is not None and job.status is JobStatus.QUEUED
    assert dtq_engine.wait_for_final("never-appended", 0) is None
    assert time.monotonic() - started < 5


def test_every_producer_waiting_on_one_job_gets_its_result(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    dtq_queue.enqueue("test_only", {"action": "sleep", "seconds": 0.3}, id="shared")
    results: list[object] = []
    producers = [
        threading.Thread(target=lambda: results.append(dtq_queue.result("shared", timeout=20)))
        for _ in range(3)
    ]
    for producer in producers:
        producer.start()
    dtq_make_worker().get_jobs()
    for producer in producers:
        producer.join(30)
    assert results == [{"slept": 0.3}] * 3


def _job_and_payload(job_id: str) -> tuple[Job, str]:
    job = Job(id=job_id, plugin="test_only", data={"action": "echo"})
    return job, encode_payload(job)


def test_a_failed_attempt_of_a_job_cancelled_meanwhile_is_not_retried(
    dtq_queue: Queue, dtq_engine: Engine
) -> None:
    """The cancel came while the attempt ran, before its worker heard of it (at its next
    renewal): the worker reports a retry, and the engine ends the job cancelled instead."""
    dtq_queue.enqueue("test_only", {"action": "fail"}, id="asked-off", max_retries=3)
    [lease] = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
    dtq_queue.cancel("asked-off")
    error = ErrorInfo("RuntimeError", "failed on purpose")
    retry = Outcome(JobStatus.SCHEDULED, error=error, retry_in_s=0.0)
    assert dtq_engine.complete(lease, retry, ttl_s=60) is Recorded.CANCELLED  # told, for its reports
    # Sent again (a retry after a lost reply): answered as the first time.
    assert dtq_engine.complete_many([Completion(lease, retry, 60)]) == [Recorded.CANCELLED]
    ended = dtq_queue.get("asked-off")
    assert ended is not None and (ended.status, ended.attempts) == (JobStatus.CANCELLED, 1)
    assert ended.errors == (error,)
    assert dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases == []
    assert [e.type.value for e in dtq_engine.events() if e.job_id == "asked-off"][-1] == "cancelled"
