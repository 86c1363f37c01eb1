"""Shared fixtures: a private redis-server per test session, unique namespaces, helpers.

Tests never touch the machine's shared Redis: the session starts its own
redis-server on a free loopback port, and every test works in a namespace of
its own.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dtqtest import FakeSite, RedisClusterServers, RedisServer, dtq_command

from dtq_core import Queue, Worker
from dtq_core.engines.redis import Keys

# stevedore keeps an on-disk entry-point cache under XDG_CACHE_HOME; a fresh one
# per session keeps tests independent of what ran before.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dtq-test-cache-")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def namespace(redis_server: RedisServer) -> Iterator[str]:
    """A namespace no other test uses; its keys are deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    for key in redis_server.client.scan_iter(match=f"dtq:{{{name}}}:*"):
        redis_server.client.delete(key)


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace=namespace)


@pytest.fixture
def queue(redis_url: str, namespace: str) -> Iterator[Queue]:
    q = Queue(["test_only"], redis_url, namespace=namespace)
    yield q
    q.close()


@pytest.fixture
def make_worker(redis_url: str, namespace: str) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(**options: Any) -> Worker:
        options.setdefault("plugins", ["test_only"])
        worker = Worker(url=redis_url, namespace=namespace, **options)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.engine.close()


@pytest.fixture
def dtq_env(redis_url: str, namespace: str) -> dict[str, str]:
    """Environment for ``dtq`` subprocesses: the private Redis and this test's namespace."""
    env = dict(os.environ)
    env.update(DTQ_URL=redis_url, DTQ_NAMESPACE=namespace, PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def run_dtq(dtq_env: dict[str, str], tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``dtq ARGS`` to completion from a directory outside the checkout."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*dtq_command(), *args],
            env=env or dtq_env,
            check=False,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSite:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return FakeSite(root)
