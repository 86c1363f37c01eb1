"""Behaviour only the Redis engine has: its keys, its connection errors."""

from __future__ import annotations

import contextlib
import enum
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from dtqtest import RedisServer, free_port, running, stop_when_idle, wait_for, working

from dtq_core import (
    Completion,
    EngineError,
    EngineUnavailable,
    JobFailed,
    JobStatus,
    Outcome,
    Queue,
    Recorded,
    ResultTimeout,
    Worker,
)
from dtq_core.engines.redis import Keys, RedisEngine
from dtq_core.engines.redis.engine import _changing_role

MakeWorker = Callable[..., Worker]


def thread_worker(make_worker: MakeWorker, **options: object) -> Worker:
    options.setdefault("mode", "thread")
    options.setdefault("poll_s", 0.1)
    return make_worker(**options)


def calls_during_lone_jobs(
    worker: Worker, queue: Queue, method: str, jobs: int, monkeypatch: pytest.MonkeyPatch
) -> int:
    """How often the worker's engine ``method`` is called while ``jobs`` jobs run one at a
    time (each appended once the one before has its result), after three to start it."""
    calls = 0
    original = getattr(worker.engine, method)

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    with running(worker):
        for n in range(3):  # started, and idle in its blocking wait
            queue.result(queue.enqueue("test_only", {"action": "echo", "n": n}).id, timeout=20)
        monkeypatch.setattr(worker.engine, method, counted)
        for n in range(jobs):
            assert queue.result(queue.enqueue("test_only", {"action": "echo", "n": n}).id, timeout=20)
    return calls


