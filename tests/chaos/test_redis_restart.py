"""Redis killed (SIGKILL) and restarted mid-run, with the append-only file on.

With ``appendfsync always`` no acknowledged append may be lost; with
``everysec`` the loss window is measured: only appends acknowledged in about
the last second before the crash may be missing. Either way the producer and
the worker processes reconnect by themselves and keep consuming.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dtqtest import RedisServer, dtq_command, free_port, wait_for

from dtq_core import EngineError, JobStatus, Queue

Report = Callable[..., None]


class CrashableRedis:
    """A private redis-server with an append-only file, killed and restarted on the same port."""

    def __init__(self, directory: Path, fsync: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = ("--appendonly", "yes", "--appendfsync", fsync)
        self.server = RedisServer(directory, *self.args, port=self.port)
        self.url = self.server.url

    def crash(self) -> None:
        self.server.client.close()
        self.server.process.kill()
        self.server.process.wait(10)

    def restart(self) -> None:
        self.server = RedisServer(self.directory, *self.args, port=self.port)

    def stop(self) -> None:
        if self.server.process.poll() is None:
            self.server.stop()


@pytest.fixture(params=["always", "everysec"])
def crashable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CrashableRedis]:
    redis = CrashableRedis(tmp_path / "aof", str(request.param))
    yield redis
    redis.stop()


def append_until_acknowledged(queue: Queue, job_id: str, deadline_s: float = 60.0) -> float:
    """Append with retries under the same id (safe: ids dedupe); return when it was acknowledged."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            queue.enqueue("test_only", {"action": "echo", "id": job_id}, id=job_id)
            return time.monotonic()
        except EngineError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_workers(url: str, directory: Path, count: int) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, DTQ_URL=url, DTQ_NAMESPACE="restart")
    command = [
        *dtq_command(),
        "worker",
        "--plugins",
        "test_only",
        "--mode",
        "thread",
        "-c",
        "2",
        "--lease",
        "3",
    ]
    workers = []
    for n in range(count):
        # Logs go to files: a pipe nobody reads would fill up and block the worker.
        with (directory / f"worker{n}.log").open("w") as log:
            workers.append(
                subprocess.Popen(command, env=env, cwd=directory, stdout=log, stderr=subprocess.STDOUT)
            )
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]], directory: Path) -> list[str]:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    return [path.read_text() for path in sorted(directory.glob("worker*.log"))]


@pytest.mark.timeout(240)
def test_redis_crash_and_restart_mid_run(
    crashable: CrashableRedis, tmp_path: Path, scale: Callable[[int, int], int], report: Report
) -> None:
    total = scale(600, 6000)
    crash_at = total // 2
    workers = start_workers(crashable.url, tmp_path, 2)
    acknowledged: dict[str, float] = {}
    crashed_at = 0.0
    try:
        with Queue(["test_only"], crashable.url, namespace="restart") as queue:
            wait_for(lambda: len(queue.workers()) == 2)
            for n in range(total):
                if n == crash_at:
                    crashed_at = time.monotonic()
                    crashable.crash()
                    time.sleep(1.0)  # producers and workers see the server gone
                    crashable.restart()
                job_id = f"j{n}"
                acknowledged[job_id] = append_until_acknowledged(queue, job_id)
            missing, unfinished = _settle(queue, acknowledged)
            assert all(w.poll() is None for w in workers), "a worker died when Redis went away"
            # The same worker processes still consume after the restart: the newest job ran on one of them.
            newest = queue.get(f"j{total - 1}")
            assert newest is not None and newest.worker is not None
            assert int(newest.worker.split(":")[1]) in {w.pid for w in workers}
    finally:
        logs = stop_workers(workers, tmp_path)
    lost_window = [crashed_at - acknowledged[job_id] for job_id in missing]
    report(
        fsync=crashable.args[-1],
        jobs=total,
        acknowledged_before_crash=crash_at,
        lost=len(missing),
        lost_acked_within_s=round(max(lost_window), 3) if lost_window else 0.0,
    )
    assert not unfinished, f"acknowledged jobs not finished: {sorted(unfinished)[:10]}"
    if crashable.args[-1] == "always":
        assert not missing, f"appendfsync always lost acknowledged jobs: {sorted(missing)[:10]}"
    else:
        # everysec: what can go is the last second or so of writes before the crash, nothing older.
        assert max(lost_window, default=0.0) < 2.5, lost_window
    assert not any("Traceback" in log for log in logs), logs


def _settle(queue: Queue, acknowledged: dict[str, float]) -> tuple[set[str], set[str]]:
    """Wait until every surviving job is final; return the ids missing and those never finished."""
    deadline = time.monotonic() + 120
    while True:
        jobs = {job_id: queue.get(job_id) for job_id in acknowledged}
        missing = {job_id for job_id, job in jobs.items() if job is None}
        unfinished = {
            job_id
            for job_id, job in jobs.items()
            if job is not None and job.status is not JobStatus.SUCCEEDED
        }
        if not unfinished or time.monotonic() > deadline:
            return missing, unfinished
        time.sleep(0.5)
