"""Helpers of the dashboard tests (fixtures live in conftest.py): the token, jobs put in a state."""

from __future__ import annotations

from dtq_core import Job, JobStatus, Queue

TOKEN = "dashboard-test-token-0123456789"


def make_dead(queue: Queue, job_id: str, data: dict[str, object] | None = None) -> Job:
    """Append a job and bury it as dead at once: its one delivery lost its lease."""
    queue.enqueue("test_only", data or {"action": "echo"}, id=job_id, priority=4095)
    [lease] = queue.engine.fetch(["test_only"], count=1, lease_s=60, worker_id="gone").leases
    queue.engine.release(lease, lost=True, max_lost_leases=1, ttl_s=600)
    job = queue.get(job_id)
    assert job is not None and job.status is JobStatus.DEAD
    return job


def make_running(queue: Queue, job_id: str) -> Job:
    """Append a job and lease it to a worker that will not finish it during the test."""
    queue.enqueue("test_only", {"action": "echo"}, id=job_id, priority=4095)
    [lease] = queue.engine.fetch(["test_only"], count=1, lease_s=600, worker_id="busy-worker").leases
    assert lease.job.id == job_id
    return lease.job
