"""Celery with Redis as broker and result backend; a solo-pool worker per process."""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery, group

from systems import System, Variant, exists_count, script

PREFETCH_MULTIPLIER = 64

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    task_acks_late=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> str:
    """The no-op job."""
    return "ok"


class CeleryPeer(System):
    """Celery: queue ``celery`` on Redis, results in Redis (AsyncResult.get waits on Pub/Sub)."""

    name = "celery"
    distribution = "celery"
    settings = {  # noqa: RUF012 - read-only description
        "job": "noop() returning 'ok'",
        "worker": "celery worker --pool solo --concurrency 1 --loglevel WARNING "
        "--without-gossip --without-mingle --without-heartbeat",
        "prefetch": f"worker_prefetch_multiplier {PREFETCH_MULTIPLIER} (many short tasks: its docs' advice)",
        "acks": "task_acks_late False (the default: acked when started, lost if the worker dies)",
        "result wait": "AsyncResult.get(timeout=) (Pub/Sub); results kept 1 day (result_expires)",
        "bulk": "group(noop.s() x n).apply_async(): one publish per task, no pipelining",
    }
    variants = (Variant("solo", {"--pool": "solo", "why": "no pool process: fastest for concurrency 1"}),)

    def enqueue(self) -> Any:
        return noop.delay()

    def enqueue_many(self, count: int) -> list[Any]:
        return list(group(noop.s() for _ in range(count)).apply_async().results)

    def backlog(self, count: int) -> list[Any]:
        handles = super().backlog(count)
        # Each send subscribed this producer to the task's result channel. Nobody waits for these
        # results: drop the subscriptions now, or the 10,000 notifications they bring pile up on the
        # producer's Pub/Sub connection (Redis memory) and the latency measure's first get() reads them all.
        for handle in handles:
            app.backend.result_consumer.cancel_for(handle.id)
        _fresh_result_connection()
        return handles

    def worker_argv(self, variant: Variant) -> list[str]:
        argv = [script("celery"), "-A", "systems.celery:app", "worker", "--pool", "solo"]
        argv += ["--concurrency", "1", "--loglevel", "WARNING"]
        return [*argv, "--without-gossip", "--without-mingle", "--without-heartbeat"]

    def finished(self, r: redis.Redis, total: int) -> int:
        # Waiting in the queue, or prefetched and not yet acked (early acks: at most one running after).
        return total - int(r.llen("celery")) - int(r.hlen("unacked"))

    def results_present(self, r: redis.Redis, handles: list[Any]) -> int:
        return exists_count(r, [app.backend.get_key_for_task(h.id).decode() for h in handles])

    def wait(self, handle: Any, timeout_s: float) -> Any:
        return handle.get(timeout=timeout_s)

    def close(self) -> None:
        app.close()


def _fresh_result_connection() -> None:
    """Start the producer's result waits on a new Pub/Sub connection, as a producer that had not
    just sent tens of thousands of tasks would.

    Every send subscribes to its task's result channel and every cancel
    unsubscribes, and each of those leaves a confirmation on the connection.
    ``AsyncResult.get`` reads one message per poll, so after the enqueue, bulk
    and backlog measures the latency measure's first ``get()`` read through
    some 40,000 of them: 3.6 s on a quiet machine, past its 10 s timeout on a
    busy one (Celery 5.7.0). Closing the connection drops them; the next send
    opens a new one (``ResultConsumer.start``). Private attributes: Celery has
    no public way to do this.
    """
    consumer = app.backend.result_consumer
    consumer.stop()
    consumer._pubsub = None
    consumer.subscribed_to.clear()
    consumer._pending_unsubscribe.clear()


SYSTEM = CeleryPeer
