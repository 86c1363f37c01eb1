"""An idle worker asked to stop stops at once on the in-process engines (Engine.wake)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from dtq_core import Worker


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_an_idle_worker_asked_to_stop_does_not_wait_out_its_poll(engine: str, tmp_path: Path) -> None:
    url = f"memory://{uuid.uuid4().hex}" if engine == "memory" else f"sqlite:///{tmp_path / 'dtq.db'}"
    worker = Worker(["test_only"], url, namespace="idle", mode="thread", poll_s=30.0)
    waiting = threading.Event()
    wait_and_fetch = worker.engine.wait_and_fetch

    def noted(*args: object, **kwargs: object) -> object:
        waiting.set()
        return wait_and_fetch(*args, **kwargs)  # type: ignore[arg-type]

    worker.engine.wait_and_fetch = noted  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.work)
    thread.start()
    try:
        assert waiting.wait(20)
        time.sleep(0.2)  # in its wait (a wake-up that came first would not be lost either)
        started = time.monotonic()
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 2.0
    finally:
        worker.stop()
        thread.join(10)
        worker.close()
