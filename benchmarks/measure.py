"""The measures, the same for every system: enqueue, bulk enqueue, processing, latency, memory.

Each returns a plain dict for the JSON file. Costs per job come from the
server's own accounting (``INFO all``: commandstats, total_reads_processed,
used_cpu_*) and from the worker processes' own CPU times (psutil), read at the
first and at the last completion, so start-up and shut-down stay out of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from server import RedisServer, Snapshot
from systems import BENCH_DIR, NotAvailable, System, Variant

#: How often the completion probe runs (seconds): 100 cheap commands a second at most.
POLL_S = 0.01
#: Longest wait for the first completion (worker start-up included), seconds.
FIRST_TIMEOUT_S = 60.0
#: Longest time without any progress before a processing measure is abandoned, seconds.
STALL_TIMEOUT_S = 20.0
#: Longest wait for one result in the latency measure, seconds.
RESULT_TIMEOUT_S = 10.0
#: Jobs run (and not timed) before the latency measure: first-call set-up is not latency.
LATENCY_WARM_UP = 5
#: The latency measure stops after this long even if fewer jobs ran, seconds.
LATENCY_BUDGET_S = 30.0


@dataclass(frozen=True)
class Sizes:
    """How many jobs each measure uses."""

    enqueue: int
    bulk: int
    processing: int
    latency: int
    limit_requests: int


def guarded(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measure; a failure becomes ``{"error": ...}`` instead of ending the run."""
    try:
        return measure()
    except NotAvailable as exc:
        return {"na": str(exc)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}


def per_job(before: Snapshot, after: Snapshot, jobs: int) -> dict[str, Any]:
    """Redis commands, round trips and server CPU per job between two snapshots."""
    return {
        "commands_per_job": after.commands_since(before) / jobs,
        "round_trips_per_job": after.reads_since(before) / jobs,
        "redis_cpu_us_per_job": after.cpu_since(before) * 1e6 / jobs,
        "commands_by_name_per_job": {
            name: round(calls / jobs, 3) for name, calls in after.by_command_since(before).items()
        },
    }


def enqueue_one_by_one(system: System, server: RedisServer, count: int) -> dict[str, Any]:
    """Throughput of ``count`` single enqueues from this process, their cost, and queued memory."""
    server.flush()
    before = server.snapshot()
    started, cpu = time.perf_counter(), time.thread_time()
    system.enqueue_serial(count)
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    after = server.snapshot()
    queued = after.used_memory - before.used_memory
    return {
        "jobs": count,
        "seconds": elapsed,
        "per_s": count / elapsed,
        # The producer's own CPU (this thread's): what a call costs the application.
        "client_cpu_us_per_job": cpu * 1e6 / count,
        **per_job(before, after, count),
        "memory_per_100k_queued_mb": queued * 100_000 / count / 2**20,
    }


#: Bulk enqueues timed per system, at most; the median counts. A fast one takes a
#: fraction of a second, at the mercy of whatever else the machine does then.
BULK_RUNS = 5
#: Another bulk enqueue is timed only while the ones before took less than this (s):
#: a slow system's single run is long enough to be steady, and the comparison stays short.
BULK_BUDGET_S = 3.0


