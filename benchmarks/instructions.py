"""Server work per job in instructions, counted by callgrind: a cost that noise does not move.

Runs a private redis-server under ``valgrind --tool=callgrind`` and counts the
instructions it executes for: dtq's bulk append (per job), dtq's one-by-one
append (per call), a leased-and-completed job in a thread-mode worker with
prefetch 64 (per job), and, for scale, the two reference calls the
comparison uses: a pipelined ``EVALSHA`` of ``return 1`` (the server-limit
measure) and a plain ``LPUSH`` (what Huey's and RQ's enqueue send). Counts are
the same from run to run within about 1%, whatever else the machine is doing;
the processing figure also holds the worker's periodic calls, which callgrind
slows, so it moves more.

Usage: python benchmarks/instructions.py [N, default 10000]   (needs valgrind and redis-server;
about a minute)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from server import free_port

from dtq_core import Queue, Worker

DATA = {"action": "echo"}


class CountedServer:
    """A redis-server under callgrind; :meth:`count` runs a step and returns the instructions it cost."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={self.dir}/callgrind.out",
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port)
        for _ in range(300):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("redis-server under valgrind did not start")

    def count(self, step: Callable[[], object]) -> int:
        """Instructions the server ran during ``step`` (each dump zeroes the counters)."""
        self._dump()
        step()
        return self._dump()

    def _dump(self) -> int:
        subprocess.run(["callgrind_control", "-d", str(self.process.pid)], capture_output=True, check=True)
        newest = max(Path(self.dir).glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
        found = re.search(r"^(?:summary|totals):\s*(\d+)", newest.read_text(), re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no instruction total in {newest}")
        return int(found.group(1))

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait()


def main(n: int) -> None:
    server = CountedServer()
    try:
        queue = Queue(["test_only"], server.url, namespace="instructions")
        # Scripts loaded, structures made, Lua's collector in its stride: without the
        # single appends, the first thousands of bulk jobs cost about 10% more.
        queue.enqueue_many("test_only", (DATA for _ in range(500)))
        for _ in range(20):
            queue.enqueue("test_only", DATA)
        singles = max(1, n // 5)
        rows = {
            "dtq bulk append, per job": server.count(
                lambda: queue.enqueue_many("test_only", (DATA for _ in range(n)))
            )
            / n,
            "dtq one-by-one append, per call": server.count(
                lambda: [queue.enqueue("test_only", DATA) for _ in range(singles)]
            )
            / singles,
        }
        server.client.flushall()
        queue.enqueue_many("test_only", (DATA for _ in range(n)))
        worker = Worker(["test_only"], server.url, namespace="instructions", mode="thread", prefetch=64)
        done: list[object] = []
        rows["dtq processed job (thread, prefetch 64), per job"] = server.count(
            lambda: done.extend(worker.get_jobs())
        ) / max(1, len(done))
        worker.close()
        queue.close()
        sha = server.client.script_load("return 1")

        def pipelined() -> None:
            pipe = server.client.pipeline(transaction=False)
            for _ in range(n):
                pipe.evalsha(sha, 0)
            pipe.execute()

        rows["EVALSHA 'return 1', pipelined, per call"] = server.count(pipelined) / n
        rows["LPUSH, one per round trip, per call"] = (
            server.count(lambda: [server.client.lpush("instructions:list", "x") for _ in range(singles)])
            / singles
        )
    finally:
        server.close()
    for name, value in rows.items():
        print(f"{name:52} {value:>10,.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
