"""Waiting for a reply by polling first (wire.Spin), against a real redis-server.

The server is slowed with a script that busy-waits, so a reply comes surely
later than the budget; a fast reply (PING) comes surely sooner than a budget of
a tenth of a second. Nothing here times dtq's speed: that is benchmarks/' job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from dtqtest import RedisServer

from dtq_core import EngineError, Queue
from dtq_core.engines.redis import RedisEngine, wire

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
    return kept.once(kept.packer.command("EVAL", SLOW, 0, SLOW_US))


def ping(kept: wire.Connections) -> object:
    return kept.once(kept.packer.command("PING"))


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
        ["test_only"], redis_server.url, namespace=namespace, engine_options={"reply_spin_us": BUDGET_S * 1e6}
    )
    spin = queue.engine._wire.spin  # type: ignore[attr-defined]
    assert spin.budget_s == BUDGET_S or len(os.sched_getaffinity(0)) == 1
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
