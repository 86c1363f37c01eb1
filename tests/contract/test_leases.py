"""The worker and the engine's lease operations against a real Redis, in one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from dtq_core import Engine, JobStatus, Outcome, PluginLoadError, Queue, Worker


def test_failing_plugin_marks_the_job_failed_and_the_worker_carries_on(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    queue.enqueue("test_only", {"action": "fail", "message": "kaput"}, id="bad")
    queue.enqueue("test_only", {"action": "duplicate_text", "text": "ok"}, id="good")
    done = {job.id: job for job in make_worker().get_jobs()}
    assert done["bad"].status is JobStatus.FAILED
    assert done["good"].result == "okok"
    stored = queue.get("bad")
    assert stored is not None and stored.error is not None
    assert (stored.status, stored.error.type, stored.error.message) == (
        JobStatus.FAILED,
        "RuntimeError",
        "kaput",
    )
    assert "Traceback" in stored.error.traceback and "_fail" in stored.error.traceback


def test_echo_returns_the_data_as_result(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    data = {"action": "echo", "nested": {"list": [1, 2.5, None, True, "é"]}}
    queue.enqueue("test_only", data, id="e")
    make_worker().get_jobs()
    assert queue.result("e", timeout=5) == data


def test_worker_only_takes_jobs_of_plugins_it_serves(
    engine_url: str, namespace: str, make_worker: Callable[..., Worker]
) -> None:
    with Queue(["test_only", "elsewhere"], engine_url, namespace=namespace) as queue:
        queue.enqueue("elsewhere", {"x": 1}, id="foreign")
        queue.enqueue("test_only", {"action": "echo"}, id="mine")
        assert [job.id for job in make_worker().get_jobs()] == ["mine"]
        foreign = queue.get("foreign")
        assert foreign is not None and foreign.status is JobStatus.QUEUED


def test_worker_refuses_to_start_when_a_named_plugin_does_not_load(engine_url: str, namespace: str) -> None:
    with pytest.raises(Exception) as caught:
        Worker(["test_only", "missing_plugin"], engine_url, namespace=namespace)
    assert "no plugin named 'missing_plugin' is installed" in str(caught.value)


def test_completion_with_a_lost_lease_is_rejected(queue: Queue, engine: Engine) -> None:
    """A stale worker cannot overwrite the result of the job's new owner (fencing)."""
    queue.enqueue("test_only", {"action": "echo"}, id="contested")
    [stale] = engine.fetch(["test_only"], count=1, lease_s=0.05, worker_id="stale").leases
    time.sleep(0.1)
    assert engine.recover("test_only", max_lost_leases=3, ttl_s=60) == 1
    [owner] = engine.fetch(["test_only"], count=1, lease_s=30, worker_id="owner").leases
    assert owner.token != stale.token
    assert engine.renew([stale], 30).lost == ["contested"]
    assert not engine.complete(stale, Outcome(JobStatus.SUCCEEDED, result_json='"stale"'), ttl_s=60)
    assert engine.complete(owner, Outcome(JobStatus.SUCCEEDED, result_json='"owner"'), ttl_s=60)
    assert not engine.complete(stale, Outcome(JobStatus.SUCCEEDED, result_json='"stale"'), ttl_s=60)
    final = queue.get("contested")
    assert final is not None
    assert (final.result, final.attempts, final.lost_leases) == ("owner", 2, 1)


def test_repeated_completion_by_the_holder_is_idempotent(queue: Queue, engine: Engine) -> None:
    queue.enqueue("test_only", {"action": "echo"}, id="twice")
    [lease] = engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
    assert engine.complete(lease, Outcome(JobStatus.SUCCEEDED, result_json="1"), ttl_s=60)
    assert engine.complete(lease, Outcome(JobStatus.SUCCEEDED, result_json="2"), ttl_s=60)
    assert queue.result("twice", timeout=1) == 1


