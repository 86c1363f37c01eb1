"""A process-mode job process records a lone job's success itself (runner.ChildRecorder).

The worker would otherwise be woken to record it, on the way from the job's end
to the producer who waits for it. Only the success of a job no other follows,
with no time limit and a result within max_result_bytes, is recorded there; the
worker records every other ending, in batches, and never records one twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from dtq_core import JobStatus, Queue, Worker
from dtq_core.caller import Control
from dtq_core.engine import Lease, Recorded
from dtq_core.engines.memory import MemoryEngine
from dtq_core.job import Job
from dtq_core.plugin import PluginRegistry
from dtq_core.runner import ProcessRunner
from dtq_core.worker import Observer

RESULT_TTL_S = 3600


def _spec(url: str, namespace: str, **overrides: Any) -> dict[str, Any]:
    spec = {
        "url": url,
        "options": {"prefix": "dtq", "namespace": namespace},
        "result_ttl_s": RESULT_TTL_S,
        "max_result_bytes": 1_000_000,
    }
    return {**spec, **overrides}


@pytest.fixture
def registry() -> PluginRegistry:
    return PluginRegistry(["test_only"])


@pytest.fixture
def make_runner(queue: Queue, registry: PluginRegistry) -> Iterator[Any]:
    made: list[ProcessRunner] = []

    def make(spec: dict[str, Any] | None) -> ProcessRunner:
        runner = ProcessRunner(registry, queue.engine, queue, spec)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


def _leased(queue: Queue, data: dict[str, Any], **options: Any) -> Lease:
    job = queue.enqueue("test_only", data, **options)
    [lease] = queue.engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
    assert lease.job.id == job.id
    return lease


def _run(runner: ProcessRunner, registry: PluginRegistry, lease: Lease, *, alone: bool = True) -> Any:
    runner.last_alone(lease if alone else None)
    return runner.run(Control(lease), None, registry.get("test_only"))


def test_a_job_process_records_a_lone_success_itself(
    queue: Queue, registry: PluginRegistry, make_runner: Any, redis_url: str, namespace: str
) -> None:
    runner = make_runner(_spec(redis_url, namespace))
    lease = _leased(queue, {"action": "echo", "n": 1})
    attempt = _run(runner, registry, lease)
    assert attempt is not None and json.loads(attempt.result_json) == {"action": "echo", "n": 1}
    assert runner.recorded is Recorded.STORED
    # Stored by the child: this process recorded nothing.
    stored = queue.get(lease.job.id)
    assert stored.status is JobStatus.SUCCEEDED
    assert stored.result == {"action": "echo", "n": 1}


def test_without_a_recorder_or_for_other_endings_the_worker_records(
    queue: Queue, registry: PluginRegistry, make_runner: Any, redis_url: str, namespace: str
) -> None:
    runner = make_runner(_spec(redis_url, namespace))
    lease = _leased(queue, {"action": "echo"})
    assert _run(runner, registry, lease, alone=False) is not None  # others may follow: batched
    assert runner.recorded is None
    assert queue.get(lease.job.id).status is JobStatus.RUNNING
    cases: list[tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]] = [
        (None, {"action": "echo"}, {}),  # no recorder: a worker whose engine is its own
        (_spec(redis_url, namespace), {"action": "fail", "message": "no"}, {}),
        (_spec(redis_url, namespace), {"action": "echo"}, {"timeout_s": 60}),  # the worker's clock decides
        (_spec(redis_url, namespace, max_result_bytes=100), {"action": "echo", "big": "x" * 200}, {}),
    ]
    for spec, data, options in cases:
        runner = make_runner(spec)
        lease = _leased(queue, data, **options)
        assert _run(runner, registry, lease) is not None
        assert runner.recorded is None, (spec, data, options)
        assert queue.get(lease.job.id).status is JobStatus.RUNNING  # left to the worker


def test_a_job_process_told_a_lost_lease_records_nothing(
    queue: Queue, registry: PluginRegistry, make_runner: Any, redis_url: str, namespace: str
) -> None:
    runner = make_runner(_spec(redis_url, namespace))
    lease = _leased(queue, {"action": "echo"})
    stale = Lease(lease.job, token=lease.token + "-not-any-more")
    assert _run(runner, registry, stale) is not None
    assert runner.recorded is Recorded.REFUSED
    assert queue.get(lease.job.id).status is JobStatus.RUNNING


def test_a_job_process_that_cannot_reach_the_server_leaves_the_outcome_to_its_worker(
    queue: Queue, registry: PluginRegistry, make_runner: Any, namespace: str
) -> None:
    unreachable = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once
    options = {"prefix": "dtq", "namespace": namespace, "retries": 0, "connect_timeout_s": 0.5}
    runner = make_runner(_spec(unreachable, namespace, options=options))
    lease = _leased(queue, {"action": "echo"})
    assert _run(runner, registry, lease) is not None
    assert runner.recorded is None
    assert queue.get(lease.job.id).status is JobStatus.RUNNING


class _Counting(Observer):
    def __init__(self) -> None:
        self.ended: list[tuple[str, JobStatus]] = []

    def attempt_ended(self, job: Job, status: JobStatus, duration_s: float | None) -> None:
        self.ended.append((job.id, status))


@pytest.mark.parametrize("prefetch", [1, 4])
def test_a_process_worker_reports_each_outcome_once_whoever_recorded_it(
    prefetch: int, queue: Queue, make_worker: Any
) -> None:
    failing = queue.enqueue("test_only", {"action": "fail", "message": "no"}, max_retries=0)
    jobs = [queue.enqueue("test_only", {"action": "echo", "n": n}) for n in range(9)]
    worker: Worker = make_worker(mode="process", prefetch=prefetch)
    assert worker._recorder is not None
    counting = _Counting()
    worker.observers.append(counting)
    by_worker = _recorded_by(worker)
    done = worker.get_jobs()
    # Only the last job, after which the queue was empty, is recorded by its job process:
    # the worker records the others in batches, and the failure.
    assert sorted(by_worker) == sorted([failing.id, *(job.id for job in jobs[:-1])])
    assert sorted(job.id for job in done) == sorted([*(job.id for job in jobs), failing.id])
    assert sorted(counting.ended) == sorted(
        [*((job.id, JobStatus.SUCCEEDED) for job in jobs), (failing.id, JobStatus.FAILED)]
    )
    for job in jobs:
        assert queue.result(job.id, timeout=5) == job.data
    assert queue.get(failing.id).status is JobStatus.FAILED


def _recorded_by(worker: Worker) -> list[str]:
    """The ids of the outcomes the worker itself sends its engine from now on."""
    engine: Any = worker.engine
    ids: list[str] = []
    complete_many, complete_and_fetch = engine.complete_many, engine.complete_and_fetch

    def many(completions: Any) -> Any:
        ids.extend(c.lease.job.id for c in completions)
        return complete_many(completions)

    def and_fetch(completions: Any, *args: Any, **kwargs: Any) -> Any:
        ids.extend(c.lease.job.id for c in completions)
        return complete_and_fetch(completions, *args, **kwargs)

    engine.complete_many, engine.complete_and_fetch = many, and_fetch
    return ids


def test_only_an_engine_chosen_by_the_url_of_a_server_is_opened_by_job_processes(
    redis_url: str, namespace: str
) -> None:
    by_url = Worker(["test_only"], redis_url, namespace=namespace, mode="process")
    given = Worker(["test_only"], engine=by_url.engine, mode="process")
    in_memory = Worker(["test_only"], engine=MemoryEngine(), mode="process")
    try:
        assert by_url._recorder is not None
        assert by_url._recorder["options"]["namespace"] == namespace
        assert given._recorder is None  # an instance may be a subclass of its own, or wrapped
        assert in_memory._recorder is None
    finally:
        by_url.engine.close()
