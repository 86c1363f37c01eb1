"""A worker reports each outcome as its engine stored it, not as the worker asked."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from dtq_core import Job, JobStatus, Queue, Worker
from dtq_core.worker import Ended, Observer


class Seen(Observer):
    def __init__(self) -> None:
        self.ended: list[tuple[str, JobStatus]] = []

    def attempt_ended(self, job: Job, status: JobStatus, duration_s: float | None) -> None:
        self.ended.append((job.id, status))


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_a_retry_the_engine_turned_into_a_cancellation_is_reported_as_one(
    engine: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The cancel came during the attempt, before the worker heard of it: the worker asks
    for a retry, the engine ends the job cancelled, and the worker's metrics, log line and
    returned job say cancelled (they said "retried" while the job was cancelled)."""
    url = f"memory://{uuid.uuid4().hex}" if engine == "memory" else f"sqlite:///{tmp_path}/dtq.db"
    queue = Queue(["test_only"], url, namespace="reports")
    worker = Worker(["test_only"], url, namespace="reports", mode="thread")
    seen = Seen()
    worker.observers.append(seen)
    try:
        queue.enqueue("test_only", {"action": "fail"}, id="off", max_retries=3)
        queue.enqueue("test_only", {"action": "fail"}, id="again", max_retries=3)
        leases = worker.engine.fetch(["test_only"], count=2, lease_s=60, worker_id=worker.worker_id).leases
        assert [lease.job.id for lease in leases] == ["off", "again"]
        queue.cancel("off")  # asked while it runs; "again" is not cancelled
        ended = []
        for lease in leases:
            started = worker.begin(lease)
            assert not isinstance(started, Ended)
            outcome = worker.execute(worker._make_runner(), started)
            assert isinstance(outcome, Ended) and outcome.completion.outcome.status is JobStatus.SCHEDULED
            ended.append(outcome)
        with caplog.at_level(logging.INFO, logger="dtq.worker"):
            jobs = worker.record(ended)
        assert [(job.id, job.status) for job in jobs] == [
            ("off", JobStatus.CANCELLED),
            ("again", JobStatus.SCHEDULED),
        ]
        assert seen.ended == [("off", JobStatus.CANCELLED), ("again", JobStatus.SCHEDULED)]
        lines = {record.job_id: record for record in caplog.records if hasattr(record, "job_id")}  # type: ignore[attr-defined]
        assert lines["off"].status == "cancelled" and "retry in" not in lines["off"].getMessage()
        assert lines["again"].status == "retrying" and "retry in" in lines["again"].getMessage()
        stored = queue.get("off")
        assert stored is not None and stored.status is JobStatus.CANCELLED
    finally:
        worker.close()
        queue.close()
