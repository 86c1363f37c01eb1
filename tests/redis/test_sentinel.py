"""Redis Sentinel: a real master, two replicas and a sentinel; the master is killed mid-run.

With ``wait_replicas=1`` an append is acknowledged only once a replica holds it,
so when the sentinel promotes a replica no acknowledged job is missing; the
producer and the worker process find the new master by themselves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dtqtest import RedisSentinelSet, dtq_command, wait_for

from dtq_core import EngineError, Job, JobStatus, Queue, open_engine


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[RedisSentinelSet]:
    watched = RedisSentinelSet(tmp_path / "sentinel")
    yield watched
    watched.stop()


def append_until_acknowledged(queue: Queue, job_id: str, deadline_s: float = 60.0) -> None:
    """Append, retrying with the same id (an idempotency key) until the engine acknowledges it."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            queue.enqueue("test_only", {"action": "echo", "n": job_id}, id=job_id)
            return
        except EngineError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def get_retrying(queue: Queue, job_id: str) -> Job | None:
    try:
        return queue.get(job_id)
    except EngineError:
        return None


def test_sentinel_url_reaches_the_master(sentinels: RedisSentinelSet) -> None:
    engine = open_engine(sentinels.url, namespace="sentinel-ping")
    try:
        engine.ping()
        assert engine.client.connection_pool.get_master_address()[1] == sentinels.master.port  # type: ignore[attr-defined]
    finally:
        engine.close()


def test_failover_mid_run_loses_no_acknowledged_job(sentinels: RedisSentinelSet, tmp_path: Path) -> None:
    url = f"{sentinels.url}?wait_replicas=1&wait_timeout_s=2"
    env = {**os.environ, "DTQ_URL": url, "DTQ_NAMESPACE": "failover"}
    worker = subprocess.Popen(
        [*dtq_command(), "worker", "--plugins", "test_only", "--mode", "thread", "-c", "2", "--lease", "5"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    acknowledged: list[str] = []
    old_master = sentinels.master.port
    try:
        with Queue(["test_only"], url, namespace="failover") as queue:
            wait_for(queue.engine.workers)  # the run is under way before the master dies
            for n in range(300):
                if n == 100:
                    os.kill(sentinels.master.process.pid, signal.SIGKILL)
                append_until_acknowledged(queue, f"j{n}")
                acknowledged.append(f"j{n}")
            assert wait_for(lambda: sentinels.master_port() != old_master, timeout=30)

            def unfinished() -> dict[str, str]:
                jobs = {job_id: get_retrying(queue, job_id) for job_id in acknowledged}
                return {
                    job_id: "missing" if job is None else job.status.value
                    for job_id, job in jobs.items()
                    if job is None or job.status is not JobStatus.SUCCEEDED
                }

            deadline = time.monotonic() + 60
            while (left := unfinished()) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not left, f"acknowledged jobs not succeeded: {left}"
            before, after = queue.get("j0"), queue.get("j299")
        assert before is not None and after is not None
        # One worker process served both masters: it followed the failover.
        assert before.worker is not None and after.worker is not None
        assert before.worker.split(":")[1] == after.worker.split(":")[1] == str(worker.pid)
        assert worker.poll() is None, "the worker died during the failover"
    finally:
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, output
