"""One adapter per system compared, each in its own module, all with the same small shape.

An adapter is used from two sides. The harness (producer side) calls
:class:`System`'s methods. The worker processes import the same module, found
through ``PYTHONPATH=benchmarks``, for the no-op task it defines; the Redis URL
reaches both sides in ``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

#: Systems in the order they are run and shown; each names its module under ``systems``.
NAMES = ("dtq", "rq", "celery", "dramatiq", "huey", "arq")

BENCH_DIR = Path(__file__).resolve().parent.parent


class NotAvailable(Exception):
    """The system has no such feature (the table shows "n/a" and the reason)."""


@dataclass(frozen=True)
class Variant:
    """One way to run the system's workers.

    Args:
        label: short name shown after the system's (``dtq/thread``).
        settings: what is set, stated in the output.
        max_jobs: fewer jobs for the processing measure than the others get (a slow worker).
    """

    label: str
    settings: dict[str, Any] = field(default_factory=dict)
    max_jobs: int | None = None


class System(ABC):
    """The harness's view of a task queue: enqueue no-op jobs, start workers, see them finish."""

    name: str
    distribution: str
    settings: dict[str, Any]
    variants: tuple[Variant, ...]

    def __init__(self, url: str) -> None:
        self.url = url

    def version(self) -> str:
        """The installed distribution's version."""
        return importlib.metadata.version(self.distribution)

    @abstractmethod
    def enqueue(self) -> Any:
        """Queue one no-op job; return its handle."""

    def enqueue_serial(self, count: int) -> list[Any]:
        """Queue ``count`` jobs one per call, one after another (an async peer overrides it)."""
        return [self.enqueue() for _ in range(count)]

    def enqueue_many(self, count: int) -> list[Any]:
        """Queue ``count`` no-op jobs with the system's bulk API; return their handles."""
        raise NotAvailable("no bulk enqueue API")

    def backlog(self, count: int) -> list[Any]:
        """Queue ``count`` jobs the fastest way there is (the processing measure's set-up)."""
        try:
            return self.enqueue_many(count)
        except Exception:
            return [self.enqueue() for _ in range(count)]

    @abstractmethod
    def worker_argv(self, variant: Variant) -> list[str]:
        """The command line of one worker process (concurrency 1)."""

    def worker_env(self, variant: Variant) -> dict[str, str]:
        """Extra environment of the worker processes."""
        return {}

    @abstractmethod
    def finished(self, r: redis.Redis, total: int) -> int:
        """Jobs of ``total`` queued that have finished: a cheap probe (one or two O(1) commands)."""

    @abstractmethod
    def results_present(self, r: redis.Redis, handles: list[Any]) -> int:
        """How many of the jobs have their result stored (exact, may be expensive)."""

    @abstractmethod
    def wait(self, handle: Any, timeout_s: float) -> Any:
        """Block, the system's own way, until the job's result is there; return it."""

    def close(self) -> None:
        """Release the producer's connections."""
        return None


def load(name: str, url: str) -> System:
    """The adapter of system ``name``, its module imported now (a missing install fails here only)."""
    os.environ["BENCH_REDIS_URL"] = url
    module = importlib.import_module(f"systems.{name}")
    system: System = module.SYSTEM(url)
    return system


def script(name: str) -> str:
    """The path of a console script installed beside this Python (``celery``, ``rq``...)."""
    return str(Path(sys.executable).parent / name)


def exists_count(r: redis.Redis, keys: list[str]) -> int:
    """How many of the keys exist, pipelined in chunks of 1,000."""
    present = 0
    for start in range(0, len(keys), 1000):
        present += int(r.exists(*keys[start : start + 1000]))
    return present
