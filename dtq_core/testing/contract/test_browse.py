"""Browsing live jobs page by page, and deleting one final job (what the dashboard shows and does)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dtq_core import JobNotFound, JobStatus, Queue, Worker

MakeWorker = Callable[..., Worker]


def _ids(queue: Queue, status: JobStatus, plugin: str = "test_only", **page: int) -> list[str]:
    return [job.id for job in queue.browse(status, plugin, **page)]


def test_queued_jobs_are_listed_in_the_order_workers_take_them(dtq_queue: Queue) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo", "n": 1}, id="first")
    dtq_queue.enqueue("test_only", {"action": "echo", "n": 2}, id="urgent", priority=5)
    dtq_queue.enqueue("test_only", {"action": "echo", "n": 3}, id="last")
    dtq_queue.enqueue("test_only_async", {"n": 4}, id="other-queue")
    assert _ids(dtq_queue, JobStatus.QUEUED) == ["urgent", "first", "last"]
    assert _ids(dtq_queue, JobStatus.QUEUED, offset=1, limit=1) == ["first"]
    assert _ids(dtq_queue, JobStatus.QUEUED, offset=3) == []
    assert _ids(dtq_queue, JobStatus.QUEUED, limit=0) == []
    assert _ids(dtq_queue, JobStatus.QUEUED, "test_only_async") == ["other-queue"]
    assert _ids(dtq_queue, JobStatus.QUEUED, "no_such_plugin") == []
    [job] = dtq_queue.browse(JobStatus.QUEUED, "test_only", limit=1)
    assert (job.status, job.data, job.priority) == (JobStatus.QUEUED, {"action": "echo", "n": 2}, 5)


def test_scheduled_jobs_are_listed_by_due_time_and_not_as_queued(dtq_queue: Queue) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="later", delay_s=600)
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="sooner", delay_s=300)
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="now")
    assert _ids(dtq_queue, JobStatus.SCHEDULED) == ["sooner", "later"]
    assert _ids(dtq_queue, JobStatus.QUEUED) == ["now"]
    sooner, later = dtq_queue.browse(JobStatus.SCHEDULED, "test_only")
    assert sooner.status is JobStatus.SCHEDULED
    assert sooner.eta is not None and later.eta is not None and sooner.eta < later.eta


def test_running_jobs_are_listed_with_their_worker_and_leave_the_queued_list(dtq_queue: Queue) -> None:
    for n in range(3):
        dtq_queue.enqueue("test_only", {"action": "echo"}, id=f"job-{n}")
    batch = dtq_queue.engine.fetch(["test_only"], count=2, lease_s=60, worker_id="browser-test")
    assert len(batch.leases) == 2
    running = dtq_queue.browse(JobStatus.RUNNING, "test_only")
    assert sorted(job.id for job in running) == ["job-0", "job-1"]
    assert {(job.status, job.worker, job.attempts) for job in running} == {
        (JobStatus.RUNNING, "browser-test", 1)
    }
    assert _ids(dtq_queue, JobStatus.QUEUED) == ["job-2"]


def test_only_live_statuses_can_be_browsed(dtq_queue: Queue) -> None:
    for status in (JobStatus.DEAD, JobStatus.FAILED, JobStatus.SUCCEEDED, JobStatus.CANCELLED):
        with pytest.raises(ValueError, match="can be browsed"):
            dtq_queue.browse(status, "test_only")
    with pytest.raises(ValueError, match="must not be negative"):
        dtq_queue.browse(JobStatus.QUEUED, "test_only", offset=-1)


def test_one_final_job_is_deleted_with_its_errors_and_live_jobs_are_not(
    dtq_queue: Queue, dtq_make_worker: MakeWorker
) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="done")
    dtq_queue.enqueue("test_only", {"action": "fail"}, id="failed")
    dtq_make_worker(mode="thread").get_jobs()
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="dead")
    [lease] = dtq_queue.engine.fetch(["test_only"], count=1, lease_s=60, worker_id="w").leases
    dtq_queue.engine.release(lease, lost=True, max_lost_leases=1, ttl_s=600)
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="waiting")
    assert [job.id for job in dtq_queue.dead()] == ["dead"]
    assert [job.id for job in dtq_queue.failed()] == ["failed"]

    for job_id in ("done", "failed", "dead"):
        dtq_queue.delete(job_id)
        assert dtq_queue.get(job_id) is None
    assert dtq_queue.dead() == [] and dtq_queue.failed() == []
    stats = dtq_queue.stats()
    assert (stats.dead, stats.failed) == (0, 0)

    assert dtq_queue.engine.delete("waiting") is False
    with pytest.raises(JobNotFound, match="only final jobs can be deleted"):
        dtq_queue.delete("waiting")
    assert _ids(dtq_queue, JobStatus.QUEUED) == ["waiting"]
    assert dtq_queue.engine.delete("dead") is False
    with pytest.raises(JobNotFound):
        dtq_queue.delete("no-such-job")


def test_a_deleted_job_id_can_be_appended_afresh(dtq_queue: Queue, dtq_make_worker: MakeWorker) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo", "round": 1}, id="again")
    dtq_make_worker(mode="thread").get_jobs()
    dtq_queue.delete("again")
    appended = dtq_queue.enqueue("test_only", {"action": "echo", "round": 2}, id="again")
    assert appended.status is JobStatus.QUEUED
    assert _ids(dtq_queue, JobStatus.QUEUED) == ["again"]
