"""Attempts that end oddly, and outcomes Redis will not store: none may hold up the other jobs.

Each test failed before its fix: a plugin's SystemExit ended its slot's thread
without a word (thread mode); a Retry with a wait that is no number, and an
outcome the server refused, stopped the worker's recording of outcomes, so
jobs that had succeeded ran again after their leases expired, counted as lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from dtqtest import RedisServer, running, wait_for, working

from dtq_core import EngineUnavailable, JobStatus, Queue, Worker


def settled(queue: Queue, job_ids: list[str]) -> bool:
    jobs = [queue.get(job_id) for job_id in job_ids]
    return all(job is not None and job.status.is_final for job in jobs)


def status(queue: Queue, job_id: str) -> tuple[JobStatus, int, int, str | None]:
    job = queue.get(job_id)
    assert job is not None
    return job.status, job.attempts, job.lost_leases, None if job.error is None else job.error.type


def echoes(queue: Queue, count: int) -> list[str]:
    return [queue.enqueue("test_only", {"action": "echo", "n": n}, id=f"echo-{n}").id for n in range(count)]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_plugin_that_calls_sys_exit_fails_its_job_and_the_slot_runs_the_next(
    queue: Queue, make_worker: Callable[..., Worker], mode: str
) -> None:
    queue.enqueue("test_only", {"action": "exit", "code": 2}, id="exits", max_retries=0)
    others = echoes(queue, 3)
    with running(make_worker(mode=mode, concurrency=1, poll_s=0.05)):
        wait_for(lambda: settled(queue, ["exits", *others]), timeout=20)
    assert status(queue, "exits") == (JobStatus.FAILED, 1, 0, "SystemExit")
    exited = queue.get("exits")
    assert exited is not None and exited.error is not None and exited.error.message == "2"
    for job_id in others:
        assert status(queue, job_id) == (JobStatus.SUCCEEDED, 1, 0, None)


@pytest.mark.parametrize("after", ["soon", -1])
def test_a_retry_whose_wait_is_no_number_of_seconds_fails_the_attempt_and_the_others_are_recorded(
    queue: Queue, make_worker: Callable[..., Worker], after: object
) -> None:
    queue.enqueue("test_only", {"action": "retry", "after": after}, id="odd-wait", max_retries=0)
    others = echoes(queue, 4)
    with running(make_worker(mode="thread", prefetch=8, poll_s=0.05, lease_s=2)):
        wait_for(lambda: settled(queue, ["odd-wait", *others]), timeout=20)
    assert status(queue, "odd-wait") == (JobStatus.FAILED, 1, 0, "Retry")
    odd = queue.get("odd-wait")
    assert odd is not None and odd.error is not None
    assert "Retry(after=...) must be a number of seconds from 0 up" in odd.error.message
    for job_id in others:
        assert status(queue, job_id) == (JobStatus.SUCCEEDED, 1, 0, None)


def test_an_outcome_the_server_refuses_is_recorded_as_a_failure_and_the_others_as_they_ended(
    redis_url: str, namespace: str, make_worker: Callable[..., Worker], redis_server: RedisServer
) -> None:
    with Queue(["test_only"], redis_url, namespace=namespace, max_payload_bytes=4 << 20) as queue:
        queue.enqueue("test_only", {"action": "echo", "blob": "x" * (1200 << 10)}, id="huge")
        others = echoes(queue, 4)
        client = redis_server.client
        before = client.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
        client.config_set("proto-max-bulk-len", "1mb")  # the huge job's result is refused
        try:
            with running(make_worker(mode="thread", prefetch=8, poll_s=0.05, lease_s=2)):
                wait_for(lambda: settled(queue, ["huge", *others]), timeout=30)
        finally:
            client.config_set("proto-max-bulk-len", before)
        assert status(queue, "huge") == (JobStatus.FAILED, 1, 0, "OutcomeRefused")
        huge = queue.get("huge")
        assert huge is not None and huge.error is not None
        assert huge.error.message.startswith(
            "the attempt ended succeeded, but its outcome could not be recorded"
        )
        for job_id in others:
            assert status(queue, job_id) == (JobStatus.SUCCEEDED, 1, 0, None)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_result_over_max_result_bytes_fails_its_attempt_and_says_so(
    queue: Queue, make_worker: Callable[..., Worker], mode: str
) -> None:
    # 600 "é", each written as the six characters \u00e9 in JSON: 3602 bytes.
    queue.enqueue("test_only", {"action": "duplicate_text", "text": "é" * 300}, id="big", max_retries=2)
    others = echoes(queue, 2)
    with running(make_worker(mode=mode, max_result_bytes=1000, poll_s=0.05)):
        wait_for(lambda: settled(queue, ["big", *others]), timeout=20)
    assert status(queue, "big") == (JobStatus.FAILED, 1, 0, "ResultTooLarge")  # no retry: it would be as big
    big = queue.get("big")
    assert big is not None and big.error is not None
    assert (
        "returned a result of 3602 bytes as JSON, over the worker's max_result_bytes (1000)"
        in big.error.message
    )
    for job_id in others:
        assert status(queue, job_id) == (JobStatus.SUCCEEDED, 1, 0, None)


def test_a_server_out_of_memory_is_a_passing_trouble_and_the_worker_carries_on(
    queue: Queue, make_worker: Callable[..., Worker], redis_server: RedisServer
) -> None:
    # OOM was a plain EngineError: it ended a worker's run.
    queue.enqueue("test_only", {"action": "echo"}, id="waiting")
    client = redis_server.client
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"])))  # no write fits now
    try:
        with pytest.raises(EngineUnavailable, match="it is at its maxmemory"):
            queue.enqueue("test_only", {"action": "echo"}, id="refused")
        with working(make_worker(mode="thread", poll_s=0.05)) as still_working:
            time.sleep(1.5)  # its fetches are refused meanwhile
            still_working()
            client.config_set("maxmemory", "0")
            assert queue.result("waiting", timeout=15) == {"action": "echo"}
            still_working()
    finally:
        client.config_set("maxmemory", "0")
    assert queue.get("refused") is None
