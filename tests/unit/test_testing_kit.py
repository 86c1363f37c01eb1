"""The testing kit plugin authors use: dtq's pytest fixtures and assertions."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dtq_core import Job, JobStatus, Queue, ValidationError
from dtq_core.testing import assert_failed, assert_succeeded, check_plugin_installed

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