def test_ids_in_a_queue_without_a_record_are_dropped(
    queue: Queue, keys: Keys, redis_url: str, make_worker: Callable[..., Worker]
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.zadd(keys.ready("test_only"), {"ghost": -1})
    client.close()
    queue.enqueue("test_only", {"action": "echo"}, id="real")
    assert [job.id for job in make_worker().get_jobs()] == ["real"]


def test_every_key_of_a_finished_job_has_a_lifetime(
    queue: Queue, make_worker: MakeWorker, keys: Keys, redis_server: object
) -> None:
    queue.enqueue(
        "test_only", {"action": "flaky", "failures": 1}, id="f", max_retries=1, retry_backoff_s=0.01
    )
    with running(thread_worker(make_worker)):
        queue.result("f", timeout=20)
    client = redis_server.client  # type: ignore[attr-defined]
    for key in client.scan_iter(match=f"{keys.base}:*"):
        kind = client.type(key)
        ttl = client.ttl(key)
        # No lifetime, but a bounded size: one counter, one name per plugin, the
        # pruned worker registry, the events stream (MAXLEN ~ events_max), the
        # indexes capped by count and age, and the succeeded records, each with
        # its expiry in a sorted set that sweeps delete them by.
        fixed_size = key in (
            keys.seq,
            keys.plugins,
            keys.workers,
            keys.events,
            keys.succeeded,
            keys.expiry,
        ) or key.startswith(f"{keys.base}:index:")
        bounded = ttl > 0 or fixed_size
        assert bounded, f"{key} ({kind}) has no lifetime"
    expiries = dict(client.zrange(keys.expiry, 0, -1, withscores=True))
    assert set(client.hkeys(keys.succeeded)) == set(expiries) == {"f"}
    assert time.time() * 1000 < expiries["f"] < (time.time() + 86_400 + 60) * 1000


def test_the_events_stream_stays_near_its_cap_when_batches_trim_it_once(
    redis_url: str, namespace: str, keys: Keys, redis_server: RedisServer, make_worker: MakeWorker
) -> None:
    # A batch adds its events untrimmed and trims once at the end (lib/events.lua).
    cap, options = 200, {"events_max": 200}
    with Queue(["test_only"], redis_url, namespace=namespace, engine_options=options) as queue:
        jobs = queue.enqueue_many("test_only", [{"action": "echo", "n": n} for n in range(1500)])
        client = redis_server.client
        assert client.xlen(keys.events) == 15  # a hundred appended jobs' events per entry
        worker = thread_worker(make_worker, prefetch=64, engine_options=options)
        assert len(worker.get_jobs()) == 1500
        # MAXLEN ~ drops whole stream nodes (100 entries each by default), so up to one node over.
        assert cap <= client.xlen(keys.events) <= cap + 100
        newest = queue.events(after=None, limit=10_000)[-1]
        assert newest.type.value == "succeeded" and newest.job_id in {job.id for job in jobs}
        # Fields left out of an event (no error, attempt 0, no worker yet) read back as their defaults.
        assert (newest.attempt, newest.worker, newest.error_type) == (1, worker.worker_id, None)
        appended = queue.engine.events(after=None, limit=1)
        single = queue.enqueue("test_only", {"action": "echo"})
        [event] = [e for e in queue.events(after=appended[0].id, limit=10_000) if e.job_id == single.id]
        assert (event.type.value, event.attempt, event.worker) == ("appended", 0, None)


def test_succeeded_records_are_hidden_at_expiry_and_swept_by_workers(
    queue: Queue, make_worker: MakeWorker, keys: Keys, redis_server: RedisServer
) -> None:
    jobs = queue.enqueue_many("test_only", [{"action": "echo", "n": n} for n in range(30)])
    done = thread_worker(make_worker, result_ttl_s=1, prefetch=8).get_jobs()
    assert len(done) == 30 and queue.get(jobs[0].id) is not None
    client = redis_server.client
    assert client.hlen(keys.succeeded) == 30
    time.sleep(1.2)
    assert queue.get(jobs[0].id) is None  # expired: never read back, swept or not
    # The id is free again once its record expired, even before a sweep.
    again = queue.enqueue("test_only", {"action": "echo", "other": True}, id=jobs[1].id)
    assert again.data == {"action": "echo", "other": True}
    thread_worker(make_worker).get_jobs()  # lease recovery sweeps
    assert client.hlen(keys.succeeded) == 1  # only the new job's record
    assert client.zcard(keys.expiry) == 1


def test_unreachable_redis_is_reported_with_its_url(namespace: str) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with Queue(["test_only"], url, namespace=namespace) as queue, pytest.raises(EngineUnavailable) as caught:
        queue.enqueue("test_only", {"action": "echo"})
    message = str(caught.value)
    assert "cannot reach Redis at redis://:***@127.0.0.1" in message
    assert "hunter2" not in message
    assert "DTQ_URL" in message


def _kill_named(client: redis.Redis, name: str) -> int:
    """Close the server's end of every connection named ``name``; how many there were."""
    ids = [c["id"] for c in client.client_list(_type="normal") if c["name"] == name]
    return sum(int(client.execute_command("CLIENT", "KILL", "ID", i)) for i in ids)


def test_calls_after_their_kept_connections_were_dropped_reconnect_and_lose_nothing(
    redis_url: str, namespace: str, keys: Keys, redis_server: RedisServer
) -> None:
    # A single call (an append, a completion) is first tried on a kept connection
    # outside the retry machinery; a dropped one must still fall back to it.
    url = f"{redis_url}?client_name=dtq-dropped-{namespace}"
    name = f"dtq-dropped-{namespace}"
    with (
        Queue(["test_only"], url, namespace=namespace) as queue,
        running(Worker(["test_only"], url, namespace=namespace, mode="thread", poll_s=0.1)),
    ):
        for n in range(3):
            job = queue.enqueue("test_only", {"action": "echo", "n": n})
            assert queue.result(job.id, timeout=20) == {"action": "echo", "n": n}
            # Producer's and worker's connections alike, between one job and the next.
            assert _kill_named(redis_server.client, name) >= 2
        ids = [queue.enqueue("test_only", {"action": "echo", "n": n}, id=f"after-{n}").id for n in range(3)]
        assert [queue.result(i, timeout=20)["n"] for i in ids] == [0, 1, 2]
    # Each job once: six records of success, no live job left.
    assert redis_server.client.hlen(keys.succeeded) == 6
    assert redis_server.client.hlen(keys.jobs) == 0


def test_an_idle_worker_blocks_instead_of_polling(
    queue: Queue, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    def calls() -> int:
        stats = redis_server.client.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_blpop", "cmdstat_evalsha"))

    with running(thread_worker(make_worker, poll_s=1.0)):
        time.sleep(0.5)  # started and idle
        before = calls()
        time.sleep(2.0)
        during = calls() - before
    # about two 1 s blocking waits, two fetches and a heartbeat: a busy loop would make hundreds
    assert during <= 12, during


def test_a_fetch_leaves_one_wake_up_hint_per_job_still_queued_and_none_stale(
    redis_url: str, namespace: str, keys: Keys, redis_server: RedisServer
) -> None:
    # Hints are pushed per job queued (up to the cap) and popped by blocked workers; a
    # plain fetch takes jobs without popping theirs. Left behind, each would wake an idle
    # worker to fetch nothing. Two plugins in one fetch: each keeps its own hints.
    client = redis_server.client
    with Queue(["test_only", "other"], redis_url, namespace=namespace, engine_options={"signal_cap": 5}) as q:
        q.enqueue_many("test_only", [{"action": "echo", "n": n} for n in range(8)])
        q.enqueue_many("other", [{"n": n} for n in range(3)])
        signal, other_signal = keys.signal("test_only"), keys.signal("other")
        assert (client.llen(signal), client.llen(other_signal)) == (5, 3)  # capped at 5

        def fetch(count: int) -> list[str]:
            leases = q.engine.fetch(["other", "test_only"], count=count, lease_s=30, worker_id="w").leases
            return [lease.job.plugin for lease in leases]

        assert fetch(4) == ["other"] * 3 + ["test_only"]  # 7 test_only jobs left: 5 hints stay
        assert (client.llen(signal), client.llen(other_signal)) == (5, 0)
        assert fetch(3) == ["test_only"] * 3  # 4 left
        assert client.llen(signal) == 4
        assert fetch(10) == ["test_only"] * 4
        assert not client.exists(signal, other_signal)
        assert q.engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").more is False
        # A job queued now has its hint again, and the next blocking wait takes it at once.
        q.enqueue("test_only", {"action": "echo", "n": 8})
        assert client.llen(signal) == 1
        started = time.monotonic()
        assert (
            len(q.engine.wait_and_fetch(["test_only"], 5.0, count=5, lease_s=30, worker_id="w").leases) == 1
        )
        assert time.monotonic() - started < 2.0
        assert not client.exists(signal)


def test_a_job_left_queued_by_a_fetch_keeps_a_hint_to_wake_a_blocked_worker(
    redis_url: str, namespace: str, keys: Keys, redis_server: RedisServer
) -> None:
    # A worker woken by one plugin's hint may take another plugin's job; a delayed job
    # promoted by a fetch that takes something else gets no hint from its append. Either
    # way a job is left queued, and a worker blocked on its plugin must still wake.
    client = redis_server.client
    signal = keys.signal("test_only")
    with Queue(["test_only", "other"], redis_url, namespace=namespace) as q:

        def fetch_one_other_first() -> list[str]:
            leases = q.engine.fetch(["other", "test_only"], count=1, lease_s=30, worker_id="w1").leases
            return [lease.job.id for lease in leases]

        def blocked_worker_takes(job_id: str) -> None:
            started = time.monotonic()
            batch = q.engine.wait_and_fetch(["test_only"], 5.0, count=5, lease_s=30, worker_id="w2")
            assert [lease.job.id for lease in batch.leases] == [job_id]
            assert time.monotonic() - started < 2.0  # woken, not timed out

        q.enqueue("test_only", {"action": "echo"}, id="a1")
        q.enqueue("other", {"n": 1}, id="b1")
        assert client.lpop(signal) == "1"  # as the BLPOP of the worker that then takes b1
        assert fetch_one_other_first() == ["b1"]
        blocked_worker_takes("a1")

        q.enqueue("test_only", {"action": "echo"}, id="a2", delay_s=0.2)
        q.enqueue("other", {"n": 2}, id="b2")
        time.sleep(0.3)
        assert fetch_one_other_first() == ["b2"]  # promotes a2, takes b2
        blocked_worker_takes("a2")


def test_a_fetch_counts_delayed_jobs_due_but_not_promoted_yet_as_left(queue: Queue) -> None:
    # A call promotes at most 500 due jobs per plugin; the rest are due at once (next due
    # 0), and a worker told its queue ran dry would wait for them needlessly.
    queue.enqueue_many("test_only", [{"action": "echo", "n": n} for n in range(600)], delay_s=0.05)
    time.sleep(0.2)
    first = queue.engine.fetch(["test_only"], count=600, lease_s=30, worker_id="w")
    assert (len(first.leases), first.next_due_s, first.more) == (500, 0, True)
    rest = queue.engine.fetch(["test_only"], count=600, lease_s=30, worker_id="w")
    assert (len(rest.leases), rest.next_due_s, rest.more) == (100, None, False)


def test_a_worker_that_drained_a_backlog_leaves_no_stale_hints_for_its_idle_waits(
    queue: Queue, make_worker: MakeWorker, keys: Keys, redis_server: RedisServer
) -> None:
    # Jobs queued before a worker starts are taken by plain fetches; their hints used to
    # stay, and each later idle wait popped one and fetched nothing.
    queue.enqueue_many("test_only", [{"action": "echo", "n": n} for n in range(50)])
    assert redis_server.client.llen(keys.signal("test_only")) == 50
    worker = thread_worker(make_worker, poll_s=5.0, prefetch=4)
    fetches = 0  # blocking waits (each with its fetch)
    wait_and_fetch = worker.engine.wait_and_fetch

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal fetches
        fetches += 1
        return wait_and_fetch(*args, **kwargs)  # type: ignore[arg-type]

    worker.engine.wait_and_fetch = counted  # type: ignore[method-assign]
    with running(worker):
        deadline = time.monotonic() + 30
        while redis_server.client.hlen(keys.jobs) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert redis_server.client.hlen(keys.jobs) == 0
        time.sleep(0.5)  # idle: back in its blocking wait
        assert redis_server.client.llen(keys.signal("test_only")) == 0
    # Once the queue is empty, one blocking wait (a second if a thread switch was slow),
    # not one per job's leftover hint.
    assert fetches <= 2, fetches


def test_an_idle_worker_asked_to_stop_stops_at_once_not_when_its_wait_ends(
    make_worker: MakeWorker, keys: Keys, redis_server: RedisServer
) -> None:
    # Its BLPOP also waits on the worker's own wake-up list, which stop() pushes to (from a
    # thread of its own); before, the worker stopped only when the 5 s wait timed out.
    worker = thread_worker(make_worker, poll_s=30.0)
    assert stop_when_idle(worker) < 2.0
    assert not redis_server.client.exists(keys.wake(worker.worker_id))  # the wait took the push


def test_a_wake_up_left_for_no_one_expires(queue: Queue, keys: Keys, redis_server: RedisServer) -> None:
    queue.engine.wake("nobody")
    assert redis_server.client.llen(keys.wake("nobody")) == 1
    assert 0 < redis_server.client.pttl(keys.wake("nobody")) <= 60_000


def test_a_call_on_a_dropped_connection_is_tried_no_more_often_than_the_retries_allow(
    redis_url: str, namespace: str, redis_server: RedisServer
) -> None:
    # The first try of a lone call, made outside the retry machinery, counts as a try:
    # with no retries, a dropped connection is an error (then the next call reconnects).
    name = f"dtq-no-retry-{namespace}"
    url = f"{redis_url}?client_name={name}"
    with Queue(["test_only"], url, namespace=namespace, engine_options={"retries": 0}) as queue:
        queue.enqueue("test_only", {"action": "echo"}, id="first")
        assert _kill_named(redis_server.client, name) >= 1
        with pytest.raises(EngineUnavailable):
            queue.enqueue("test_only", {"action": "echo"}, id="second")
        assert queue.enqueue("test_only", {"action": "echo"}, id="third").id == "third"
        assert queue.get("second") is None  # never reached the server


def test_a_worker_between_lone_jobs_goes_back_to_its_blocking_wait_without_looking_again(
    queue: Queue, make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a lone job the slot records its outcome and fetches in one round trip, finding
    # nothing; the dispatcher then blocks at once (BLPOP and fetch), rather than first
    # fetching again on its own (a second script call that also finds nothing). Without the
    # slot's own wait for its next job, so that every lone job takes that path.
    worker = thread_worker(make_worker, poll_s=5.0)
    monkeypatch.setattr(worker, "_refill_can_wait", False)
    jobs = 30
    plain_fetches = calls_during_lone_jobs(worker, queue, "fetch", jobs, monkeypatch)
    # One per job before; a few may remain where a thread switch took longer than the look is fresh.
    assert plain_fetches <= jobs // 10, plain_fetches


def test_with_prefetch_one_a_slot_whose_queue_ran_dry_waits_for_the_next_job_itself(
    queue: Queue, make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A share of one is always full, so only the fetch's word that it left the queue
    # empty tells the slot to wait (briefly) for the next job in the round trip that
    # records its outcome; the lone jobs then reach the slot without the dispatcher.
    worker = thread_worker(make_worker, poll_s=5.0, prefetch=1)
    jobs = 20
    waits = calls_during_lone_jobs(worker, queue, "wait_and_fetch", jobs, monkeypatch)
    # One per job before (each came through the dispatcher's wait). The slot's wait is
    # at least 10 ms; a producer slower than that to append the next job sends it there.
    assert waits <= jobs // 2, waits


def test_a_producer_hears_of_an_end_while_the_worker_still_waits_for_its_next_job(
    queue: Queue, redis_url: str, namespace: str
) -> None:
    # The BLPOP between the completion and the fetch lets the server send the producer its
    # news at once; a fetch right behind the completion would run first.
    job = queue.enqueue("test_only", {"action": "echo"})
    ended: dict[str, float] = {}

    def wait_for_result() -> None:
        assert queue.result(job.id, timeout=20) == {"action": "echo"}
        ended["producer"] = time.monotonic()

    producer = threading.Thread(target=wait_for_result)
    producer.start()
    with Queue(["test_only"], redis_url, namespace=namespace) as other:
        worker_engine = other.engine
        # As an idle worker leases it: woken by the append's hint, which that uses up.
        [lease] = worker_engine.wait_and_fetch(["test_only"], 1.0, count=1, lease_s=30, worker_id="w").leases
        time.sleep(0.3)  # the producer is blocked on its reply list
        stored, batch = worker_engine.complete_and_fetch(
            [Completion(lease, Outcome(JobStatus.SUCCEEDED, result_json='{"action": "echo"}'), 60)],
            ["test_only"],
            count=1,
            lease_s=30,
            worker_id="w",
            wait_s=1.5,
        )
        ended["worker"] = time.monotonic()
    producer.join(20)
    assert stored == [Recorded.STORED] and batch.leases == []
    assert ended["worker"] - ended["producer"] > 1.0, ended  # told well before the wait ended


def test_waits_are_told_of_each_end_without_falling_back_to_reading_again(
    redis_url: str, namespace: str, make_worker: MakeWorker
) -> None:
    # A wait reads again only every block_s (here longer than each wait's timeout),
    # so every result must arrive on the wait's reply list: wait.lua registers
    # the wait in the step that reads the job, so no end falls in between.
    with Queue(
        ["test_only"], _patient(redis_url), namespace=namespace, engine_options={"block_s": 60}
    ) as queue:
        with running(thread_worker(make_worker, prefetch=4)):
            for n in range(150):
                job = queue.enqueue("test_only", {"action": "echo", "n": n})
                assert queue.result(job.id, timeout=20) == {"action": "echo", "n": n}
            failing = queue.enqueue("test_only", {"action": "fail", "message": "no"}, max_retries=0)
            with pytest.raises(JobFailed):
                queue.result(failing.id, timeout=20)
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert client.hlen(queue.engine.keys.waiters) == 0  # type: ignore[attr-defined]
        finally:
            client.close()


def _patient(redis_url: str) -> str:
    """The URL with a socket timeout long enough for a block_s of 60 s."""
    return f"{redis_url}?socket_timeout=120"


def _leftovers(redis_url: str, keys: Keys) -> tuple[int, list[str]]:
    """Waits still registered, and reply lists still there."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return int(client.hlen(keys.waiters)), sorted(client.scan_iter(match=keys.reply("*")))
    finally:
        client.close()


def test_every_producer_waiting_on_one_job_is_told_of_its_end(
    redis_url: str, namespace: str, keys: Keys, make_worker: MakeWorker
) -> None:
    # block_s 60: a producer not told would sit out its 20 s timeout.
    with Queue(
        ["test_only"], _patient(redis_url), namespace=namespace, engine_options={"block_s": 60}
    ) as queue:
        job = queue.enqueue("test_only", {"action": "sleep", "seconds": 0.5})
        results: list[object] = []
        producers = [
            threading.Thread(target=lambda: results.append(queue.result(job.id, timeout=20)))
            for _ in range(3)
        ]
        for producer in producers:
            producer.start()
        time.sleep(0.2)  # all three are waiting before the job starts
        with running(thread_worker(make_worker)):
            started = time.monotonic()
            for producer in producers:
                producer.join(30)
            waited = time.monotonic() - started
        assert results == [{"slept": 0.5}] * 3
        assert waited < 15, waited
    assert _leftovers(redis_url, keys) == (0, [])


@pytest.mark.parametrize("ending", ["cancel", "dead"])
def test_a_waiting_producer_is_told_of_a_cancellation_or_a_death(
    ending: str, redis_url: str, namespace: str, keys: Keys, make_worker: MakeWorker
) -> None:
    with Queue(
        ["test_only"], _patient(redis_url), namespace=namespace, engine_options={"block_s": 60}
    ) as queue:
        if ending == "cancel":
            job = queue.enqueue("test_only", {"action": "echo"})
            threading.Timer(0.3, queue.cancel, [job.id]).start()
            worker = None
        else:
            job = queue.enqueue("test_only", {"action": "fail", "message": "no"}, max_retries=0)
            worker = thread_worker(make_worker)
        started = time.monotonic()
        with running(worker) if worker is not None else contextlib.nullcontext(), pytest.raises(JobFailed):
            queue.result(job.id, timeout=20)
        assert time.monotonic() - started < 15
    assert _leftovers(redis_url, keys) == (0, [])


def test_a_wait_that_times_out_leaves_nothing_behind(queue: Queue, redis_url: str, keys: Keys) -> None:
    job = queue.enqueue("test_only", {"action": "echo"})
    for _ in range(2):
        with pytest.raises(ResultTimeout):
            queue.result(job.id, timeout=0.2)
    assert _leftovers(redis_url, keys) == (0, [])


def test_waits_and_an_idle_worker_carry_on_after_the_server_loses_its_scripts(
    redis_url: str, namespace: str, make_worker: MakeWorker
) -> None:
    options = {"block_s": 60}
    with (
        Queue(["test_only"], _patient(redis_url), namespace=namespace, engine_options=options) as queue,
        running(thread_worker(make_worker, poll_s=30)),
    ):
        first = queue.enqueue("test_only", {"action": "echo", "n": 1})
        assert queue.result(first.id, timeout=20) == {"action": "echo", "n": 1}
        time.sleep(0.3)  # the worker blocks, idle, in a pipeline whose fetch is by SHA
        client = redis.Redis.from_url(redis_url)
        client.script_flush()
        client.close()
        started = time.monotonic()
        second = queue.enqueue("test_only", {"action": "echo", "n": 2})
        assert queue.result(second.id, timeout=20) == {"action": "echo", "n": 2}
        assert time.monotonic() - started < 15


def test_a_wait_sent_by_sha_to_a_server_that_lost_its_scripts_still_ends_with_the_result(
    redis_url: str, namespace: str, make_worker: MakeWorker
) -> None:
    # A wait goes by EVALSHA once its script ran on the server. After a SCRIPT FLUSH the
    # server refuses it and still runs the BLPOP, which can only time out (block_s, here
    # 1 s): the turn after it sends the text, registers, and hears of the end.
    with Queue(["test_only"], redis_url, namespace=namespace, engine_options={"block_s": 1}) as queue:
        engine = queue.engine
        first = queue.enqueue("test_only", {"action": "echo", "n": 1})
        with running(thread_worker(make_worker)):
            assert queue.result(first.id, timeout=20) == {"action": "echo", "n": 1}
            assert engine._wait_by_sha  # type: ignore[attr-defined]
            second = queue.enqueue("test_only", {"action": "sleep", "seconds": 1.5})
            client = redis.Redis.from_url(redis_url)
            try:
                client.script_flush()
            finally:
                client.close()
            started = time.monotonic()
            assert queue.result(second.id, timeout=20) == {"slept": 1.5}
            assert time.monotonic() - started < 10
            assert engine._wait_by_sha  # type: ignore[attr-defined]  # by text once, then by SHA again
            third = queue.enqueue("test_only", {"action": "echo", "n": 3})
            assert queue.result(third.id, timeout=20) == {"action": "echo", "n": 3}


def test_a_blocking_wait_longer_than_the_socket_timeout_is_refused(redis_url: str) -> None:
    with pytest.raises(
        EngineError, match=r"block_s \(60 s\) must be shorter than the socket timeout \(10 s\)"
    ):
        RedisEngine.from_url(redis_url, block_s=60)
    RedisEngine.from_url(_patient(redis_url), block_s=60).close()
    client = redis.Redis.from_url(redis_url, socket_timeout=3)
    try:
        with pytest.raises(
            EngineError, match=r"block_s \(5 s\) must be shorter than the socket timeout \(3 s\)"
        ):
            RedisEngine(client)  # made directly, with the default block_s
    finally:
        client.close()


def test_a_wait_with_no_time_is_a_read_that_registers_nothing(
    queue: Queue, redis_url: str, keys: Keys
) -> None:
    job = queue.enqueue("test_only", {"action": "echo"})
    with pytest.raises(ResultTimeout):
        queue.result(job.id, timeout=0)
    assert _leftovers(redis_url, keys) == (0, [])


def test_an_int_enum_priority_is_stored_as_its_number(queue: Queue, make_worker: MakeWorker) -> None:
    class Level(enum.IntEnum):
        HIGH = 5

    # Delayed: its state is written by append.lua as text, then read back by fetch.lua.
    job = queue.enqueue("test_only", {"action": "echo"}, priority=Level.HIGH, delay_s=0.05)
    time.sleep(0.1)
    [done] = make_worker().get_jobs()
    assert (done.id, done.status, done.priority) == (job.id, JobStatus.SUCCEEDED, 5)


@pytest.mark.parametrize("garbage", ['"created": 1e999', '"extra": [1, -1e999]'])
def test_a_completion_refuses_a_state_that_json_cannot_write_back_and_writes_nothing(
    queue: Queue, keys: Keys, redis_server: RedisServer, garbage: str
) -> None:
    # Something else put an infinity into a leased job's state: the completion is refused
    # before any write (lease recovery buries the job later). complete.lua looks for such
    # numbers field by field, instead of encoding the state once more only to see.
    queue.enqueue("test_only", {"action": "echo"}, id="inf")
    [lease] = queue.engine.fetch(["test_only"], count=1, lease_s=60, worker_id="w").leases
    client = redis_server.client
    state = client.hget(keys.state, "inf")
    assert state is not None and state.startswith("{")
    field = garbage.split(":", maxsplit=1)[0]
    # In place of the field's value if it has one (the last of two equal keys would win).
    spoiled, found = re.subn(field + r":[0-9]+", garbage, state)
    spoiled = spoiled if found else "{" + garbage + "," + state[1:]
    client.hset(keys.state, "inf", spoiled)
    outcome = Outcome(status=JobStatus.SUCCEEDED, result_json='{"ok":1}')
    assert queue.engine.complete(lease, outcome, ttl_s=60) is Recorded.REFUSED
    assert client.hget(keys.state, "inf") == spoiled
    assert client.zscore(keys.active("test_only"), "inf") is not None
    assert not client.hexists(keys.succeeded, "inf")


@pytest.fixture
def replica_pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two redis-servers of the test's own: the one dtq uses, and one it can turn replica of.

    Turning replica, the first resyncs from the (empty) second: its data goes, which a
    real failover would not do; the tests need only its answers meanwhile.
    """
    servers: list[RedisServer] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            servers.append(RedisServer(tmp_path / name))
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def test_a_worker_whose_server_turns_replica_backs_off_and_carries_on(
    replica_pair: tuple[RedisServer, RedisServer], namespace: str
) -> None:
    # A failover behind one address (a managed Redis whose DNS name moves to the new
    # master) leaves a worker talking to the old master, now a replica: writes answer
    # READONLY, a blocked BLPOP UNBLOCKED. The worker must back off and carry on, not die.
    # Here the one server turns replica of another for 3 s, then master again.
    server, other = replica_pair
    worker = Worker(["test_only"], server.url, namespace=namespace, mode="thread", poll_s=0.2)
    try:
        with Queue(["test_only"], server.url, namespace=namespace) as queue, working(worker) as still_working:
            assert queue.result(queue.enqueue("test_only", {"action": "echo", "n": 1}).id, timeout=10)
            server.client.replicaof("127.0.0.1", str(other.port))
            try:
                time.sleep(3.0)  # its waits, fetches and heartbeats fail meanwhile
                still_working()
            finally:
                server.client.replicaof("no", "one")
            job = queue.enqueue("test_only", {"action": "echo", "n": 2})
            assert queue.result(job.id, timeout=30) == {"action": "echo", "n": 2}
            still_working()
    finally:
        worker.close()


def test_a_producer_whose_server_turns_replica_is_told_so_and_drops_its_connections(
    replica_pair: tuple[RedisServer, RedisServer], namespace: str
) -> None:
    # Its connections are dropped, so a retry connects afresh, to wherever a name that moved
    # points now (Redis itself closes only the connections blocked at the change).
    server, other = replica_pair
    name = "dtq-test-producer"

    def connections() -> set[str]:
        return {c["id"] for c in server.client.client_list() if c["name"] == name}

    with Queue(["test_only"], f"{server.url}?client_name={name}", namespace=namespace) as queue:
        queue.enqueue("test_only", {"action": "echo"})
        queue.stats()  # a pooled connection too, besides the one kept for script calls
        before = connections()
        server.client.replicaof("127.0.0.1", str(other.port))
        try:
            with pytest.raises(EngineUnavailable, match=r"cannot take dtq's writes now .* replica"):
                queue.enqueue("test_only", {"action": "echo"})
            # The server lists a client it was told of closing until it has freed it.
            assert before and wait_for(lambda: not before & connections(), timeout=10), connections()
        finally:
            server.client.replicaof("no", "one")
        assert queue.enqueue("test_only", {"action": "echo"}).id


def test_a_master_short_of_replicas_is_a_passing_trouble_with_its_reason(
    replica_pair: tuple[RedisServer, RedisServer], namespace: str
) -> None:
    server, _ = replica_pair
    with Queue(["test_only"], server.url, namespace=namespace) as queue:
        server.client.config_set("min-replicas-to-write", 1)
        with pytest.raises(EngineUnavailable, match="refuses writes until enough replicas"):
            queue.enqueue("test_only", {"action": "echo"})
        server.client.config_set("min-replicas-to-write", 0)
        assert queue.enqueue("test_only", {"action": "echo"}).id


@pytest.mark.parametrize(
    ("error", "changing"),
    [
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), True),
        (
            redis.ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"),
            True,
        ),
        (
            redis.ResponseError(
                "Command # 2 (BLPOP k 1) of pipeline caused error: UNBLOCKED force unblock from blocking"
            ),
            True,
        ),
        (  # Redis 6: a script's write on a replica
            redis.ResponseError(
                "Error running script (call to f_1): @user_script:1: -READONLY You can't write against"
            ),
            True,
        ),
        (redis.ResponseError("UNBLOCKED client unblocked via CLIENT UNBLOCK"), False),
        (  # the words in a job id, not in the error
            redis.ResponseError(
                "Command # 1 (HGET h UNBLOCKED force unblock) of pipeline caused error: WRONGTYPE x"
            ),
            False,
        ),
        (redis.ResponseError("ERR unknown command"), False),
    ],
)
def test_what_counts_as_a_server_changing_role(error: redis.RedisError, changing: bool) -> None:
    assert _changing_role(error) is changing


def test_a_job_runs_over_a_unix_socket(tmp_path: Path) -> None:
    # unix:///path.sock was documented but never worked: dtq passed TCP's keepalive
    # option to the socket's connection, and rewrote the URL as unix:/path.sock.
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(tmp_path, "--unixsocket", str(socket_path))
    try:
        for url in (f"unix://{socket_path}", f"unix://{socket_path}?wait_timeout_s=1"):
            namespace = f"unix-{uuid.uuid4().hex[:6]}"
            with Queue(["test_only"], url, namespace=namespace) as queue:
                job = queue.enqueue("test_only", {"action": "echo", "via": "unix"})
                worker = Worker(["test_only"], url, namespace=namespace, mode="thread")
                try:
                    assert [done.id for done in worker.get_jobs()] == [job.id]
                finally:
                    worker.close()
                assert queue.result(job.id, timeout=5) == {"action": "echo", "via": "unix"}
    finally:
        server.stop()


@pytest.mark.parametrize("after", ["99999999999999999999-0", "0-18446744073709551616", "x-1"])
def test_an_event_id_redis_cannot_take_is_refused_before_it_is_sent(queue: Queue, after: str) -> None:
    # Twenty digits passed the format check, and Redis answered "Invalid stream ID".
    with pytest.raises(ValueError, match="is not an event id of the Redis engine"):
        queue.events(after=after)
    assert queue.events(after="18446744073709551615-18446744073709551615") == []
