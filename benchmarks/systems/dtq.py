"""dtq: the system under test. No-op job: the test_only plugin's ``echo`` of ``{"action": "echo"}``."""

from __future__ import annotations

import sys
from typing import Any

import redis

from dtq_core import Queue
from dtq_core.engines.redis.keys import Keys
from systems import System, Variant

NAMESPACE = "bench"
PLUGIN = "test_only"
DATA = {"action": "echo"}


class Dtq(System):
    """dtq on Redis; workers are ``dtq worker`` processes."""

    name = "dtq"
    distribution = "dtq-core"
    settings = {  # noqa: RUF012 - read-only description
        "job": 'test_only {"action": "echo"} (returns its data)',
        "worker": "dtq worker --plugins test_only --concurrency 1 --quiet --mode <variant> --prefetch 64",
        "defaults kept": (
            "lease 30 s, result kept 1 day, lifecycle events on, reply_spin_us 300 (a one-job append "
            "polls its socket up to 300 µs for the reply before it sleeps: see enq client µs)"
        ),
        "result wait": (
            "Queue.result(id, timeout=) (wait.lua and a BLPOP on the wait's reply list: one round trip)"
        ),
        "bulk": "Queue.enqueue_many(plugin, datas)",
    }
    variants = (
        Variant(
            "thread",
            {
                "--mode": "thread",
                "--prefetch": "64",
                "why": "the job runs in the worker's thread; a slot leases 64 jobs per round trip",
            },
        ),
        Variant(
            "process",
            {
                "--mode": "process",
                "--prefetch": "64",
                "why": "the default mode: each slot's jobs run in a child process (isolation, hard limits)",
            },
        ),
    )

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.queue = Queue([PLUGIN], url, namespace=NAMESPACE)
        self.keys = Keys("dtq", NAMESPACE)

    def enqueue(self) -> str:
        return str(self.queue.enqueue(PLUGIN, DATA).id)

    def enqueue_many(self, count: int) -> list[str]:
        return [str(job.id) for job in self.queue.enqueue_many(PLUGIN, (DATA for _ in range(count)))]

    def worker_argv(self, variant: Variant) -> list[str]:
        argv = [sys.executable, "-m", "dtq_core", "worker", "--url", self.url, "--namespace", NAMESPACE]
        options = [
            item for key, value in variant.settings.items() if key.startswith("--") for item in (key, value)
        ]
        # --quiet: no log line per job, as the peers run (huey -q, rq --quiet, celery WARNING).
        return [*argv, "--plugins", PLUGIN, "--concurrency", "1", "--quiet", *options]

    def finished(self, r: redis.Redis, total: int) -> int:
        # A job's live record leaves the jobs hash when it becomes final.
        return total - int(r.hlen(self.keys.jobs))

    def results_present(self, r: redis.Redis, handles: list[Any]) -> int:
        # A succeeded job's record is one field of the namespace's succeeded hash.
        found = 0
        for start in range(0, len(handles), 1000):
            found += sum(v is not None for v in r.hmget(self.keys.succeeded, handles[start : start + 1000]))
        return found

    def wait(self, handle: Any, timeout_s: float) -> Any:
        return self.queue.result(handle, timeout=timeout_s)

    def close(self) -> None:
        self.queue.close()


SYSTEM = Dtq
