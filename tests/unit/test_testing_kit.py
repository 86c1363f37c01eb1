"""The testing kit plugin authors use: dtq's pytest fixtures and assertions."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dtq_core import Job, JobStatus, Queue, ValidationError, Worker
from dtq_core.engine import Batch
from dtq_core.engines.memory import MemoryEngine
from dtq_core.errors import EngineError
from dtq_core.testing import (
    WorkerThread,
    assert_failed,
    assert_succeeded,
    check_plugin_installed,
    running,
    wait_for,
)

RunJob = Callable[..., Job]


def test_dtq_run_runs_a_job_through_a_real_worker(dtq_run: RunJob) -> None:
    job = dtq_run("test_only", {"action": "duplicate_text", "text": "ab"})
    assert_succeeded(job, "abab")
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)


def test_dtq_run_waits_out_retries(dtq_run: RunJob) -> None:
    job = dtq_run("test_only", {"action": "flaky", "failures": 2}, max_retries=2, retry_backoff_s=0.01)
    assert_succeeded(job, {"attempts": 3})


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_dtq_run_reports_failures(dtq_run: RunJob, mode: str) -> None:
    job = dtq_run("test_only", {"action": "fail", "message": "broken"}, mode=mode)
    assert_failed(job, error_type="RuntimeError", message="broken", status=JobStatus.FAILED)


def test_assertions_say_what_is_wrong(dtq_run: RunJob) -> None:
    good = dtq_run("test_only", {"action": "echo"})
    bad = dtq_run("test_only", {"action": "fail", "message": "kaput"})
    with pytest.raises(AssertionError, match=r"is failed, not succeeded: RuntimeError: kaput"):
        assert_succeeded(bad)
    with pytest.raises(AssertionError, match=r"returned \{'action': 'echo'\}, expected 1"):
        assert_succeeded(good, 1)
    with pytest.raises(AssertionError, match="expected failed or dead or cancelled"):
        assert_failed(good)
    with pytest.raises(AssertionError, match="failed with 'RuntimeError', expected 'KeyError'"):
        assert_failed(bad, error_type="KeyError")
    with pytest.raises(AssertionError, match="does not contain 'other'"):
        assert_failed(bad, message="other")


def test_dtq_queue_validates_with_the_installed_plugin(dtq_queue: Queue) -> None:
    with pytest.raises(ValidationError):
        dtq_queue.enqueue("test_only", {"action": "nonsense"})


def test_check_plugin_installed() -> None:
    status = check_plugin_installed("test_only")
    assert (status.distribution, status.api_version, status.status) == ("dtq-plugins-testonly", 1, "ok")
    with pytest.raises(AssertionError, match="plugin 'absent' is not installed: no plugin named 'absent'"):
        check_plugin_installed("absent")


def test_the_same_tests_run_on_redis_with_dtq_url(tmp_path: Path, redis_url: str) -> None:
    """A plugin author's test file, run by pytest with --dtq-url: the kit is found through pytest11."""
    (tmp_path / "test_author.py").write_text(
        "from dtq_core.testing import assert_succeeded\n\n"
        "def test_it(dtq_run, dtq_url):\n"
        "    assert dtq_url.startswith('redis://')\n"
        "    assert_succeeded(dtq_run('test_only', {'action': 'echo'}), {'action': 'echo'})\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--dtq-url={redis_url}",
            "test_author.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


class _BrokenStore(MemoryEngine):
    """A memory engine whose store fails every fetch with an error no retry mends."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = threading.Event()

    def fetch(self, *args: Any, **kwargs: Any) -> Batch:
        self.asked.set()
        raise EngineError("the store broke")

    def wait_and_fetch(self, *args: Any, **kwargs: Any) -> Batch:
        return self.fetch()


def test_running_fails_the_block_with_what_ended_the_worker() -> None:
    worker = Worker(["test_only"], engine=_BrokenStore(), mode="thread", poll_s=0.05)
    with (
        pytest.raises(AssertionError, match="the worker's run ended with EngineError") as caught,
        WorkerThread(worker) as thread,
    ):
        wait_for(lambda: not thread.is_alive())
        with pytest.raises(AssertionError, match="the worker's run ended with EngineError"):
            thread.check()
    assert isinstance(caught.value.__cause__, EngineError)
    engine = _BrokenStore()
    worker = Worker(["test_only"], engine=engine, mode="thread", poll_s=0.05)
    with pytest.raises(AssertionError, match="the worker's run ended with EngineError"), running(worker):
        assert engine.asked.wait(10)


def test_running_lets_the_block_s_own_failure_through() -> None:
    worker = Worker(["test_only"], engine=_BrokenStore(), mode="thread", poll_s=0.05)
    with pytest.raises(KeyError, match="the block's"), running(worker):
        raise KeyError("the block's")


def test_running_ends_quietly_for_a_worker_that_was_only_stopped(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    job = dtq_queue.enqueue("test_only", {"action": "echo"})
    with running(dtq_make_worker(mode="thread", poll_s=0.05)):
        done = wait_for(
            lambda: (found := dtq_queue.get(job.id)) is not None and found.status.is_final and found
        )
    assert_succeeded(done, {"action": "echo"})
