"""The job lifecycle against a real Redis: retries, dead letters, delays,
timeouts, cancellation, retention, progress, the caller, concurrency, registry.

Time-dependent tests use short leases, backoffs and delays, never long sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from dtqtest import running, wait_for

from dtq_core import CancelOutcome, JobFailed, JobNotFound, JobStatus, Queue, Worker

MakeWorker = Callable[..., Worker]


def thread_worker(make_worker: MakeWorker, **options: object) -> Worker:
    options.setdefault("mode", "thread")
    options.setdefault("poll_s", 0.1)
    return make_worker(**options)


# --- retries and dead letters ----------------------------------------------------


def test_flaky_job_is_retried_with_backoff_until_it_succeeds(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue(
        "test_only", {"action": "flaky", "failures": 2}, id="flaky", max_retries=3, retry_backoff_s=0.05
    )
    with running(thread_worker(make_worker)):
        assert queue.result("flaky", timeout=20) == {"attempts": 3}
    job = queue.get("flaky")
    assert job is not None
    assert job.attempts == 3
    assert [e.message for e in job.errors] == [
        "flaky: attempt 1 fails on purpose",
        "flaky: attempt 2 fails on purpose",
    ]


def test_exhausted_retries_end_dead_and_dead_letters_can_be_requeued_and_purged(
    queue: Queue, make_worker: MakeWorker
) -> None:
    queue.enqueue(
        "test_only", {"action": "fail", "message": "nope"}, id="doomed", max_retries=2, retry_backoff_s=0.01
    )
    with running(thread_worker(make_worker)):
        with pytest.raises(JobFailed) as caught:
            queue.result("doomed", timeout=20)
        dead = caught.value.job
        assert dead.status is JobStatus.DEAD and dead.attempts == 3  # type: ignore[attr-defined]
        assert len(dead.errors) == 3  # type: ignore[attr-defined]
        assert "retries exhausted" in dead.error.message  # type: ignore[attr-defined]
        assert [job.id for job in queue.dead()] == ["doomed"]
        requeued = queue.requeue("doomed")
        assert requeued.status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SCHEDULED)
        wait_for(lambda: (j := queue.get("doomed")) is not None and j.status is JobStatus.DEAD)
    assert [job.id for job in queue.dead()] == ["doomed"]
    assert queue.purge(JobStatus.DEAD) == 1
    assert queue.get("doomed") is None and queue.dead() == []


def test_plugin_can_ask_for_a_retry_after_a_delay(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue("test_only", {"action": "retry", "times": 1, "after": 0.2}, id="later", max_retries=1)
    with running(thread_worker(make_worker)):
        assert queue.result("later", timeout=20) == {"attempts": 2}
    job = queue.get("later")
    assert job is not None and job.errors[0].type == "Retry"


def test_permanent_failure_is_not_retried(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue("test_only", {"action": "permanent", "message": "bad input"}, id="perm", max_retries=5)
    thread_worker(make_worker).get_jobs()
    job = queue.get("perm")
    assert job is not None and job.error is not None
    assert (job.status, job.attempts, job.error.message) == (JobStatus.FAILED, 1, "bad input")
    assert [j.id for j in queue.failed()] == ["perm"]


def test_plugin_default_policy_is_overridden_per_job(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue("test_only", {"action": "fail"}, id="no-retries")  # test_only's default: 0 retries
    thread_worker(make_worker).get_jobs()
    job = queue.get("no-retries")
    assert job is not None and (job.status, job.attempts) == (JobStatus.FAILED, 1)


# --- delays, ETAs, priorities ------------------------------------------------------


def test_delayed_job_waits_in_the_engine_until_due(queue: Queue, make_worker: MakeWorker) -> None:
    job = queue.enqueue("test_only", {"action": "echo"}, id="later", delay_s=0.5)
    assert job.status is JobStatus.SCHEDULED
    stored = queue.get("later")
    assert stored is not None and stored.status is JobStatus.SCHEDULED and stored.eta is not None
    worker = thread_worker(make_worker)
    assert worker.get_jobs() == []
    wait_for(lambda: datetime.now(timezone.utc) > stored.eta + timedelta(milliseconds=50))  # type: ignore[operator]
    assert [j.id for j in worker.get_jobs()] == ["later"]


def test_eta_in_the_past_runs_now_and_eta_in_the_future_waits(queue: Queue, make_worker: MakeWorker) -> None:
    now = datetime.now(timezone.utc)
    queue.enqueue("test_only", {"action": "echo"}, id="past", eta=now - timedelta(seconds=5))
    queue.enqueue("test_only", {"action": "echo"}, id="future", eta=now + timedelta(hours=1))
    assert [j.id for j in thread_worker(make_worker).get_jobs()] == ["past"]
    future = queue.get("future")
    assert future is not None and future.status is JobStatus.SCHEDULED


def test_delayed_jobs_are_promoted_once_however_many_workers_race(
    queue: Queue, make_worker: MakeWorker
) -> None:
    ids = [f"d{i}" for i in range(30)]
    for job_id in ids:
        queue.enqueue("test_only", {"action": "echo"}, id=job_id, delay_s=0.3)
    workers = [thread_worker(make_worker, concurrency=2) for _ in range(4)]
    contexts = [running(w) for w in workers]
    for context in contexts:
        context.__enter__()
    try:
        for job_id in ids:
            queue.result(job_id, timeout=20)
    finally:
        for context in contexts:
            context.__exit__(None, None, None)
    jobs = [queue.get(job_id) for job_id in ids]
    assert all(job is not None and (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1) for job in jobs)


# --- time limits ------------------------------------------------------------------


def test_process_mode_stops_a_job_over_its_time_limit(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue("test_only", {"action": "sleep", "seconds": 60}, id="slow", timeout_s=0.5)
    started = time.monotonic()
    make_worker(mode="process").get_jobs()
    assert time.monotonic() - started < 30  # stopped, not waited for
    job = queue.get("slow")
    assert job is not None and job.error is not None
    assert (job.status, job.error.type) == (JobStatus.FAILED, "JobTimeout")


def test_timeout_counts_as_a_failed_attempt_and_is_retried(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue(
        "test_only",
        {"action": "sleep", "seconds": 0.3},
        id="slow",
        timeout_s=0.05,
        max_retries=1,
        retry_backoff_s=0.01,
    )
    with running(thread_worker(make_worker)), pytest.raises(JobFailed):
        queue.result("slow", timeout=20)
    job = queue.get("slow")
    assert job is not None
    assert (job.status, job.attempts, [e.type for e in job.errors]) == (JobStatus.DEAD, 2, ["JobTimeout"] * 2)


# --- cancellation -----------------------------------------------------------------


def test_cancelled_queued_and_scheduled_jobs_never_run(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue("test_only", {"action": "echo"}, id="queued")
    queue.enqueue("test_only", {"action": "echo"}, id="scheduled", delay_s=0.1)
    assert queue.cancel("queued") is CancelOutcome.CANCELLED
    assert queue.cancel("scheduled") is CancelOutcome.CANCELLED
    time.sleep(0.15)
    assert thread_worker(make_worker).get_jobs() == []
    for job_id in ("queued", "scheduled"):
        job = queue.get(job_id)
        assert job is not None and (job.status, job.attempts) == (JobStatus.CANCELLED, 0)
    assert queue.cancel("queued") is CancelOutcome.ALREADY_FINAL
    with pytest.raises(JobNotFound):
        queue.cancel("no-such-job")


def test_running_job_in_process_mode_is_stopped_when_cancelled(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue("test_only", {"action": "sleep", "seconds": 60}, id="long")
    with running(make_worker(mode="process", lease_s=1.5, poll_s=0.1)):
        wait_for(lambda: (j := queue.get("long")) is not None and j.status is JobStatus.RUNNING)
        assert queue.cancel("long") is CancelOutcome.REQUESTED
        with pytest.raises(JobFailed):
            queue.result("long", timeout=20)
    job = queue.get("long")
    assert job is not None and job.status is JobStatus.CANCELLED


def test_running_plugin_sees_the_cancellation_in_thread_mode(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue("test_only", {"action": "progress", "steps": 1000, "interval": 0.02}, id="steps")
    with running(thread_worker(make_worker, lease_s=1.5)):
        wait_for(lambda: (j := queue.get("steps")) is not None and (j.progress or 0) > 0)
        assert queue.cancel("steps") is CancelOutcome.REQUESTED
        with pytest.raises(JobFailed):
            queue.result("steps", timeout=20)
    job = queue.get("steps")
    assert job is not None and job.error is not None
    assert (job.status, job.error.type) == (JobStatus.CANCELLED, "Cancelled")
    assert job.progress is not None and job.progress < 1


# --- retention ----------------------------------------------------------------------


def test_results_expire_after_their_retention(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue("test_only", {"action": "echo"}, id="brief")
    thread_worker(make_worker, result_ttl_s=1).get_jobs()
    assert queue.get("brief") is not None
    wait_for(lambda: queue.get("brief") is None, timeout=5)


# --- progress, caller, async, concurrency ------------------------------------------


def test_progress_is_visible_while_the_job_runs(queue: Queue, make_worker: MakeWorker) -> None:
    queue.enqueue("test_only", {"action": "progress", "steps": 40, "interval": 0.05}, id="p")
    with running(make_worker(mode="process", poll_s=0.1)):
        seen = wait_for(
            lambda: (j := queue.get("p")) is not None and j.status is JobStatus.RUNNING and j.message and j
        )
        assert seen.message.startswith("step ")
        assert 0 < seen.progress <= 1
        assert queue.result("p", timeout=20) == {"steps": 40}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_plugin_appends_a_follow_up_job_through_its_caller(
    queue: Queue, make_worker: MakeWorker, mode: str
) -> None:
    queue.enqueue("test_only", {"action": "follow_up"}, id="parent")
    with running(make_worker(mode=mode, poll_s=0.1)):
        assert queue.result("parent", timeout=20) == {"child": "parent-child"}
        assert queue.result("parent-child", timeout=20) == {"action": "echo", "parent": "parent"}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_async_plugin_runs_on_an_event_loop(engine_url: str, namespace: str, mode: str) -> None:
    with Queue(["test_only_async"], engine_url, namespace=namespace) as queue:
        queue.enqueue("test_only_async", {"seconds": 0.01, "n": 1}, id="a")
        worker = Worker(["test_only_async"], engine_url, namespace=namespace, mode=mode)
        worker.get_jobs()
        worker.close()
        assert queue.result("a", timeout=5) == {"seconds": 0.01, "n": 1}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_concurrency_runs_jobs_side_by_side(queue: Queue, make_worker: MakeWorker, mode: str) -> None:
    ids = [f"c{i}" for i in range(3)]
    for job_id in ids:
        queue.enqueue("test_only", {"action": "sleep", "seconds": 0.6}, id=job_id)
    done = make_worker(mode=mode, concurrency=3).get_jobs()
    assert sorted(job.id for job in done) == ids
    jobs = [queue.get(job_id) for job_id in ids]
    latest_start = max(job.started_at for job in jobs)  # type: ignore[union-attr,type-var]
    earliest_end = min(job.finished_at for job in jobs)  # type: ignore[union-attr,type-var]
    assert latest_start < earliest_end  # all three were running at once


# --- the worker registry and shutdown --------------------------------------------------


def test_live_workers_are_listed_with_what_they_serve(queue: Queue, make_worker: MakeWorker) -> None:
    worker = thread_worker(make_worker, concurrency=2)
    with running(worker):
        rows = wait_for(lambda: [r for r in queue.workers() if r["id"] == worker.worker_id])
        row = rows[0]
        assert row["plugins"] == "test_only" and row["concurrency"] == "2" and row["mode"] == "thread"
        assert int(row["pid"]) > 0 and row["host"]
    assert [r for r in queue.workers() if r["id"] == worker.worker_id] == []


def test_shutdown_hands_unfinished_jobs_back_and_nothing_is_lost(
    queue: Queue, make_worker: MakeWorker
) -> None:
    ids = [f"s{i}" for i in range(6)]
    for job_id in ids:
        queue.enqueue("test_only", {"action": "sleep", "seconds": 2}, id=job_id)
    worker = make_worker(mode="process", concurrency=2, grace_s=0.2, poll_s=0.1)
    stopper = threading.Timer(0.8, worker.stop)
    stopper.start()
    worker.work()
    stopper.join()
    handed_back = [queue.get(job_id) for job_id in ids]
    assert all(job is not None and job.status is JobStatus.QUEUED for job in handed_back)
    assert sum(job.attempts for job in handed_back if job) == 2  # the two that had started
    make_worker(mode="process", concurrency=3).get_jobs()
    assert all(queue.result(job_id, timeout=1) == {"slept": 2} for job_id in ids)


def test_stats_count_each_queue_and_flag_queues_no_live_worker_serves(
    engine_url: str, namespace: str, make_worker: MakeWorker
) -> None:
    with Queue(["test_only", "nobody_serves"], engine_url, namespace=namespace) as queue:
        queue.enqueue("test_only", {"action": "sleep", "seconds": 30}, id="busy")
        queue.enqueue("test_only", {"action": "echo"}, id="later", delay_s=60)
        queue.enqueue("nobody_serves", {"x": 1})
        queue.enqueue("nobody_serves", {"x": 2})
        before = queue.stats()
        assert {q.plugin: (q.waiting, q.scheduled, q.running, q.workers) for q in before.queues} == {
            "test_only": (1, 1, 0, 0),
            "nobody_serves": (2, 0, 0, 0),
        }
        assert sorted(before.unserved()) == ["nobody_serves", "test_only"]
        with running(make_worker(mode="process", poll_s=0.1, grace_s=0)):
            wait_for(lambda: (j := queue.get("busy")) is not None and j.status is JobStatus.RUNNING)
            during = wait_for(lambda: (s := queue.stats()).unserved() == ["nobody_serves"] and s)
            [served] = [q for q in during.queues if q.plugin == "test_only"]
            assert (served.waiting, served.scheduled, served.running, served.workers) == (0, 1, 1, 1)