def enqueue_bulk(system: System, server: RedisServer, count: int) -> dict[str, Any]:
    """Throughput of a bulk enqueue of ``count`` jobs, over up to :data:`BULK_RUNS` runs together,
    and its cost (from the median run).

    The runs are pooled (all their jobs over all their time), as one long run would
    count them: a run of a fast system lasts a tenth of a second, and a full garbage
    collection of the producer's heap (40 ms in the harness's process, all of the
    peers imported) lands in some runs and not others, so their rates split in two
    (dtq's: 80,000-88,000 and 115,000-127,000 jobs/s in one run) and the median
    is whichever half has one run more. A slow system's single run holds its
    collections at the rate they come; pooled, so do a fast system's runs.
    """
    runs: list[dict[str, Any]] = []
    while len(runs) < BULK_RUNS and sum(run["seconds"] for run in runs) < BULK_BUDGET_S:
        server.flush()
        before = server.snapshot()
        started = time.perf_counter()
        handles = system.enqueue_many(count)
        elapsed = time.perf_counter() - started
        after = server.snapshot()
        if len(handles) != count:
            raise RuntimeError(f"bulk enqueue returned {len(handles)} handles for {count} jobs")
        runs.append({"seconds": elapsed, "per_s": count / elapsed, **per_job(before, after, count)})
    median = sorted(runs, key=lambda run: run["per_s"])[len(runs) // 2]
    seconds = sum(run["seconds"] for run in runs)
    return {
        "jobs": count,
        "runs": len(runs),
        "per_s_each": [run["per_s"] for run in runs],
        **median,
        "median_per_s": median["per_s"],
        "seconds": seconds,
        "per_s": count * len(runs) / seconds,
    }


class Workers:
    """Worker processes of one system, started together, output to files, stopped by their ids."""

    def __init__(self, system: System, variant: Variant, count: int, logdir: Path) -> None:
        self.system, self.variant, self.count, self.logdir = system, variant, count, logdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> None:
        """Start the processes (each in a session of its own, so its children can be stopped too)."""
        env = {**os.environ, **self.system.worker_env(self.variant), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
        argv = self.system.worker_argv(self.variant)
        for index in range(self.count):
            log = self.logdir / f"{self.system.name}-{self.variant.label}-{self.count}p-{index}.log"
            with log.open("wb") as out:
                self.processes.append(
                    subprocess.Popen(
                        argv,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=self.logdir,
                        env=env,
                        start_new_session=True,
                    )
                )
            self.logs.append(log)

    def check(self) -> None:
        """Raise if a worker exited (with the end of its log)."""
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"worker exited with {process.returncode}; its log ends:\n{tail}")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the workers and all their descendants."""
        total = 0.0
        for process in self.processes:
            try:
                root = psutil.Process(process.pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for member in tree:
                try:
                    t = member.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def stop(self) -> None:
        """SIGTERM each worker, then SIGKILL its process group after 10 s."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        for process in self.processes:  # children left behind by a worker that exited
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _wait_for(probe: Callable[[], int], target: int, workers: Workers, first_timeout_s: float) -> int:
    """Poll ``probe`` until it reaches ``target``; raise on a dead worker or no progress."""
    seen, last_change = -1, time.monotonic()
    timeout_s = first_timeout_s
    while True:
        value = probe()
        if value >= target:
            return value
        now = time.monotonic()
        if value != seen:
            seen, last_change = value, now
        elif now - last_change > timeout_s:
            raise TimeoutError(f"no progress for {timeout_s:.0f} s: {value} of {target} reached")
        if seen > 0:
            timeout_s = STALL_TIMEOUT_S
        workers.check()
        time.sleep(POLL_S)


def _drain(system: System, server: RedisServer, workers: Workers, handles: list[Any]) -> dict[str, Any]:
    """Watch the queued jobs run, from the first completion to the last; return rate and costs."""
    total = len(handles)
    r = server.redis
    started = time.perf_counter()
    first = _wait_for(lambda: system.finished(r, total), 1, workers, FIRST_TIMEOUT_S)
    a, cpu_a = server.snapshot(), workers.cpu_s()
    _wait_for(lambda: system.finished(r, total), total, workers, FIRST_TIMEOUT_S)
    b, cpu_b = server.snapshot(), workers.cpu_s()
    end = b.at
    if system.results_present(r, handles) < total:  # the probe ran ahead of the results
        _wait_for(lambda: system.results_present(r, handles), total, workers, STALL_TIMEOUT_S)
        end = time.perf_counter()
    jobs = total - first
    return {
        "jobs": total,
        "timed_jobs": jobs,
        "timed_from": "first completion seen to last completion seen",
        "seconds": end - a.at,
        "per_s": jobs / (end - a.at),
        "seconds_to_first_completion": a.at - started,
        "worker_cpu_us_per_job": (cpu_b - cpu_a) * 1e6 / jobs,
        **per_job(a, b, jobs),
    }


def latency(system: System, count: int) -> dict[str, Any]:
    """Append-to-result latency seen by the producer, one job at a time on an idle worker."""
    for _ in range(LATENCY_WARM_UP):
        system.wait(system.enqueue(), RESULT_TIMEOUT_S)
    samples: list[float] = []
    deadline = time.monotonic() + LATENCY_BUDGET_S
    for _ in range(count):
        started = time.perf_counter()
        system.wait(system.enqueue(), RESULT_TIMEOUT_S)
        samples.append(time.perf_counter() - started)
        if time.monotonic() > deadline:
            break
    samples.sort()
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "jobs": len(samples),
        "warm_up_jobs": LATENCY_WARM_UP,
        "p50_ms": cuts[49] * 1e3,
        "p99_ms": cuts[98] * 1e3,
        "mean_ms": statistics.fmean(samples) * 1e3,
        "max_ms": samples[-1] * 1e3,
    }


def latency_on_a_fresh_worker(
    system: System, variant: Variant, jobs: int, server: RedisServer, logdir: Path
) -> dict[str, Any]:
    """:func:`latency` of ``jobs`` lone jobs on a worker process of ``variant`` started for it,
    on an emptied server."""
    server.flush()
    workers = Workers(system, variant, 1, logdir)
    workers.start()
    try:
        return latency(system, jobs)  # its untimed warm-up jobs wait for the worker to start
    finally:
        workers.stop()


def first_failure(runs: list[dict[str, Any]], figure: str) -> dict[str, Any] | None:
    """The first of a measure's rounds that has no ``figure`` (it failed, or does not apply), if any."""
    return next((run for run in runs if figure not in run), None)


def median_latency(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of the rounds' p50 and p99 (each round's kept too); a failed round: its failure."""
    if (failed := first_failure(runs, "p50_ms")) is not None:
        return failed
    return {
        "jobs": sum(run["jobs"] for run in runs),
        "p50_ms": statistics.median(run["p50_ms"] for run in runs),
        "p99_ms": statistics.median(run["p99_ms"] for run in runs),
        "rounds": [{"p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "jobs": run["jobs"]} for run in runs],
    }


def processing(
    system: System,
    variant: Variant,
    procs: int,
    jobs: int,
    server: RedisServer,
    logdir: Path,
    results_memory: bool = False,
) -> dict[str, Any]:
    """Queue ``jobs`` jobs, then start ``procs`` workers and time them.

    With ``results_memory``, the memory the kept results take is read after.
    """
    server.flush()
    empty = server.used_memory()
    handles = system.backlog(jobs)
    if system.finished(server.redis, jobs) != 0:
        raise RuntimeError("the completion probe counts jobs as finished before any worker ran")
    workers = Workers(system, variant, procs, logdir)
    try:
        workers.start()
        out = _drain(system, server, workers, handles)
        if results_memory:
            results = server.used_memory() - empty
            out["memory_per_100k_results_mb"] = results * 100_000 / jobs / 2**20
        return out
    finally:
        workers.stop()
