"""A quick look at dtq's own costs on a private redis-server (not the peer comparison of issue 8).

Measures, for N no-op jobs (test_only "echo"):
  * enqueue rate, one job per call, from one process;
  * processing rate of one worker process with concurrency 1, thread mode and process mode;
  * Redis commands per job (INFO commandstats before and after, scripts' inner calls included).

Usage: python benchmarks/quick.py [N]     (needs redis-server on PATH and dtq-plugins-testonly installed)
Figures vary run to run on a shared machine by up to about 20%.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time

import redis
from server import free_port

from dtq_core import Queue, Worker


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


def main(n: int) -> None:
    port = free_port()
    workdir = tempfile.mkdtemp()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for mode in ("thread", "process"):
            namespace = f"bench-{mode}"
            with Queue(["test_only"], url, namespace=namespace) as queue:
                before = commands(client)
                started = time.perf_counter()
                for i in range(n):
                    queue.enqueue("test_only", {"action": "echo", "i": i})
                enqueue_s = time.perf_counter() - started
                enqueue_cmds = commands(client) - before
            worker = Worker(["test_only"], url, namespace=namespace, mode=mode, poll_s=0.05)
            before = commands(client)
            started = time.perf_counter()
            done = worker.get_jobs()
            process_s = time.perf_counter() - started
            process_cmds = commands(client) - before
            worker.close()
            assert len(done) == n, len(done)
            print(
                f"{mode:7} mode: enqueue {n / enqueue_s:8.0f} jobs/s ({enqueue_cmds / n:.1f} cmds/job)   "
                f"process {n / process_s:8.0f} jobs/s ({process_cmds / n:.1f} cmds/job)"
            )
    finally:
        client.close()
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