def test_unexpired_leases_are_not_recovered(queue: Queue, engine: Engine) -> None:
    queue.enqueue("test_only", {"action": "echo"}, id="held")
    assert len(engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases) == 1
    assert engine.recover("test_only", max_lost_leases=3, ttl_s=60) == 0
    assert engine.fetch(["test_only"], count=1, lease_s=30, worker_id="other").leases == []


def test_job_that_keeps_losing_its_lease_ends_dead(queue: Queue, engine: Engine) -> None:
    queue.enqueue("test_only", {"action": "echo"}, id="poison")
    for _ in range(3):
        assert len(engine.fetch(["test_only"], count=1, lease_s=0.01, worker_id="w").leases) == 1
        time.sleep(0.03)
        engine.recover("test_only", max_lost_leases=3, ttl_s=60)
    dead = queue.get("poison")
    assert dead is not None and dead.error is not None
    assert (dead.status, dead.lost_leases, dead.error.type) == (JobStatus.DEAD, 3, "LeaseLost")
    assert "lost its lease 3 times" in dead.error.message
    assert engine.fetch(["test_only"], count=1, lease_s=1, worker_id="w").leases == []
    [counts] = engine.stats().queues
    assert (counts.waiting, counts.scheduled, counts.running) == (0, 0, 0)


def test_heartbeat_keeps_a_job_longer_than_three_leases_with_its_worker(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    queue.enqueue("test_only", {"action": "sleep", "seconds": 1.2}, id="long")
    busy = make_worker(lease_s=0.3)
    thread = threading.Thread(target=busy.get_jobs)
    thread.start()
    rival = make_worker(lease_s=0.3)
    taken = []
    deadline = time.monotonic() + 1.1
    while time.monotonic() < deadline:  # a rival keeps trying to take it
        taken += rival.get_jobs()
        time.sleep(0.05)
    thread.join()
    assert taken == []
    final = queue.get("long")
    assert final is not None
    assert (final.status, final.attempts, final.lost_leases) == (JobStatus.SUCCEEDED, 1, 0)


def test_get_jobs_recovers_expired_leases_first(
    queue: Queue, engine: Engine, make_worker: Callable[..., Worker]
) -> None:
    queue.enqueue("test_only", {"action": "duplicate_text", "text": "x"}, id="orphan")
    assert len(engine.fetch(["test_only"], count=1, lease_s=0.01, worker_id="dead-worker").leases) == 1
    time.sleep(0.03)
    [job] = make_worker().get_jobs()
    assert (job.id, job.result, job.attempts) == ("orphan", "xx", 2)


def test_plugin_errors_at_load_are_typed(fake_site: object, engine_url: str, namespace: str) -> None:
    from dtqtest import FakeSite, unique_module

    assert isinstance(fake_site, FakeSite)
    module = unique_module()
    fake_site.add("dtq-plugin-broken", "1.0", {"broken": f"{module}:X"}, {module: "import nope_nope\n"})
    with pytest.raises(PluginLoadError, match=r"dtq-plugin-broken 1\.0 failed to import"):
        Worker(["broken"], engine_url, namespace=namespace)


def test_worker_without_allow_list_serves_a_plugin_installed_while_it_runs(
    engine_url: str, namespace: str, fake_site: object
) -> None:
    from dtqtest import FakeSite, running, unique_module, wait_for

    assert isinstance(fake_site, FakeSite)
    worker = Worker(None, engine_url, namespace=namespace, mode="thread", poll_s=0.05, rescan_s=0.1)
    with running(worker):
        module = unique_module()
        source = (
            "from dtq_core import Plugin\n\n"
            "class P(Plugin):\n    def process(self, job):\n        return 'late'\n"
        )

        fake_site.add("dtq-plugin-late", "1.0", {"late_plugin": f"{module}:P"}, {module: source})
        with Queue(None, engine_url, namespace=namespace) as queue:
            wait_for(lambda: queue.registry.refresh() or queue.registry.is_installed("late_plugin"))
            queue.enqueue("late_plugin", {}, id="late-job")
            assert queue.result("late-job", timeout=20) == "late"
    assert "late_plugin" in worker.plugins
