"""Worker-to-job-process cost alone: no-op jobs through a ProcessRunner, no Redis.

Runs ``N`` test_only echo jobs through one :class:`dtq_core.runner.ProcessRunner`
the way a worker's slot does (each job's successors sent ahead), and prints the
rate and the CPU per job of the worker's side and of the child. Noisy on a
shared machine: compare two versions in interleaved runs.

Usage: python benchmarks/pipe.py [N]     (needs dtq-plugins-testonly installed)
"""

from __future__ import annotations

import sys
import time

import psutil

from dtq_core.caller import Control
from dtq_core.engine import Lease
from dtq_core.job import Job
from dtq_core.plugin import PluginRegistry
from dtq_core.runner import ProcessRunner


def main(n: int) -> None:
    registry = PluginRegistry(["test_only"])
    plugin = registry.get("test_only")
    leases = [
        Lease(
            Job.from_dict(
                {"id": f"job-{i:08d}", "job": {"plugin": "test_only", "data": {"action": "echo", "i": i}}}
            ),
            f"w/{i}",
        )
        for i in range(n + 1)
    ]
    runner = ProcessRunner(registry, None, None)  # type: ignore[arg-type]  # echo jobs ask nothing
    following = 2  # the next lease to send ahead: job 0 warms up, job 1 is the first timed

    def ahead() -> Lease | None:
        nonlocal following
        if following > n:
            return None
        following += 1
        return leases[following - 1]

    runner.run(Control(leases[0]), None, plugin)  # starts the child
    assert runner._process is not None and runner._process.pid is not None
    child = psutil.Process(runner._process.pid)
    child_before, cpu_before, started = child.cpu_times(), time.process_time(), time.perf_counter()
    for i in range(1, n + 1):
        attempt = runner.run(Control(leases[i]), None, plugin, ahead)
        assert attempt is not None, "the job process died"
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    child_after = child.cpu_times()
    child_cpu = child_after.user + child_after.system - child_before.user - child_before.system
    runner.close()
    print(
        f"{n / wall:,.0f} jobs/s; CPU per job: worker {cpu / n * 1e6:.1f} µs, "
        f"child {child_cpu / n * 1e6:.1f} µs, together {(cpu + child_cpu) / n * 1e6:.1f} µs"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30_000)
