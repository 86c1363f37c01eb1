"""The engine contract: every test in this folder runs once per engine.

Engines: the Redis engine on the session's private redis-server, the memory
engine, and the SQLite engine on a file of the test's own. An engine passes
when the whole folder passes for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dtq_core import Engine, Queue, Worker, open_engine

ENGINES = ["redis", "memory", "sqlite"]


@pytest.fixture(params=ENGINES)
def engine_url(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> str:
    """The URL of the engine under test."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dtq.db'}"
    return f"memory://{namespace}"


@pytest.fixture
def engine(engine_url: str, namespace: str) -> Iterator[Engine]:
    made = open_engine(engine_url, namespace=namespace)
    yield made
    made.close()


@pytest.fixture
def queue(engine_url: str, namespace: str) -> Iterator[Queue]:
    q = Queue(["test_only"], engine_url, namespace=namespace)
    yield q
    q.close()


@pytest.fixture
def make_worker(engine_url: str, namespace: str) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(**options: Any) -> Worker:
        options.setdefault("plugins", ["test_only"])
        worker = Worker(url=engine_url, namespace=namespace, **options)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.close()
