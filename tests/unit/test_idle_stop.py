"""An idle worker asked to stop stops at once on the in-process engines (Engine.wake)."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dtqtest import stop_when_idle, wait_for

from dtq_core import JobStatus, Queue, Worker


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_an_idle_worker_asked_to_stop_does_not_wait_out_its_poll(engine: str, tmp_path: Path) -> None:
    url = f"memory://{uuid.uuid4().hex}" if engine == "memory" else f"sqlite:///{tmp_path / 'dtq.db'}"
    worker = Worker(["test_only"], url, namespace="idle", mode="thread", poll_s=30.0)
    try:
        assert stop_when_idle(worker) < 2.0
    finally:
        worker.close()


#: A worker in the main thread whose idle wait sends it SIGTERM while that thread holds the
#: lock of the worker's stop Event (as it does for a moment inside Event.wait). A handler
#: that set the Event there would wait forever for a lock its own thread holds.
_SIGNALLED_INSIDE_A_LOCK = r"""
import logging, os, signal, sys, time, uuid
from dtq_core import Worker

logging.basicConfig(level=logging.INFO, stream=sys.stdout)
worker = Worker(["test_only"], f"memory://{uuid.uuid4().hex}", namespace="sig", mode="thread", poll_s=30.0)
wait_and_fetch = worker.engine.wait_and_fetch
calls = []

def interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
        with worker._stopping._cond:  # CPython's Event: a Condition over a plain Lock
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 5
            while worker._signalled is None and time.monotonic() < deadline:
                pass  # the handler runs between these bytecodes, the lock held
            # Its own stream, written at once: the waker thread logs to stdout meanwhile.
            sys.stderr.write(f"handler returned inside the lock: {worker._signalled is not None}\n")
    return wait_and_fetch(*args, **kwargs)

worker.engine.wait_and_fetch = interrupted
started = time.monotonic()
worker.work()
sys.stderr.write(f"stopped after {time.monotonic() - started:.1f} s\n")
"""


def test_sigterm_landing_while_the_main_thread_holds_the_stop_events_lock_still_stops() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SIGNALLED_INSIDE_A_LOCK],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "handler returned inside the lock: True" in done.stderr, done.stdout + done.stderr
    assert "received SIGTERM: finishing the jobs in hand, then stopping" in done.stdout, done.stdout
    stopped = re.search(r"stopped after ([0-9.]+) s", done.stderr)
    assert stopped is not None and float(stopped.group(1)) < 10.0, done.stderr


def test_a_signal_that_came_before_the_run_had_its_waker_stops_the_run_before_it_takes_a_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The handler found no waker to tell (the run was still setting up its slots): it only
    # noted the signal, and the waker, once there, stops the run and logs the signal.
    url = f"memory://{uuid.uuid4().hex}"
    with Queue(["test_only"], url, namespace="early") as queue:
        queue.enqueue("test_only", {"action": "echo"}, id="left")
        worker = Worker(["test_only"], url, namespace="early", mode="thread", poll_s=30.0)
        worker._signalled = signal.SIGTERM  # as the handler leaves it
        with caplog.at_level(logging.INFO, logger="dtq"):
            assert worker.get_jobs() == []
        assert queue.get("left").status is JobStatus.QUEUED  # type: ignore[union-attr]
        assert wait_for(lambda: "received SIGTERM" in caplog.text, timeout=5)
        worker.close()
