"""The engine contract (``dtq_core.testing.contract``) on every engine dtq ships.

Engines: the Redis engine on the session's private redis-server and on a
private three-master Redis Cluster, the memory engine, and the SQLite engine on
a file of the test's own. ``test_contract.py`` imports the suite; the fixtures
here choose the engine, so every contract test runs once per engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ENGINES = ["redis", "cluster", "memory", "sqlite"]


@pytest.fixture(params=ENGINES)
def dtq_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of the engine under test."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dtq.db'}"
    return f"memory://{tmp_path.name}"
