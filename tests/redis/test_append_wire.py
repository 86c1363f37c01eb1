"""A one-job append on the wire, against a real redis-server: waiting for its reply
by polling first (wire.Spin), and its request packed from parts made once.

The server is slowed with a script that busy-waits, so a reply comes surely
later than the budget; a fast reply (PING) comes surely sooner than a budget of
a tenth of a second. Nothing here times dtq's speed: that is benchmarks/' job.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from dtqtest import RedisServer

from dtq_core import AppendOutcome, Completion, DuplicateJob, EngineError, JobStatus, Outcome, Queue, Recorded
from dtq_core.engine import Appending
from dtq_core.engines.redis import RedisEngine, wire
from dtq_core.engines.redis.engine import _APPEND_CHUNK
from dtq_core.engines.redis.keys import Keys
from dtq_core.job import Job, job_payload

# Busy-waits ARGV[1] microseconds of the server's clock, then answers 1.
SLOW = """
local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local start = now()
repeat until now() - start >= tonumber(ARGV[1])
return 1
"""
BUDGET_S = 0.1
ECHO = {"action": "echo"}
SLOW_US = 150_000  # longer than the budget


@pytest.fixture
def connections(redis_server: RedisServer) -> Iterator[wire.Connections]:
    pool = redis.ConnectionPool.from_url(redis_server.url)
    kept = wire.Connections(pool, wire.Packer(), wire.Spin(BUDGET_S))
    kept.spin.budget_s = BUDGET_S  # also with one CPU, where Spin would not poll (tested below)
    with kept.connection() as conn:
        conn.connect()  # type: ignore[no-untyped-call]
    yield kept
    pool.disconnect()


def slow(kept: wire.Connections) -> object:
    return kept.once(kept.packer.command("EVAL", SLOW, 0, SLOW_US), spin=True)


def ping(kept: wire.Connections) -> object:
    return kept.once(kept.packer.command("PING"), spin=True)


def test_a_reply_within_the_budget_clears_the_late_ones_before_it(connections: wire.Connections) -> None:
    for late in range(1, wire.SPIN_MISSES):
        assert slow(connections) == 1
        assert (connections.spin.misses, connections.spin.resting) == (late, 0)
    assert ping(connections) == b"PONG"
    assert (connections.spin.misses, connections.spin.resting) == (0, 0)


def test_late_replies_in_a_row_make_it_rest_then_poll_again(connections: wire.Connections) -> None:
    for _ in range(wire.SPIN_MISSES):
        assert slow(connections) == 1
    assert (connections.spin.misses, connections.spin.resting) == (0, wire.SPIN_REST)
    # Resting, a call sleeps in recv at once: a late reply is no miss, and the rest runs down.
    assert slow(connections) == 1
    assert (connections.spin.misses, connections.spin.resting) == (0, wire.SPIN_REST - 1)
    connections.spin.resting = 1
    assert ping(connections) == b"PONG"
    assert connections.spin.resting == 0
    assert slow(connections) == 1
    assert connections.spin.misses == 1  # polling again


def test_an_append_waits_for_its_reply_through_the_spin(redis_server: RedisServer, namespace: str) -> None:
    """The producer's one-job append is the call the polling is for: a server busy past the
    budget makes it a miss, and the job is appended all the same."""
    queue = Queue(
        ["test_only"], redis_server.url, namespace=namespace, engine_options={"reply_spin_us": 5000}
    )
    spin = queue.engine._wire.spin  # type: ignore[attr-defined]
    assert spin.budget_s == 0.005 or len(os.sched_getaffinity(0)) == 1
    spin.budget_s = BUDGET_S
    queue.enqueue("test_only", {"action": "echo"}, id="warm")  # connects, loads the scripts
    assert spin.misses == 0
    busy = threading.Thread(target=lambda: redis_server.client.eval(SLOW, 0, 3 * SLOW_US))
    busy.start()
    try:
        time.sleep(0.05)  # the busy script runs; the append waits behind it
        job = queue.enqueue("test_only", {"action": "echo"}, id="behind")
    finally:
        busy.join()
    assert spin.misses == 1
    stored = queue.get(job.id)
    assert stored is not None and stored.data == {"action": "echo"}
    queue.close()


def test_with_one_cpu_to_run_on_it_never_polls() -> None:
    code = (
        "import os; from dtq_core.engines.redis.wire import Spin; "
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(Spin(0.0001).budget_s)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) == 0.0
    if len(os.sched_getaffinity(0)) > 1:
        assert wire.Spin(0.0001).budget_s == 0.0001


def test_reply_spin_us_is_an_engine_option_from_the_url_and_checked(redis_server: RedisServer) -> None:
    off = RedisEngine.from_url(f"{redis_server.url}?reply_spin_us=0")
    try:
        assert off._wire is not None and off._wire.spin.budget_s == 0
    finally:
        off.close()
    with pytest.raises(EngineError, match=r"reply_spin_us = -5\.0: expected a number from 0"):
        RedisEngine.from_url(f"{redis_server.url}?reply_spin_us=-5")
    with pytest.raises(EngineError, match="reply_spin_us must be a number, not 'soon'"):
        RedisEngine.from_url(f"{redis_server.url}?reply_spin_us=soon")
    # A poll longer than the socket timeout would outlast the wait that notices a stalled server.
    with pytest.raises(EngineError, match=r"reply_spin_us = 3000000\.0: expected a number from 0 to 10000"):
        RedisEngine.from_url(f"{redis_server.url}?reply_spin_us=3000000")


def test_an_engine_dropped_without_close_is_freed_at_once(redis_server: RedisServer, namespace: str) -> None:
    """No reference cycle holds it (and its sockets) until a full garbage collection."""
    gc.disable()
    try:
        engine = RedisEngine.from_url(redis_server.url, namespace=namespace)
        entry = _entries()[0]
        engine.append(entry.job, entry.payload)
        with pytest.raises(EngineError), engine._talking():
            raise redis.ResponseError("ERR an error answer, translated")
        dropped = weakref.ref(engine)
        del engine
        assert dropped() is None
    finally:
        gc.enable()


# --- a one-job append's request, packed from parts made once ----------------------


def _entries() -> list[Appending]:
    plain, payload = job_payload("test_only", {"action": "echo"}, None, {})
    tuned, tuned_payload = job_payload(
        "test_only", {"text": "naïve ☃"}, "id-ü", {"priority": -7, "max_retries": 2, "timeout_s": 1.5}
    )
    other, other_payload = job_payload("other_plugin", {"n": 1}, 42, {"retry_backoff_s": 0.0})
    return [
        Appending(plain, payload, 0.0, None),
        Appending(tuned, tuned_payload, 2.5, None),
        Appending(other, other_payload, 0.0, datetime(2030, 1, 2, tzinfo=timezone.utc)),
    ]


def test_a_one_job_append_packs_the_bytes_the_general_call_would(
    redis_server: RedisServer, namespace: str
) -> None:
    engine = RedisEngine.from_url(redis_server.url, namespace=namespace, signal_cap=77)
    try:
        assert engine._wire is not None
        for step, entry in enumerate(_entries() * 3):  # again from the parts packed before
            if step == 6:  # public attributes a caller may change: packed anew
                engine.signal_cap, engine.events_max = 5, 0
            for look in (True, False):
                keys, args = engine._appending(entry.job.plugin, [entry], look=look)
                sha = engine._scripts["append"].sha
                general = engine._wire.packer.command("EVALSHA", sha, len(keys), *keys, *args)
                assert engine._append_request(entry, look=look) == general
    finally:
        engine.close()


def test_a_one_job_append_after_the_server_lost_its_scripts_runs_once(
    redis_server: RedisServer, namespace: str
) -> None:
    engine = RedisEngine.from_url(redis_server.url, namespace=namespace)
    try:
        first, again = _entries()[0], _entries()[1]
        assert engine.append(first.job, first.payload) is AppendOutcome.CREATED
        redis_server.client.script_flush()
        assert engine.append(again.job, again.payload, delay_s=again.delay_s) is AppendOutcome.CREATED
        assert engine.append(again.job, again.payload, delay_s=again.delay_s) is AppendOutcome.EXISTS
        stored = engine.get(again.job.id)
        assert stored is not None and stored.data == again.job.data and stored.status is JobStatus.SCHEDULED
        events = [e for e in engine.events() if e.job_id == again.job.id]
        assert [e.type.value for e in events] == ["scheduled"]
    finally:
        engine.close()


def test_a_workers_calls_never_poll(redis_server: RedisServer, namespace: str) -> None:
    """Only a producer's append polls: a worker's lone completion, behind a busy server,
    sleeps in recv at once (no miss counted)."""
    engine = RedisEngine.from_url(redis_server.url, namespace=namespace)
    try:
        assert engine._wire is not None
        spin = engine._wire.spin
        spin.budget_s = BUDGET_S
        entry = _entries()[0]
        engine.append(entry.job, entry.payload)
        [lease] = engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
        busy = threading.Thread(target=lambda: redis_server.client.eval(SLOW, 0, 3 * SLOW_US))
        busy.start()
        try:
            time.sleep(0.05)
            completion = Completion(lease, Outcome(JobStatus.SUCCEEDED, result_json="1"), 60)
            assert engine.complete_many([completion]) == [Recorded.STORED]
        finally:
            busy.join()
        assert (spin.misses, spin.resting) == (0, 0)
        stored = engine.get(entry.job.id)
        assert stored is not None and stored.status is JobStatus.SUCCEEDED
    finally:
        engine.close()


# --- a fresh id's first sending looks for no existing job; a second one does ----------


def _lookups(client: redis.Redis) -> int:
    """HMGET and EXISTS calls the server ran since its last CONFIG RESETSTAT (append.lua's look)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("hmget", "exists"))


def test_only_an_append_of_a_fresh_id_skips_the_look_for_an_existing_job(
    redis_server: RedisServer, namespace: str
) -> None:
    queue = Queue(["test_only"], redis_server.url, namespace=namespace)
    try:
        queue.enqueue("test_only", {"action": "echo"}, id="warm")  # connects, loads the scripts
        redis_server.client.config_resetstat()
        queue.enqueue("test_only", {"action": "echo"})
        queue.append({"job": {"plugin": "test_only", "data": ECHO}})
        queue.enqueue_many("test_only", [ECHO, ECHO])
        assert _lookups(redis_server.client) == 0
        queue.enqueue("test_only", {"action": "echo"}, id="named")
        assert _lookups(redis_server.client) == 3  # the live and kept records, and the retained ones
        queue.append_many(
            [
                {"job": {"plugin": "test_only", "data": ECHO}},
                {"id": 7, "job": {"plugin": "test_only", "data": ECHO}},
            ]
        )
        assert _lookups(redis_server.client) == 6  # a batch with one named id looks for all of them
        # A named id is still refused with other contents, and a repeat is one job.
        assert queue.enqueue("test_only", {"action": "echo"}, id="named").id == "named"
        with pytest.raises(DuplicateJob):
            queue.enqueue("test_only", {"action": "echo", "other": 1}, id="named")
    finally:
        queue.close()


class _ReplyLost:
    """Makes the ``at``-th reply read on the wire get lost after the server ran its request:
    the reply is read, ``meanwhile`` runs (another client acting on what the request wrote),
    then the connection drops, as a network cut between the two would leave it."""

    def __init__(self, at: int, meanwhile: Callable[[], None]) -> None:
        self.at, self.meanwhile, self.read = at, meanwhile, 0
        self._real = wire._reply

    def __call__(self, conn: Any) -> Any:
        reply = self._real(conn)
        self.read += 1
        if self.read == self.at:
            self.meanwhile()
            conn.disconnect()
            raise redis.ConnectionError("the reply was lost on the way (injected by the test)")
        return reply


def _appended_events(queue: Queue, ids: set[str]) -> dict[str, int]:
    """How many ``appended`` events each of ``ids`` has in the kept stream."""
    counts = dict.fromkeys(ids, 0)
    for event in queue.kept_events(lambda e: e.job_id in counts and e.type.value == "appended"):
        counts[event.job_id] += 1
    return counts


def test_a_fresh_append_whose_reply_was_lost_is_sent_again_looking_and_leaves_the_leased_job_alone(
    redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first sending ran: a worker leased the job before the reply was lost. Sent again
    without looking, it would queue the running job a second time and reset its state."""
    queue = Queue(["test_only"], redis_server.url, namespace=namespace)
    worker = RedisEngine.from_url(redis_server.url, namespace=namespace)
    try:
        queue.enqueue("test_only", {"action": "echo"}, id="warm")
        worker.fetch(["test_only"], count=1, lease_s=30, worker_id="w")  # takes the warm-up job
        leases = []
        lost = _ReplyLost(
            1, lambda: leases.extend(worker.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases)
        )
        monkeypatch.setattr(wire, "_reply", lost)
        job = queue.enqueue("test_only", {"action": "echo"})
        monkeypatch.undo()
        assert lost.read >= 2  # the reply lost, then the one to the second sending
        assert [lease.job.id for lease in leases] == [job.id]
        assert job.status is JobStatus.RUNNING  # the append answered "exists": the job as it is now
        assert worker.fetch(["test_only"], count=10, lease_s=30, worker_id="w").leases == []
        ended = Outcome(JobStatus.SUCCEEDED, result_json="1")
        assert worker.complete(leases[0], ended, ttl_s=60) is Recorded.STORED  # its lease held
        assert _appended_events(queue, {job.id}) == {job.id: 1}
    finally:
        queue.close()
        worker.close()


def test_a_bulk_append_whose_reply_was_lost_sends_its_calls_again_looking(
    redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three calls of fresh ids; the second call's reply is lost, the third sent already (two
    go unanswered at a time). The second ran, the third may have: sent again, each looks,
    and each job is still queued once."""
    queue = Queue(["test_only"], redis_server.url, namespace=namespace)
    try:
        queue.enqueue("test_only", {"action": "echo"}, id="warm")
        datas = [{"action": "echo", "n": n} for n in range(2 * _APPEND_CHUNK + 10)]
        lost = _ReplyLost(2, lambda: None)
        monkeypatch.setattr(wire, "_reply", lost)
        jobs = queue.enqueue_many("test_only", datas)
        monkeypatch.undo()
        # The first reply, the lost second (the third call sent by then), and the two calls sent again.
        assert lost.read == 4
        assert [job.data for job in jobs] == datas
        ids = {job.id for job in jobs}
        assert len(ids) == len(datas)
        ready = redis_server.client.zrange(Keys(namespace=namespace).ready("test_only"), 0, -1)
        assert sorted(ready) == sorted(ids | {"warm"})
        assert set(_appended_events(queue, ids).values()) == {1}
    finally:
        queue.close()


@pytest.mark.parametrize("how", ["append_many", "enqueue_many"])
def test_a_retry_refused_for_lost_scripts_runs_again_looking(
    redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The first sending ran, and a worker leased its job; the reply was lost, and the server
    lost its scripts too (a failover to a replica, which has the writes and not the scripts).
    The retry is refused, so it is sent again once the scripts are loaded: looking still."""
    queue = Queue(["test_only"], redis_server.url, namespace=namespace)
    worker = RedisEngine.from_url(redis_server.url, namespace=namespace)
    try:
        queue.enqueue("test_only", ECHO, id="warm")
        worker.fetch(["test_only"], count=1, lease_s=30, worker_id="w")  # takes the warm-up job
        leases = []

        def meanwhile() -> None:
            leases.extend(worker.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases)
            redis_server.client.script_flush()

        monkeypatch.setattr(wire, "_reply", _ReplyLost(1, meanwhile))
        if how == "append_many":
            [job] = queue.append_many([{"job": {"plugin": "test_only", "data": ECHO}}])
        else:
            [job] = queue.enqueue_many("test_only", [ECHO])
        monkeypatch.undo()
        assert [lease.job.id for lease in leases] == [job.id]
        assert job.status is JobStatus.RUNNING
        assert worker.fetch(["test_only"], count=10, lease_s=30, worker_id="w").leases == []
        assert _appended_events(queue, {job.id}) == {job.id: 1}
    finally:
        queue.close()
        worker.close()


def test_a_subclass_that_overrides_append_is_still_what_a_queue_appends_with(
    redis_server: RedisServer, namespace: str
) -> None:
    seen: list[str] = []

    class Logging(RedisEngine):
        def append(
            self, job: Job, payload: str, *, delay_s: float = 0.0, eta: datetime | None = None
        ) -> AppendOutcome:
            seen.append(job.id)
            return super().append(job, payload, delay_s=delay_s, eta=eta)

    queue = Queue(["test_only"], redis_server.url, namespace=namespace, engine=Logging)
    try:
        job = queue.enqueue("test_only", ECHO)
        named = queue.append({"id": "named", "job": {"plugin": "test_only", "data": ECHO}})
        assert seen == [job.id, "named"]
        assert queue.get(job.id) is not None and queue.get(named.id) is not None
    finally:
        queue.close()
