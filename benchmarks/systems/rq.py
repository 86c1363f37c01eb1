"""RQ: Redis Queue. Its default ``Worker`` forks a work horse per job; ``SimpleWorker`` does not."""

from __future__ import annotations

from typing import Any

import redis
import rq
from rq.results import Result

from systems import System, Variant, exists_count, script

QUEUE = "bench"


def noop() -> str:
    """The no-op job."""
    return "ok"


class Rq(System):
    """RQ with its own CLI workers; results kept (the default result_ttl, 500 s)."""

    name = "rq"
    distribution = "rq"
    settings = {  # noqa: RUF012 - read-only description
        "job": "noop() returning 'ok'",
        "worker": "rq worker --worker-class <variant> --quiet bench",
        "defaults kept": "result_ttl 500 s, job timeout 180 s",
        "result wait": "Job.latest_result(timeout=) (XREAD BLOCK on the job's result stream)",
        "bulk": "Queue.enqueue_many([Queue.prepare_data(...)]) (one pipeline)",
    }
    variants = (
        Variant("SimpleWorker", {"--worker-class": "rq.worker.SimpleWorker", "why": "no fork per job"}),
        Variant(
            "Worker",
            {"--worker-class": "rq.worker.Worker", "why": "the default: forks a work horse per job"},
            max_jobs=2000,
        ),
    )

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.connection = redis.Redis.from_url(url)
        self.queue = rq.Queue(QUEUE, connection=self.connection)

    def enqueue(self) -> rq.job.Job:
        return self.queue.enqueue(noop)

    def enqueue_many(self, count: int) -> list[rq.job.Job]:
        return self.queue.enqueue_many([rq.Queue.prepare_data(noop) for _ in range(count)])

    def worker_argv(self, variant: Variant) -> list[str]:
        argv = [script("rq"), "worker", "--url", self.url, "--quiet"]
        return [*argv, "--worker-class", variant.settings["--worker-class"], QUEUE]

    def finished(self, r: redis.Redis, total: int) -> int:
        return int(r.zcard(self.queue.finished_job_registry.key))

    def results_present(self, r: redis.Redis, handles: list[Any]) -> int:
        return exists_count(r, [Result.get_key(job.id) for job in handles])

    def wait(self, handle: Any, timeout_s: float) -> Any:
        result = handle.latest_result(timeout=int(timeout_s))
        if result is None or result.type != result.Type.SUCCESSFUL:
            raise RuntimeError(f"job {handle.id}: no successful result ({result})")
        return result.return_value

    def close(self) -> None:
        self.connection.close()


SYSTEM = Rq
