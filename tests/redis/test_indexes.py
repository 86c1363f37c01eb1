"""The dead and failed indexes against their jobs' records (prune.lua).

An index entry can outlive its record: the record expires after its retention,
and complete.lua prunes the index by age only when it adds to it. An entry can
also name an id that a later job took again and ended otherwise. Counts and
purges must follow the records, not the stale entries.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dtqtest import RedisServer, running, wait_for

from dtq_core import JobStatus, Queue, Worker
from dtq_core.engines.redis import Keys

MakeWorker = Callable[..., Worker]
TTL_S = 1.0


def _status(queue: Queue, job_id: str) -> str | None:
    job = queue.get(job_id)
    return None if job is None else job.status.value


def _ended(
    queue: Queue, make_worker: MakeWorker, jobs: dict[str, str], status: str, ttl_s: float = TTL_S
) -> None:
    """Run the jobs ({id: action}) on a worker whose records expire after ``ttl_s``; wait for ``status``."""
    with running(make_worker(mode="thread", poll_s=0.1, failure_ttl_s=ttl_s)):
        for job_id, action in jobs.items():
            queue.enqueue("test_only", {"action": action}, id=job_id)
        wait_for(lambda: all(_status(queue, job_id) == status for job_id in jobs))


def test_counts_leave_out_jobs_whose_records_expired(queue: Queue, make_worker: MakeWorker) -> None:
    _ended(queue, make_worker, {"f1": "fail", "f2": "fail"}, "failed")
    _ended(queue, make_worker, {"d1": "retry"}, "dead")  # a Retry with no retries left ends dead
    stats = queue.stats()
    assert (stats.failed, stats.dead) == (2, 1)
    time.sleep(TTL_S + 0.5)
    assert [queue.get(job_id) for job_id in ("f1", "f2", "d1")] == [None, None, None]
    stats = queue.stats()
    assert (stats.failed, stats.dead) == (0, 0)
    assert queue.engine.final_ids(JobStatus.FAILED) == []  # the entries went, not only the count


def test_an_id_taken_again_is_counted_once_and_a_purge_spares_its_new_record(
    queue: Queue, make_worker: MakeWorker
) -> None:
    _ended(queue, make_worker, {"order-42": "fail"}, "failed")
    time.sleep(TTL_S + 0.5)  # the record expired: the id is free again
    _ended(queue, make_worker, {"order-42": "retry"}, "dead")
    stats = queue.stats()
    assert (stats.failed, stats.dead) == (0, 1)
    assert queue.purge(JobStatus.FAILED) == 0
    job = queue.get("order-42")
    assert job is not None and job.status is JobStatus.DEAD
    assert queue.purge(JobStatus.DEAD) == 1
    assert queue.get("order-42") is None
    stats = queue.stats()
    assert (stats.failed, stats.dead) == (0, 0)


def test_a_purge_counts_the_records_it_deleted(queue: Queue, make_worker: MakeWorker) -> None:
    _ended(queue, make_worker, {"old": "fail"}, "failed")
    time.sleep(TTL_S + 0.5)
    # Kept longer than the expired job is old, these leave its entry in the index (complete.lua
    # prunes by their retention); a purge drops it and counts only the two records it deleted.
    _ended(queue, make_worker, {"new-1": "fail", "new-2": "fail"}, "failed", ttl_s=600)
    assert "old" in queue.engine.final_ids(JobStatus.FAILED)
    assert queue.purge(JobStatus.FAILED) == 2
    assert [queue.get(job_id) for job_id in ("new-1", "new-2")] == [None, None]
    assert queue.engine.final_ids(JobStatus.FAILED) == []


def test_a_per_minute_count_that_is_no_number_is_left_out_of_the_history(
    queue: Queue, make_worker: MakeWorker, redis_server: RedisServer, keys: Keys
) -> None:
    """Only something other than dtq writes a count that is no whole number; the history and
    `dtq stats` read the others instead of failing with a traceback."""
    _ended(queue, make_worker, {"f1": "fail"}, "failed")
    minute = int(time.time() * 1000) // 60_000
    redis_server.client.hset(keys.rate(minute), "test_only|succeeded", "many")
    counted = [m for m in queue.engine.history(2) if m.counts]
    assert counted, "the failure's minute is in the history"
    assert all(m.counts.get("test_only", {}).get("succeeded") is None for m in counted)
    assert sum(m.counts.get("test_only", {}).get("failed", 0) for m in counted) == 1


def test_a_read_only_user_still_reads_the_counts(
    queue: Queue, make_worker: MakeWorker, redis_server: RedisServer, namespace: str
) -> None:
    """Pruning writes; a monitoring user that may only read gets the counts as they stand."""
    _ended(queue, make_worker, {"f1": "fail"}, "failed")
    user = f"reader-{namespace}"
    redis_server.client.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        commands=["+@read", "+@connection", "+@transaction", "+time", "+client"],
    )
    try:
        url = redis_server.url.replace("redis://", f"redis://{user}:pw@")
        with Queue(["test_only"], url, namespace=namespace) as reader:
            assert reader.stats().failed == 1
    finally:
        redis_server.client.acl_deluser(user)


def test_a_purge_past_the_cap_takes_only_its_namespace_and_its_status(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The records past the index's cap are found by a scan of keys: a namespace whose name
    holds a wildcard must not reach another's, and a record it cannot read is left alone."""
    from dtq_core import ErrorInfo, Outcome

    def failed(queue: Queue, job_id: str) -> None:
        queue.enqueue("test_only", {"action": "permanent"}, id=job_id)
        [lease] = queue.engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
        assert queue.engine.complete(lease, Outcome(JobStatus.FAILED, error=ErrorInfo("E", "no")), ttl_s=60)
        time.sleep(0.002)

    options = {"index_cap": 1}
    with (
        Queue(["test_only"], redis_url, namespace="pu*ge", engine_options=options) as wild,
        Queue(["test_only"], redis_url, namespace="pu-other-ge", engine_options=options) as other,
    ):
        for n in range(3):
            failed(wild, f"w{n}")
            failed(other, f"o{n}")
        garbage = Keys(namespace="pu*ge").done("garbage")
        redis_server.client.hset(garbage, mapping={"payload": "{}", "state": "not json"})
        assert wild.purge(JobStatus.FAILED) == 3
        assert [other.get(f"o{n}") is not None for n in range(3)] == [True] * 3
        assert redis_server.client.exists(garbage) == 1  # unreadable, and in no index: not taken
        assert other.purge(JobStatus.FAILED) == 3
        redis_server.client.delete(garbage)
