"""The producer: append, dedupe, allow-list, validation, results."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

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

SEED: dict[str, Any] = {
    "id": "test_job_one",
    "job": {"plugin": "test_only", "data": {"text": "To be processed!", "action": "duplicate_text"}},
}


def test_append_stores_a_queued_job_readable_by_id(dtq_queue: Queue) -> None:
    appended = dtq_queue.append(SEED)
    stored = dtq_queue.get("test_job_one")
    assert stored is not None
    assert appended.id == stored.id == "test_job_one"
    assert stored.status is JobStatus.QUEUED
    assert stored.to_dict()["job"] == SEED["job"]
    assert stored.created_at is not None
    assert dtq_queue.get("no-such-job") is None


def test_original_design_example_end_to_end(dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]) -> None:
    dtq_queue.append(SEED)
    done = dtq_make_worker().get_jobs()
    assert [job.id for job in done] == ["test_job_one"]
    assert dtq_queue.result("test_job_one", timeout=5) == "To be processed!To be processed!"
    record = dtq_queue.get("test_job_one")
    assert record is not None
    assert record.to_dict()["status"] == "succeeded"
    assert record.attempts == 1 and record.finished_at is not None


def test_appending_the_same_job_twice_creates_one_job(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    first = dtq_queue.append(SEED)
    again = dtq_queue.append(SEED)
    assert again.id == first.id
    assert len(dtq_make_worker().get_jobs()) == 1
    # still one job after it finished: the id stays taken while its record lives
    finished = dtq_queue.append(SEED)
    assert finished.status is JobStatus.SUCCEEDED
    assert dtq_make_worker().get_jobs() == []


def test_same_id_with_other_data_is_refused_and_the_original_kept(dtq_queue: Queue) -> None:
    dtq_queue.append(SEED)
    with pytest.raises(DuplicateJob) as caught:
        dtq_queue.enqueue("test_only", {"action": "echo"}, id="test_job_one")
    assert "already exists with a different plugin or data" in str(caught.value)
    stored = dtq_queue.get("test_job_one")
    assert stored is not None and stored.data == SEED["job"]["data"]


def test_allow_list_refuses_other_plugins(dtq_url: str, dtq_namespace: str) -> None:
    with (
        Queue(["test_only"], dtq_url, namespace=dtq_namespace) as dtq_queue,
        pytest.raises(PluginNotAllowed) as caught,
    ):
        dtq_queue.enqueue("other", {"x": 1})
    assert "'other' is not on the allow-list (test_only)" in str(caught.value)


def test_without_allow_list_only_installed_plugins_are_accepted(dtq_url: str, dtq_namespace: str) -> None:
    with Queue(None, dtq_url, namespace=dtq_namespace) as dtq_queue:
        with pytest.raises(UnknownPlugin) as caught:
            dtq_queue.enqueue("not_installed_here", {"x": 1})
        assert "no plugin named 'not_installed_here' is installed" in str(caught.value)
        assert dtq_queue.enqueue("test_only", {"action": "echo"}).status is JobStatus.QUEUED


def test_allow_listed_plugin_not_installed_here_is_queued_by_name(dtq_url: str, dtq_namespace: str) -> None:
    with Queue(["remote_only"], dtq_url, namespace=dtq_namespace) as dtq_queue:
        job = dtq_queue.enqueue("remote_only", {"anything": [1, 2]})
        stored = dtq_queue.get(job.id)
        assert stored is not None and stored.status is JobStatus.QUEUED
        assert [(q.plugin, q.waiting) for q in dtq_queue.stats().queues] == [("remote_only", 1)]


def test_plugin_validation_refuses_a_bad_job_before_it_is_queued(dtq_queue: Queue) -> None:
    with pytest.raises(ValidationError) as caught:
        dtq_queue.enqueue("test_only", {"action": "explode"}, id="bad")
    assert "data.action must be one of" in str(caught.value)
    with pytest.raises(ValidationError, match=r"needs data\.seconds"):
        dtq_queue.enqueue("test_only", {"action": "sleep"}, id="bad")
    assert dtq_queue.get("bad") is None


def test_oversized_payload_is_refused(dtq_url: str, dtq_namespace: str) -> None:
    with Queue(["test_only"], dtq_url, namespace=dtq_namespace, max_payload_bytes=1000) as dtq_queue:
        with pytest.raises(PayloadTooLarge) as caught:
            dtq_queue.enqueue("test_only", {"action": "echo", "blob": "x" * 2000}, id="big")
        assert "over the limit of 1000" in str(caught.value)
        assert dtq_queue.get("big") is None


def test_bad_input_leaves_queued_jobs_unharmed(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    dtq_queue.append(SEED)
    bad_inputs = [
        {"id": "test_job_one", "job": {"plugin": "test_only", "data": {"action": "echo"}}},
        {"id": "x", "job": {"plugin": "test_only", "data": "not a dict"}},
        {"id": "x", "job": {"plugin": "nope", "data": {}}},
        {"id": "x", "job": {"plugin": "test_only", "data": {"action": "bogus"}}},
        ["not", "a", "job"],
    ]
    for bad in bad_inputs:
        with pytest.raises((InvalidJob, DuplicateJob, UnknownPlugin)):
            dtq_queue.append(bad)  # type: ignore[arg-type]
    assert [job.result for job in dtq_make_worker().get_jobs()] == ["To be processed!To be processed!"]


def test_priority_orders_jobs_and_equal_priorities_stay_fifo(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    for name, priority in [("low", -5), ("a", 0), ("high", 10), ("b", 0), ("c", 0)]:
        dtq_queue.enqueue("test_only", {"action": "echo"}, id=name, priority=priority)
    assert [job.id for job in dtq_make_worker().get_jobs()] == ["high", "a", "b", "c", "low"]
    with pytest.raises(InvalidJob, match="priority must be an integer"):
        dtq_queue.enqueue("test_only", {"action": "echo"}, priority=10**6)


def test_result_blocks_until_a_worker_finishes(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    dtq_queue.enqueue("test_only", {"action": "sleep", "seconds": 0.3}, id="slow")
    worker = dtq_make_worker()
    thread = threading.Thread(target=worker.get_jobs)
    thread.start()
    assert dtq_queue.result("slow", timeout=10) == {"slept": 0.3}
    thread.join()


def test_result_of_a_failed_job_raises_with_its_error(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    dtq_queue.enqueue("test_only", {"action": "fail", "message": "no luck"}, id="doomed")
    dtq_make_worker().get_jobs()
    with pytest.raises(JobFailed) as caught:
        dtq_queue.result("doomed", timeout=5)
    assert "RuntimeError: no luck" in str(caught.value)
    assert caught.value.job.status is JobStatus.FAILED  # type: ignore[attr-defined]


def test_result_timeout_and_unknown_ids(dtq_queue: Queue) -> None:
    dtq_queue.enqueue("test_only", {"action": "echo"}, id="waiting")
    with pytest.raises(ResultTimeout, match="still queued"):
        dtq_queue.result("waiting", timeout=0.2)
    with pytest.raises(JobNotFound):
        dtq_queue.result("never-appended", timeout=0.2)
