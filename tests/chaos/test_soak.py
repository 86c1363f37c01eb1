"""Load and soak: many jobs through four worker processes.

Redis memory must come back down once results expire, worker memory must not
grow with the number of jobs, and throughput must not decay over the run.
Bounded form: 10,000 jobs; long form (``nox -s chaos``): 200,000.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
import redis
from dtqtest import RedisServer, dtq_command, wait_for

from dtq_core import Queue

Report = Callable[..., None]
RESULT_TTL_S = 5
SEGMENTS = 5


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.timeout(1800)
def test_soak_memory_stays_bounded_and_throughput_does_not_decay(
    tmp_path: Path, scale: Callable[[int, int], int], report: Report
) -> None:
    total = scale(10_000, 200_000)
    server = RedisServer(tmp_path)
    client = redis.Redis(port=server.port)
    env = dict(os.environ, DTQ_URL=server.url, DTQ_NAMESPACE="soak", DTQ_RESULT_TTL_S=str(RESULT_TTL_S))
    command = [*dtq_command(), "worker", "--plugins", "test_only", "--mode", "thread", "-c", "2"]
    workers: list[subprocess.Popen[bytes]] = []
    logs: list[IO[str]] = []
    try:
        baseline = int(client.info("memory")["used_memory"])
        with Queue(["test_only"], server.url, namespace="soak") as queue:
            for n in range(total):
                queue.enqueue("test_only", {"action": "echo", "n": n})
            queued_memory = int(client.info("memory")["used_memory"])
            # Logs go to files: a pipe nobody reads would fill and block the workers.
            logs = [(tmp_path / f"worker{n}.log").open("w") for n in range(4)]
            workers = [
                subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
                for log in logs
            ]
            marks, early_rss = _watch(queue, total, workers)
            late_rss = [rss_mb(w.pid) for w in workers]
            # Every record expires RESULT_TTL_S after its job ends: wait for Redis to forget them.
            wait_for(lambda: client.dbsize() < 50, timeout=RESULT_TTL_S * 6, interval=0.5)
            settled_memory = int(client.info("memory")["used_memory"])
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        for log in logs:
            log.close()
        client.close()
        server.stop()
    rates = [round(total / SEGMENTS / (b - a)) for a, b in itertools.pairwise(marks)]
    report(
        jobs=total,
        workers=4,
        jobs_per_s_by_fifth=rates,
        redis_mb_baseline=round(baseline / 2**20, 1),
        redis_mb_queued=round(queued_memory / 2**20, 1),
        redis_mb_after_expiry=round(settled_memory / 2**20, 1),
        worker_rss_mb_early=[round(m, 1) for m in early_rss],
        worker_rss_mb_end=[round(m, 1) for m in late_rss],
    )
    assert not any("Traceback" in path.read_text() for path in tmp_path.glob("worker*.log"))
    # What stays is bounded by caps, not by the job count: the capped event stream, per-minute counts.
    assert settled_memory - baseline < 16 * 2**20
    assert all(late - early < 40 for early, late in zip(early_rss, late_rss, strict=True))
    assert rates[-1] > 0.4 * max(rates), rates  # noisy shared machine: a collapse, not a wobble


def _watch(
    queue: Queue, total: int, workers: list[subprocess.Popen[bytes]]
) -> tuple[list[float], list[float]]:
    """Time marks at 0, 1/5 ... 5/5 of the jobs done, and the workers' memory after the first fifth."""
    marks = [time.monotonic()]
    early_rss: list[float] = []
    deadline = time.monotonic() + 1500
    while len(marks) <= SEGMENTS and time.monotonic() < deadline:
        stats = queue.stats().queues[0]
        done = total - stats.waiting - stats.running
        while len(marks) <= SEGMENTS and done >= total * len(marks) / SEGMENTS:
            marks.append(time.monotonic())
        if len(marks) > 1 and not early_rss:
            early_rss = [rss_mb(w.pid) for w in workers]
        assert all(w.poll() is None for w in workers), "a worker died"
        time.sleep(0.05)
    assert len(marks) == SEGMENTS + 1, f"only {len(marks) - 1} fifths of the jobs done in time"
    return marks, early_rss
