"""An idle worker asked to stop stops at once on the in-process engines (Engine.wake)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from dtqtest import stop_when_idle

from dtq_core import Worker


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_an_idle_worker_asked_to_stop_does_not_wait_out_its_poll(engine: str, tmp_path: Path) -> None:
    url = f"memory://{uuid.uuid4().hex}" if engine == "memory" else f"sqlite:///{tmp_path / 'dtq.db'}"
    worker = Worker(["test_only"], url, namespace="idle", mode="thread", poll_s=30.0)
    try:
        assert stop_when_idle(worker) < 2.0
    finally:
        worker.close()
