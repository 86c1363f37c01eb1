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

import attrs
import pytest

from dtq_core import JobStatus, Queue, Worker
from dtq_core import worker as worker_module
from dtq_core.caller import Control
from dtq_core.engine import Completion, Lease, Outcome, Recorded
from dtq_core.engines.memory import MemoryEngine
from dtq_core.errors import EngineUnavailable
from dtq_core.job import Job
from dtq_core.plugin import PluginRegistry
from dtq_core.retry import Ending
from dtq_core.runner import ProcessRunner, recorded_success
from dtq_core.worker import Ended, Observer, Started, _Acknowledger

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


def _succeed(queue: Queue, lease: Lease) -> None:
    """Record the lease's success as its job process would."""
    queue.engine.complete(lease, Outcome(JobStatus.SUCCEEDED, result_json='{"done": 1}'), ttl_s=60)


def test_the_success_of_a_delivery_is_told_from_any_other_ending(queue: Queue) -> None:
    lease = _leased(queue, {"action": "echo"})
    assert recorded_success(queue.engine, lease) is None  # still running
    _succeed(queue, lease)
    found = recorded_success(queue.engine, lease)
    assert found is not None and found.result == {"done": 1}
    other = Lease(attrs.evolve(lease.job, attempts=lease.job.attempts + 1), lease.token)
    assert recorded_success(queue.engine, other) is None  # another delivery's
    failed = _leased(queue, {"action": "echo"})
    queue.engine.complete(failed, Outcome(JobStatus.FAILED), ttl_s=60)
    assert recorded_success(queue.engine, failed) is None


def test_a_child_that_recorded_and_died_before_saying_so_still_reports_the_success(
    queue: Queue, make_runner: Any, redis_url: str, namespace: str
) -> None:
    # Killed past a grace period, or for a cancel, between its record and its done message.
    runner = make_runner(_spec(redis_url, namespace))
    lease = _leased(queue, {"action": "echo"})
    runner.last_alone(lease)
    assert runner._recorded_before_death(Control(lease)) is None  # not recorded: lost, as before
    _succeed(queue, lease)
    attempt = runner._recorded_before_death(Control(lease))
    assert attempt is not None and attempt.ending is Ending.OK
    assert json.loads(attempt.result_json) == {"done": 1}
    assert runner.recorded is Recorded.STORED
    runner.recorded = None
    runner.last_alone(None)  # a job its child was not told to record
    assert runner._recorded_before_death(Control(lease)) is None
    assert runner.recorded is None


def test_a_lease_gone_because_the_job_process_recorded_the_success_is_not_a_lost_lease(
    queue: Queue, make_worker: Any
) -> None:
    worker: Worker = make_worker(mode="process")
    recorded, lost = (_leased(queue, {"action": "echo"}) for _ in range(2))
    for lease in (recorded, lost):
        assert isinstance(worker.begin(lease), Started)
    _succeed(queue, recorded)
    queue.engine.complete(lost, Outcome(JobStatus.FAILED), ttl_s=60)  # another owner's ending, say
    worker._lease_lost(recorded)
    worker._lease_lost(lost)
    assert not worker._in_hand[(recorded.job.id, recorded.token)].cancel.is_set()
    assert worker._in_hand[(lost.job.id, lost.token)].cancel.is_set()


def test_outcomes_recorded_by_job_processes_are_reported_whatever_the_engine_does(
    queue: Queue, make_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The acknowledger gives up on outcomes the engine will not take at shutdown; those its
    # job processes recorded need no engine, and are reported all the same.
    worker: Worker = make_worker(mode="process")
    counting = _Counting()
    worker.observers.append(counting)
    recorded, unrecorded = (_leased(queue, {"action": "echo"}) for _ in range(2))
    _succeed(queue, recorded)
    outcome = Outcome(JobStatus.SUCCEEDED, result_json="1")
    ended = [
        Ended(Completion(recorded, outcome, 60), 0.1, recorded=Recorded.STORED),
        Ended(Completion(unrecorded, outcome, 60), 0.1),
    ]

    def away(completions: Any) -> Any:
        raise EngineUnavailable("the server is away")

    worker.engine.complete_many = away  # type: ignore[method-assign]
    monkeypatch.setattr(worker_module.time, "sleep", lambda _s: None)  # its backoff between tries
    acks = _Acknowledger(worker, keep_finished=True)
    acks._closing = True  # a shutdown: a batch the engine refuses is given up after a few tries
    try:
        jobs = acks._record(list(ended))
    finally:
        acks.close()
    assert [job.id for job in jobs] == [recorded.job.id]
    assert counting.ended == [(recorded.job.id, JobStatus.SUCCEEDED)]
