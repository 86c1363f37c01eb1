"""Dramatiq with its RedisBroker and the Results middleware (Redis backend)."""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from systems import System, Variant, exists_count, script

QUEUE = "bench"
PREFETCH = 64
IDLE_POLL_MS = 100

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
backend = RedisBackend(url=os.environ["BENCH_REDIS_URL"])
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def noop() -> str:
    """The no-op job."""
    return "ok"


class DramatiqPeer(System):
    """Dramatiq: messages in ``dramatiq:bench``, results stored for every message."""

    name = "dramatiq"
    distribution = "dramatiq"
    settings = {  # noqa: RUF012 - read-only description
        "job": "noop() returning 'ok', store_results=True",
        "worker": f"dramatiq systems.dramatiq --processes 1 --threads 1 --queues {QUEUE}",
        "prefetch": f"dramatiq_queue_prefetch={PREFETCH}",
        "idle poll": f"dramatiq_worker_timeout={IDLE_POLL_MS} ms (default 1000: the longest idle back-off)",
        "result wait": "message.get_result(block=True, timeout=) (BRPOPLPUSH); results kept 10 min",
        "bulk": "n/a: no bulk enqueue (dramatiq.group sends one message at a time)",
    }
    variants = (Variant("1x1", {"--processes": 1, "--threads": 1}),)

    def enqueue(self) -> Any:
        return noop.send()

    def worker_argv(self, variant: Variant) -> list[str]:
        argv = [script("dramatiq"), "systems.dramatiq", "--processes", "1", "--threads", "1"]
        return [*argv, "--queues", QUEUE]

    def worker_env(self, variant: Variant) -> dict[str, str]:
        return {"dramatiq_queue_prefetch": str(PREFETCH), "dramatiq_worker_timeout": str(IDLE_POLL_MS)}

    def finished(self, r: redis.Redis, total: int) -> int:
        # A message stays in the queue's messages hash until it is acked, after it ran.
        return total - int(r.hlen(f"dramatiq:{QUEUE}.msgs"))

    def results_present(self, r: redis.Redis, handles: list[Any]) -> int:
        return exists_count(r, [backend.build_message_key(m) for m in handles])

    def wait(self, handle: Any, timeout_s: float) -> Any:
        return handle.get_result(block=True, timeout=int(timeout_s * 1000))

    def close(self) -> None:
        broker.close()


SYSTEM = DramatiqPeer
