"""Huey with RedisHuey (blocking dequeue, result notification)."""

from __future__ import annotations

import os
from typing import Any

import redis
from huey import RedisHuey

from systems import System, Variant, script

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"], blocking=True, notify_result=True)


@huey.task()
def noop() -> str:
    """The no-op job (it returns a value: Huey stores no result for None)."""
    return "ok"


class HueyPeer(System):
    """Huey: one consumer process with one worker thread."""

    name = "huey"
    distribution = "huey"
    settings = {  # noqa: RUF012 - read-only description
        "job": "noop() returning 'ok'",
        "storage": "RedisHuey(blocking=True, notify_result=True): BRPOP dequeue, BLPOP result wait",
        "worker": "huey_consumer systems.huey.huey --workers 1 --worker-type thread --quiet --no-periodic",
        "result wait": "Result.get(blocking=True, timeout=); results kept until read",
        "bulk": "n/a: no bulk enqueue API",
    }
    variants = (Variant("thread", {"--worker-type": "thread", "--workers": 1}),)

    def enqueue(self) -> Any:
        return noop()

    def worker_argv(self, variant: Variant) -> list[str]:
        argv = [script("huey_consumer"), "systems.huey.huey", "--workers", "1", "--worker-type", "thread"]
        return [*argv, "--quiet", "--no-periodic"]

    def finished(self, r: redis.Redis, total: int) -> int:
        return int(r.hlen(huey.storage.result_key))

    def results_present(self, r: redis.Redis, handles: list[Any]) -> int:
        return min(len(handles), int(r.hlen(huey.storage.result_key)))

    def wait(self, handle: Any, timeout_s: float) -> Any:
        return handle.get(blocking=True, timeout=timeout_s)

    def close(self) -> None:
        huey.storage.pool.disconnect()


SYSTEM = HueyPeer
