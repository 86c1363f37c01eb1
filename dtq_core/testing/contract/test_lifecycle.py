"""The job lifecycle: retries, dead letters, delays,
timeouts, cancellation, retention, progress, the caller, concurrency, registry.

Time-dependent tests use short leases, backoffs and delays, never long sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from dtq_core import (
    CancelOutcome,
    Engine,
    ErrorInfo,
    JobFailed,
    JobNotFound,
    JobStatus,
    Outcome,
    Queue,
    Worker,
)
from dtq_core.testing import running, wait_for

MakeWorker = Callable[..., Worker]


def thread_worker(dtq_make_worker: MakeWorker, **options: object) -> Worker:
    options.setdefault("mode", "thread")
    options.setdefault("poll_s", 0.1)
    return dtq_make_worker(**options)


# --- retries and dead letters ----------------------------------------------------


def test_flaky_job_is_retried_with_backoff_until_it_succeeds(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    dtq_queue.enqueue(
        "test_only", {"action": "flaky", "failures": 2}, id="flaky", max_retries=3, retry_backoff_s=0.05
    )
    with running(thread_worker(dtq_make_worker)):
        assert dtq_queue.result("flaky", timeout=20) == {"attempts": 3}
    job = dtq_queue.get("flaky")
    assert job is not None
    assert job.attempts == 3
    assert [e.message for e in job.errors] == [
        "flaky: attempt 1 fails on purpose",
        "flaky: attempt 2 fails on purpose",
    ]


def test_exhausted_retries_end_dead_and_dead_letters_can_be_requeued_and_purged(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    dtq_queue.enqueue(
        "test_only", {"action": "fail", "message": "nope"}, id="doomed", max_retries=2, retry_backoff_s=0.01
    )
    with running(thread_worker(dtq_make_worker)):
        with pytest.raises(JobFailed) as caught:
            dtq_queue.result("doomed", timeout=20)
        dead = caught.value.job
        assert dead.status is JobStatus.DEAD and dead.attempts == 3  # type: ignore[attr-defined]
        assert len(dead.errors) == 3  # type: ignore[attr-defined]
        assert "retries exhausted" in dead.error.message  # type: ignore[attr-defined]
        assert [job.id for job in dtq_queue.dead()] == ["doomed"]
        requeued = dtq_queue.requeue("doomed")
        assert requeued.status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SCHEDULED)
        wait_for(lambda: (j := dtq_queue.get("doomed")) is not None and j.status is JobStatus.DEAD)
    assert [job.id for job in dtq_queue.dead()] == ["doomed"]
    assert dtq_queue.purge(JobStatus.DEAD) == 1
    assert dtq_queue.get("doomed") is None and dtq_queue.dead() == []


def test_plugin_can_ask_for_a_retry_after_a_delay(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    dtq_queue.enqueue("test_only", {"action": "retry", "times": 1, "after": 0.2}, id="later", max_retries=1)
    with running(thread_worker(dtq_make_worker)):
        assert dtq_queue.result("later", timeout=20) == {"attempts": 2}
    job = dtq_queue.get("later")
    assert job is not None and job.errors[0].type == "Retry"


def test_permanent_failure_is_not_retried(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    dtq_queue.enqueue("test_only", {"action": "permanent", "message": "bad input"}, id="perm", max_retries=5)
    thread_worker(dtq_make_worker).get_jobs()
    job = dtq_queue.get("perm")
    assert job is not None and job.error is not None
    assert (job.status, job.attempts, job.error.message) == (JobStatus.FAILED, 1, "bad input")
    assert [j.id for j in dtq_queue.failed()] == ["perm"]


def test_plugin_default_policy_is_overridden_per_job(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    dtq_queue.enqueue("test_only", {"action": "fail"}, id="no-retries")  # test_only's default: 0 retries
    thread_worker(dtq_make_worker).get_jobs()
    job = dtq_queue.get("no-retries")
    assert job is not None and (job.status, job.attempts) == (JobStatus.FAILED, 1)


# --- delays, ETAs, priorities ------------------------------------------------------


def test_delayed_job_waits_in_the_engine_until_due(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    job = dtq_queue.enqueue("test_only", {"action": "echo"}, id="later", delay_s=0.5)
    assert job.status is JobStatus.SCHEDULED
    stored = dtq_queue.get("later")
    assert stored is not None and stored.status is JobStatus.SCHEDULED and stored.eta is not None
    worker = thread_worker(dtq_make_worker)
    assert worker.get_jobs() == []
    wait_for(lambda: datetime.now(timezone.utc) > stored.eta + timedelta(milliseconds=50))  # type: ignore[operator]
    assert [j.id for j in worker.get_jobs()] == ["later"]


def test_eta_in_the_past_runs_now_and_eta_in_the_future_waits(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    now = datetime.now(timezone.utc)
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="past", eta=now - timedelta(seconds=5))
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="future", eta=now + timedelta(hours=1))
    assert [j.id for j in thread_worker(dtq_make_worker).get_jobs()] == ["past"]
    future = dtq_queue.get("future")
    assert future is not None and future.status is JobStatus.SCHEDULED


def test_delayed_jobs_are_promoted_once_however_many_workers_race(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    ids = [f"d{i}" for i in range(30)]
    for job_id in ids:
        dtq_queue.enqueue("test_only", {"action": "echo"}, id=job_id, delay_s=0.3)
    workers = [thread_worker(dtq_make_worker, concurrency=2) for _ in range(4)]
    contexts = [running(w) for w in workers]
    for context in contexts:
        context.__enter__()
    try:
        for job_id in ids:
            dtq_queue.result(job_id, timeout=20)
    finally:
        for context in contexts:
            context.__exit__(None, None, None)
    jobs = [dtq_queue.get(job_id) for job_id in ids]
    assert all(job is not None and (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1) for job in jobs)


# --- time limits ------------------------------------------------------------------


def test_process_mode_stops_a_job_over_its_time_limit(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    dtq_queue.enqueue("test_only", {"action": "sleep", "seconds": 60}, id="slow", timeout_s=0.5)
    started = time.monotonic()
    dtq_make_worker(mode="process").get_jobs()
    assert time.monotonic() - started < 30  # stopped, not waited for
    job = dtq_queue.get("slow")
    assert job is not None and job.error is not None
    assert (job.status, job.error.type) == (JobStatus.FAILED, "JobTimeout")


def test_timeout_counts_as_a_failed_attempt_and_is_retried(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    dtq_queue.enqueue(
        "test_only",
        {"action": "sleep", "seconds": 0.3},
        id="slow",
        timeout_s=0.05,
        max_retries=1,
        retry_backoff_s=0.01,
    )
    with running(thread_worker(dtq_make_worker)), pytest.raises(JobFailed):
        dtq_queue.result("slow", timeout=20)
    job = dtq_queue.get("slow")
    assert job is not None
    assert (job.status, job.attempts, [e.type for e in job.errors]) == (JobStatus.DEAD, 2, ["JobTimeout"] * 2)


# --- cancellation -----------------------------------------------------------------


def test_cancelled_queued_and_scheduled_jobs_never_run(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="queued")
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="scheduled", delay_s=0.1)
    assert dtq_queue.cancel("queued") is CancelOutcome.CANCELLED
    assert dtq_queue.cancel("scheduled") is CancelOutcome.CANCELLED
    time.sleep(0.15)
    assert thread_worker(dtq_make_worker).get_jobs() == []
    for job_id in ("queued", "scheduled"):
        job = dtq_queue.get(job_id)
        assert job is not None and (job.status, job.attempts) == (JobStatus.CANCELLED, 0)
    assert dtq_queue.cancel("queued") is CancelOutcome.ALREADY_FINAL
    with pytest.raises(JobNotFound):
        dtq_queue.cancel("no-such-job")


def test_cancelling_a_job_that_ended_says_so_whatever_its_end(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="done")
    dtq_queue.enqueue("test_only", {"action": "permanent"}, id="broken")
    thread_worker(dtq_make_worker).get_jobs()
    for job_id, status in (("done", JobStatus.SUCCEEDED), ("broken", JobStatus.FAILED)):
        assert dtq_queue.cancel(job_id) is CancelOutcome.ALREADY_FINAL  # a succeeded one was "not found"
        job = dtq_queue.get(job_id)
        assert job is not None and job.status is status


def test_running_job_in_process_mode_is_stopped_when_cancelled(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    dtq_queue.enqueue("test_only", {"action": "sleep", "seconds": 60}, id="long")
    with running(dtq_make_worker(mode="process", lease_s=1.5, poll_s=0.1)):
        wait_for(lambda: (j := dtq_queue.get("long")) is not None and j.status is JobStatus.RUNNING)
        assert dtq_queue.cancel("long") is CancelOutcome.REQUESTED
        with pytest.raises(JobFailed):
            dtq_queue.result("long", timeout=20)
    job = dtq_queue.get("long")
    assert job is not None and job.status is JobStatus.CANCELLED


def test_running_plugin_sees_the_cancellation_in_thread_mode(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    dtq_queue.enqueue("test_only", {"action": "progress", "steps": 1000, "interval": 0.02}, id="steps")
    with running(thread_worker(dtq_make_worker, lease_s=1.5)):
        wait_for(lambda: (j := dtq_queue.get("steps")) is not None and (j.progress or 0) > 0)
        assert dtq_queue.cancel("steps") is CancelOutcome.REQUESTED
        with pytest.raises(JobFailed):
            dtq_queue.result("steps", timeout=20)
    job = dtq_queue.get("steps")
    assert job is not None and job.error is not None
    assert (job.status, job.error.type) == (JobStatus.CANCELLED, "Cancelled")
    assert job.progress is not None and job.progress < 1


# --- retention ----------------------------------------------------------------------


def test_results_expire_after_their_retention(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="brief")
    thread_worker(dtq_make_worker, result_ttl_s=1).get_jobs()
    assert dtq_queue.get("brief") is not None
    wait_for(lambda: dtq_queue.get("brief") is None, timeout=5)


def _failed(dtq_queue: Queue, dtq_engine: Engine, job_id: str, ttl_s: float = 60) -> None:
    """A job of ``job_id`` ended failed, its record kept ``ttl_s``."""
    dtq_queue.enqueue("test_only", {"action": "permanent"}, id=job_id)
    [lease] = dtq_engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
    outcome = Outcome(JobStatus.FAILED, error=ErrorInfo("Permanent", "failed for good"))
    assert dtq_engine.complete(lease, outcome, ttl_s=ttl_s)


def test_the_index_cap_trims_the_listing_not_the_records(dtq_queue: Queue, dtq_engine: Engine) -> None:
    dtq_engine.index_cap = 1  # type: ignore[attr-defined]  # every engine dtq ships has one
    _failed(dtq_queue, dtq_engine, "older")
    time.sleep(0.01)  # indexes order by the finish time in ms
    _failed(dtq_queue, dtq_engine, "newer")
    assert dtq_engine.final_ids(JobStatus.FAILED) == ["newer"]
    assert dtq_engine.stats().failed == 1
    older = dtq_queue.get("older")  # kept for its retention, listed or not
    assert older is not None and older.status is JobStatus.FAILED


def test_a_purge_deletes_the_jobs_past_the_index_cap_too(dtq_queue: Queue, dtq_engine: Engine) -> None:
    dtq_engine.index_cap = 2  # type: ignore[attr-defined]  # every engine dtq ships has one
    for n in range(5):
        _failed(dtq_queue, dtq_engine, f"f{n}")
        time.sleep(0.002)  # indexes order by the finish time in ms
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="cancelled")
    dtq_queue.cancel("cancelled")  # a final record of another status: it stays
    assert dtq_engine.final_ids(JobStatus.FAILED) == ["f4", "f3"]
    assert dtq_engine.purge(JobStatus.FAILED) == 5  # the three past the cap too
    assert [dtq_queue.get(f"f{n}") for n in range(5)] == [None] * 5
    kept = dtq_queue.get("cancelled")
    assert kept is not None and kept.status is JobStatus.CANCELLED


def test_a_purge_counts_only_records_that_had_not_expired(dtq_queue: Queue, dtq_engine: Engine) -> None:
    _failed(dtq_queue, dtq_engine, "brief", ttl_s=1)
    _failed(dtq_queue, dtq_engine, "kept")
    wait_for(lambda: dtq_queue.get("brief") is None, timeout=10)
    assert dtq_engine.purge(JobStatus.FAILED) == 1
    assert dtq_queue.get("kept") is None and dtq_engine.final_ids(JobStatus.FAILED) == []


def test_a_purge_of_a_status_that_is_not_indexed_is_refused(dtq_queue: Queue, dtq_engine: Engine) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="live")
    for status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SCHEDULED, JobStatus.SUCCEEDED):
        with pytest.raises(ValueError, match="only dead, failed jobs are indexed"):
            dtq_engine.purge(status)
        with pytest.raises(ValueError, match="only dead, failed jobs are indexed"):
            dtq_engine.final_ids(status)
    live = dtq_queue.get("live")
    assert live is not None and live.status is JobStatus.QUEUED


# --- progress, caller, async, concurrency ------------------------------------------


def test_progress_is_visible_while_the_job_runs(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    dtq_queue.enqueue("test_only", {"action": "progress", "steps": 40, "interval": 0.05}, id="p")
    with running(dtq_make_worker(mode="process", poll_s=0.1)):
        seen = wait_for(
            lambda: (
                (j := dtq_queue.get("p")) is not None and j.status is JobStatus.RUNNING and j.message and j
            )
        )
        assert seen.message.startswith("step ")
        assert 0 < seen.progress <= 1
        assert dtq_queue.result("p", timeout=20) == {"steps": 40}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_plugin_appends_a_follow_up_job_through_its_caller(
    dtq_queue: Queue, dtq_make_worker: MakeWorker, mode: str
) -> None:
    dtq_queue.enqueue("test_only", {"action": "follow_up"}, id="parent")
    with running(dtq_make_worker(mode=mode, poll_s=0.1)):
        assert dtq_queue.result("parent", timeout=20) == {"child": "parent-child"}
        assert dtq_queue.result("parent-child", timeout=20) == {"action": "echo", "parent": "parent"}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_async_plugin_runs_on_an_event_loop(dtq_url: str, dtq_namespace: str, mode: str) -> None:
    with Queue(["test_only_async"], dtq_url, namespace=dtq_namespace) as dtq_queue:
        dtq_queue.enqueue("test_only_async", {"seconds": 0.01, "n": 1}, id="a")
        worker = Worker(["test_only_async"], dtq_url, namespace=dtq_namespace, mode=mode)
        worker.get_jobs()
        worker.close()
        assert dtq_queue.result("a", timeout=5) == {"seconds": 0.01, "n": 1}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_concurrency_runs_jobs_side_by_side(dtq_queue: Queue, dtq_make_worker: MakeWorker, mode: str) -> None:
    ids = [f"c{i}" for i in range(3)]
    for job_id in ids:
        dtq_queue.enqueue("test_only", {"action": "sleep", "seconds": 0.6}, id=job_id)
    done = dtq_make_worker(mode=mode, concurrency=3).get_jobs()
    assert sorted(job.id for job in done) == ids
    spans = [(job.started_at, job.finished_at) for job in map(dtq_queue.get, ids) if job is not None]
    starts = [start for start, _ in spans if start is not None]
    ends = [end for _, end in spans if end is not None]
    assert len(starts) == len(ends) == len(ids)
    assert max(starts) < min(ends)  # all three were running at once


# --- the worker registry and shutdown --------------------------------------------------


def test_live_workers_are_listed_with_what_they_serve(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    worker = thread_worker(dtq_make_worker, concurrency=2)
    with running(worker):
        rows = wait_for(lambda: [r for r in dtq_queue.workers() if r["id"] == worker.worker_id])
        row = rows[0]
        assert row["plugins"] == "test_only" and row["concurrency"] == "2" and row["mode"] == "thread"
        assert int(row["pid"]) > 0 and row["host"]
    assert [r for r in dtq_queue.workers() if r["id"] == worker.worker_id] == []


def test_shutdown_hands_unfinished_jobs_back_and_nothing_is_lost(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    ids = [f"s{i}" for i in range(6)]
    for job_id in ids:
        dtq_queue.enqueue("test_only", {"action": "sleep", "seconds": 2}, id=job_id)
    worker = dtq_make_worker(mode="process", concurrency=2, grace_s=0.2, poll_s=0.1)
    stopper = threading.Timer(0.8, worker.stop)
    stopper.start()
    worker.work()
    stopper.join()
    handed_back = [dtq_queue.get(job_id) for job_id in ids]
    assert all(job is not None and job.status is JobStatus.QUEUED for job in handed_back)
    assert sum(job.attempts for job in handed_back if job) == 2  # the two that had started
    dtq_make_worker(mode="process", concurrency=3).get_jobs()
    assert all(dtq_queue.result(job_id, timeout=1) == {"slept": 2} for job_id in ids)


def test_stats_count_each_queue_and_flag_queues_no_live_worker_serves(
    dtq_url: str, dtq_namespace: str, dtq_make_worker: MakeWorker
) -> None:
    with Queue(["test_only", "nobody_serves"], dtq_url, namespace=dtq_namespace) as dtq_queue:
        dtq_queue.enqueue("test_only", {"action": "sleep", "seconds": 30}, id="busy")
        dtq_queue.enqueue("test_only", {"action": "echo"}, id="later", delay_s=60)
        dtq_queue.enqueue("nobody_serves", {"x": 1})
        dtq_queue.enqueue("nobody_serves", {"x": 2})
        before = dtq_queue.stats()
        assert {q.plugin: (q.waiting, q.scheduled, q.running, q.workers) for q in before.queues} == {
            "test_only": (1, 1, 0, 0),
            "nobody_serves": (2, 0, 0, 0),
        }
        assert sorted(before.unserved()) == ["nobody_serves", "test_only"]
        with running(dtq_make_worker(mode="process", poll_s=0.1, grace_s=0)):
            wait_for(lambda: (j := dtq_queue.get("busy")) is not None and j.status is JobStatus.RUNNING)
            during = wait_for(lambda: (s := dtq_queue.stats()).unserved() == ["nobody_serves"] and s)
            [served] = [q for q in during.queues if q.plugin == "test_only"]
            assert (served.waiting, served.scheduled, served.running, served.workers) == (0, 1, 1, 1)
