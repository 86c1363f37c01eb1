"""arq: asyncio jobs on Redis. Run as ``python -m systems.arq`` to be a worker."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, ClassVar

import redis
from arq import create_pool, run_worker
from arq.connections import RedisSettings
from arq.constants import default_queue_name, result_key_prefix
from arq.jobs import Job, ResultNotFound

from systems import System, Variant, exists_count

SETTINGS = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
WORKER_POLL_S = 0.01
RESULT_POLL_S = 0.001


async def noop(ctx: dict[str, Any]) -> str:
    """The no-op job."""
    return "ok"


class WorkerSettings:
    """What ``run_worker`` is given: one job at a time, the queue polled every 10 ms."""

    functions: ClassVar = [noop]
    redis_settings = SETTINGS
    max_jobs = 1
    poll_delay = WORKER_POLL_S


class ArqPeer(System):
    """arq: the producer's coroutines run on an event loop of its own."""

    name = "arq"
    distribution = "arq"
    settings = {  # noqa: RUF012 - read-only description
        "job": "async noop(ctx) returning 'ok'",
        "worker": f"run_worker(WorkerSettings): max_jobs 1, poll_delay {WORKER_POLL_S} s "
        "(default 0.5 s caps a busy worker at 100 jobs per poll), per-job log lines off",
        "enqueue": "await ArqRedis.enqueue_job('noop'), awaited one after another in one coroutine",
        "result wait": f"await job.result(timeout=, poll_delay={RESULT_POLL_S}) (polling; "
        "its ResultNotFound race between two reads answered by job.result_info()); results kept 1 h",
        "bulk": "n/a: no bulk enqueue API",
    }
    variants = (Variant("max_jobs=1", {"max_jobs": 1, "poll_delay_s": WORKER_POLL_S}),)

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(SETTINGS))

    def enqueue(self) -> Any:
        return self.loop.run_until_complete(self.pool.enqueue_job("noop"))

    def enqueue_serial(self, count: int) -> list[Any]:
        async def serial() -> list[Any]:
            return [await self.pool.enqueue_job("noop") for _ in range(count)]

        return self.loop.run_until_complete(serial())

    def backlog(self, count: int) -> list[Any]:
        return self.enqueue_serial(count)

    def worker_argv(self, variant: Variant) -> list[str]:
        return [sys.executable, "-m", "systems.arq"]

    def finished(self, r: redis.Redis, total: int) -> int:
        # arq removes a job from its queue (a sorted set) when the job is done.
        return total - int(r.zcard(default_queue_name))

    def results_present(self, r: redis.Redis, handles: list[Any]) -> int:
        return exists_count(r, [result_key_prefix + job.job_id for job in handles])

    def wait(self, handle: Any, timeout_s: float) -> Any:
        return self.loop.run_until_complete(self._result(handle, timeout_s))

    @staticmethod
    async def _result(job: Job, timeout_s: float) -> Any:
        try:
            return await job.result(timeout=timeout_s, poll_delay=RESULT_POLL_S)
        except ResultNotFound:
            # arq 0.25 reads the result and then the queue in two separate commands: a job that
            # finishes between them is "not found". Its result is there: read it.
            info = await job.result_info()
            if info is None:
                raise
            return info.result

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()


SYSTEM = ArqPeer

if __name__ == "__main__":
    run_worker(WorkerSettings)  # type: ignore[arg-type]
