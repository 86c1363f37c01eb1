"""On the engines that can find them, a purge takes the jobs past the index cap too."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dtq_core import ErrorInfo, JobStatus, Outcome, Queue


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_a_purge_deletes_the_jobs_past_the_index_cap_too(engine: str, tmp_path: Path) -> None:
    url = f"memory://{uuid.uuid4().hex}" if engine == "memory" else f"sqlite:///{tmp_path / 'dtq.db'}"
    with Queue(["test_only"], url, engine_options={"index_cap": 2}) as queue:
        for n in range(5):
            queue.enqueue("test_only", {"action": "permanent"}, id=f"j{n}")
            [lease] = queue.engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
            failed = Outcome(JobStatus.FAILED, error=ErrorInfo("Permanent", "failed for good"))
            assert queue.engine.complete(lease, failed, ttl_s=60)
        assert queue.stats().failed == 2  # listed: the newest two
        assert queue.purge(JobStatus.FAILED) == 5
        assert [queue.get(f"j{n}") for n in range(5)] == [None] * 5
