"""The producer against a real Redis: append, dedupe, allow-list, validation, results."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from dtq_core import (
    DuplicateJob,
    InvalidJob,
    JobFailed,
    JobNotFound,
    JobStatus,
    PayloadTooLarge,
    PluginNotAllowed,
    Queue,
    ResultTimeout,
    UnknownPlugin,
    ValidationError,
    Worker,
)

SEED = {
    "id": "test_job_one",
    "job": {"plugin": "test_only", "data": {"text": "To be processed!", "action": "duplicate_text"}},
}


def test_append_stores_a_queued_job_readable_by_id(queue: Queue) -> None:
    appended = queue.append(SEED)
    stored = queue.get("test_job_one")
    assert stored is not None
    assert appended.id == stored.id == "test_job_one"
    assert stored.status is JobStatus.QUEUED
    assert stored.to_dict()["job"] == SEED["job"]
    assert stored.created_at is not None
    assert queue.get("no-such-job") is None


def test_original_design_example_end_to_end(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    queue.append(SEED)
    done = make_worker().get_jobs()
    assert [job.id for job in done] == ["test_job_one"]
    assert queue.result("test_job_one", timeout=5) == "To be processed!To be processed!"
    record = queue.get("test_job_one")
    assert record is not None
    assert record.to_dict()["status"] == "succeeded"
    assert record.attempts == 1 and record.finished_at is not None


def test_appending_the_same_job_twice_creates_one_job(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    first = queue.append(SEED)
    again = queue.append(SEED)
    assert again.id == first.id
    assert len(make_worker().get_jobs()) == 1
    # still one job after it finished: the id stays taken while its record lives
    finished = queue.append(SEED)
    assert finished.status is JobStatus.SUCCEEDED
    assert make_worker().get_jobs() == []


def test_same_id_with_other_data_is_refused_and_the_original_kept(queue: Queue) -> None:
    queue.append(SEED)
    with pytest.raises(DuplicateJob) as caught:
        queue.enqueue("test_only", {"action": "echo"}, id="test_job_one")
    assert "already exists with a different plugin or data" in str(caught.value)
    stored = queue.get("test_job_one")
    assert stored is not None and stored.data == SEED["job"]["data"]


def test_allow_list_refuses_other_plugins(engine_url: str, namespace: str) -> None:
    with (
        Queue(["test_only"], engine_url, namespace=namespace) as queue,
        pytest.raises(PluginNotAllowed) as caught,
    ):
        queue.enqueue("other", {"x": 1})
    assert "'other' is not on the allow-list (test_only)" in str(caught.value)


def test_without_allow_list_only_installed_plugins_are_accepted(engine_url: str, namespace: str) -> None:
    with Queue(None, engine_url, namespace=namespace) as queue:
        with pytest.raises(UnknownPlugin) as caught:
            queue.enqueue("not_installed_here", {"x": 1})
        assert "no plugin named 'not_installed_here' is installed" in str(caught.value)
        assert queue.enqueue("test_only", {"action": "echo"}).status is JobStatus.QUEUED


def test_allow_listed_plugin_not_installed_here_is_queued_by_name(engine_url: str, namespace: str) -> None:
    with Queue(["remote_only"], engine_url, namespace=namespace) as queue:
        job = queue.enqueue("remote_only", {"anything": [1, 2]})
        stored = queue.get(job.id)
        assert stored is not None and stored.status is JobStatus.QUEUED
        assert [(q.plugin, q.waiting) for q in queue.stats().queues] == [("remote_only", 1)]


def test_plugin_validation_refuses_a_bad_job_before_it_is_queued(queue: Queue) -> None:
    with pytest.raises(ValidationError) as caught:
        queue.enqueue("test_only", {"action": "explode"}, id="bad")
    assert "data.action must be one of" in str(caught.value)
    with pytest.raises(ValidationError, match=r"needs data\.seconds"):
        queue.enqueue("test_only", {"action": "sleep"}, id="bad")
    assert queue.get("bad") is None


def test_oversized_payload_is_refused(engine_url: str, namespace: str) -> None:
    with Queue(["test_only"], engine_url, namespace=namespace, max_payload_bytes=1000) as queue:
        with pytest.raises(PayloadTooLarge) as caught:
            queue.enqueue("test_only", {"action": "echo", "blob": "x" * 2000}, id="big")
        assert "over the limit of 1000" in str(caught.value)
        assert queue.get("big") is None


def test_bad_input_leaves_queued_jobs_unharmed(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    queue.append(SEED)
    bad_inputs = [
        {"id": "test_job_one", "job": {"plugin": "test_only", "data": {"action": "echo"}}},
        {"id": "x", "job": {"plugin": "test_only", "data": "not a dict"}},
        {"id": "x", "job": {"plugin": "nope", "data": {}}},
        {"id": "x", "job": {"plugin": "test_only", "data": {"action": "bogus"}}},
        ["not", "a", "job"],
    ]
    for bad in bad_inputs:
        with pytest.raises((InvalidJob, DuplicateJob, PluginNotAllowed)):
            queue.append(bad)  # type: ignore[arg-type]
    assert [job.result for job in make_worker().get_jobs()] == ["To be processed!To be processed!"]


def test_priority_orders_jobs_and_equal_priorities_stay_fifo(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    for name, priority in [("low", -5), ("a", 0), ("high", 10), ("b", 0), ("c", 0)]:
        queue.enqueue("test_only", {"action": "echo"}, id=name, priority=priority)
    assert [job.id for job in make_worker().get_jobs()] == ["high", "a", "b", "c", "low"]
    with pytest.raises(InvalidJob, match="priority must be an integer"):
        queue.enqueue("test_only", {"action": "echo"}, priority=10**6)


def test_result_blocks_until_a_worker_finishes(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    queue.enqueue("test_only", {"action": "sleep", "seconds": 0.3}, id="slow")
    worker = make_worker()
    thread = threading.Thread(target=worker.get_jobs)
    thread.start()
    assert queue.result("slow", timeout=10) == {"slept": 0.3}
    thread.join()


def test_result_of_a_failed_job_raises_with_its_error(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    queue.enqueue("test_only", {"action": "fail", "message": "no luck"}, id="doomed")
    make_worker().get_jobs()
    with pytest.raises(JobFailed) as caught:
        queue.result("doomed", timeout=5)
    assert "RuntimeError: no luck" in str(caught.value)
    assert caught.value.job.status is JobStatus.FAILED  # type: ignore[attr-defined]


def test_result_timeout_and_unknown_ids(queue: Queue) -> None:
    queue.enqueue("test_only", {"action": "echo"}, id="waiting")
    with pytest.raises(ResultTimeout, match="still queued"):
        queue.result("waiting", timeout=0.2)
    with pytest.raises(JobNotFound):
        queue.result("never-appended", timeout=0.2)
