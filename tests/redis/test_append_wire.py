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
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import redis
from dtqtest import RedisServer

from dtq_core import AppendOutcome, Completion, EngineError, JobStatus, Outcome, Queue, Recorded
from dtq_core.engine import Appending
from dtq_core.engines.redis import RedisEngine, wire
from dtq_core.job import job_payload

# Busy-waits ARGV[1] microseconds of the server's clock, then answers 1.
SLOW = """
local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local start = now()
repeat until now() - start >= tonumber(ARGV[1])
return 1
"""
BUDGET_S = 0.1
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
            keys, args = engine._appending(entry.job.plugin, [entry])
            sha = engine._scripts["append"].sha
            general = engine._wire.packer.command("EVALSHA", sha, len(keys), *keys, *args)
            assert engine._append_request(entry) == general
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
