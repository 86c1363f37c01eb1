"""Issue 8's benchmark: dtq and its peers on one private redis-server, no-op jobs.

For each system: enqueue throughput (one job per call, in rounds that take
every system in turn, and bulk), processing
throughput of 10,000 queued jobs with one and with two worker processes of
concurrency 1, append-to-result latency (p50, p99; in rounds that take every
system in turn, each on a fresh worker), Redis memory per 100,000
queued jobs and per 100,000 kept results, and costs per job (Redis commands,
round trips, server CPU, worker CPU). The server's own ceiling (redis-benchmark,
pipelined EVALSHA) is measured in the same run.

Usage (``nox -s bench -- ARGS`` runs it with every peer installed)::

    python benchmarks/run.py [--quick] [--only dtq,rq] [--out benchmarks/results]

Writes ``latest.json`` and ``chart.png`` to the output directory and prints the tables.
A failure of one system or measure is recorded (``error`` in the table) and the run goes on.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure
import report
import systems
from server import RedisServer, private_redis

#: ``latency`` is per round (see latency_rounds).
FULL = measure.Sizes(enqueue=10_000, bulk=10_000, processing=10_000, latency=300, limit_requests=200_000)
QUICK = measure.Sizes(enqueue=500, bulk=500, processing=500, latency=30, limit_requests=20_000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a minute or two")
    parser.add_argument("--only", default=",".join(systems.NAMES), help="systems to run, comma-separated")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(systems.NAMES))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(systems.NAMES)}")
    return args


def machine(server: RedisServer) -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        model = models[0] if models else ""
    return {
        "uname": subprocess.run(["uname", "-a"], capture_output=True, text=True, check=False).stdout.strip(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "redis_server": server.version(),
    }


def log(message: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_variant(
    system: systems.System, variant: systems.Variant, sizes: measure.Sizes, server: RedisServer, logdir: Path
) -> dict[str, Any]:
    """Processing with one and with two worker processes (the kept results' memory with the one)."""
    jobs = min(sizes.processing, variant.max_jobs or sizes.processing)
    out: dict[str, Any] = {"settings": variant.settings}
    for procs in (1, 2):
        run = functools.partial(measure.processing, system, variant, procs, jobs, server, logdir, procs == 1)
        out[f"processing_{procs}"] = result = measure.guarded(run)
        log(f"{system.name}/{variant.label}: {procs} process(es) {report.brief(result)}")
    return out


#: Rounds of the one-by-one enqueue measure, every system in turn in each round.
ENQUEUE_ROUNDS = 3


def load_systems(
    names: list[str], server: RedisServer
) -> tuple[dict[str, systems.System], dict[str, dict[str, Any]]]:
    """The systems' adapters, made once for the whole run, and the error of each that failed."""
    loaded: dict[str, systems.System] = {}
    failed: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            loaded[name] = systems.load(name, server.url)
        except Exception as exc:
            failed[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return loaded, failed


def enqueue_rounds(
    loaded: dict[str, systems.System], sizes: measure.Sizes, server: RedisServer
) -> dict[str, dict[str, Any]]:
    """One-by-one enqueue of every system, in :data:`ENQUEUE_ROUNDS` interleaved rounds.

    A single enqueue measure takes a second or two, and this shared machine's
    speed moves between minutes: measured once each, minutes apart, two
    systems' rates were compared at different speeds (dtq's ratio to Huey
    came out 1.14 and 1.41 in two runs of the same code). In rounds, a slow
    spell touches every system; each system's figures are those of its median
    round (all from one measure, so they agree), with every round's rate kept.
    """
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in loaded}
    for round_ in range(ENQUEUE_ROUNDS):
        for name, system in loaded.items():
            out = measure.guarded(
                lambda system=system: measure.enqueue_one_by_one(system, server, sizes.enqueue)
            )
            rounds[name].append(out)
            log(f"{name}: enqueue, round {round_ + 1} of {ENQUEUE_ROUNDS}: {report.brief(out)}")
    return {name: _median_round(runs) for name, runs in rounds.items()}


#: Rounds of the latency measure, every system's variants in turn in each round.
LATENCY_ROUNDS = 3


def latency_rounds(
    runs: list[tuple[str, str]], jobs: int, server: RedisServer, logdir: Path
) -> dict[tuple[str, str], dict[str, Any]]:
    """Lone-job latency of each (system, variant) of ``runs``, in interleaved rounds.

    Measured once per system, minutes apart, the same system's p50 moved by up
    to half between two such minutes on this shared machine (Huey's measured
    0.43 and 0.80 ms an hour apart), more than the systems differ. In rounds,
    each of a fresh one-process worker, a slow spell touches every system;
    each figure is the median over the rounds, each round's kept.
    """
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {run: [] for run in runs}
    for round_ in range(LATENCY_ROUNDS):
        for name, label in runs:
            out = measure.guarded(
                lambda name=name, label=label: _latency_once(name, label, jobs, server, logdir)
            )
            seen[(name, label)].append(out)
            said = (
                f"p50 {out['p50_ms']:.3f} ms, p99 {out['p99_ms']:.3f} ms"
                if "p50_ms" in out
                else report.brief(out)
            )
            log(f"{name}/{label}: latency, round {round_ + 1} of {LATENCY_ROUNDS}: {said}")
    return {run: measure.median_latency(outs) for run, outs in seen.items()}


def _latency_once(name: str, label: str, jobs: int, server: RedisServer, logdir: Path) -> dict[str, Any]:
    system = systems.load(name, server.url)
    try:
        variant = next(v for v in system.variants if v.label == label)
        return measure.latency_on_a_fresh_worker(system, variant, jobs, server, logdir)
    finally:
        system.close()


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median rate, and every round's rate (a failed round: the failure)."""
    if (failed := measure.first_failure(runs, "per_s")) is not None:
        return failed
    ranked = sorted(runs, key=lambda run: run["per_s"])
    return {**ranked[len(ranked) // 2], "rounds_per_s": [run["per_s"] for run in runs]}


def run_system(
    name: str,
    system: systems.System,
    enqueue: dict[str, Any],
    sizes: measure.Sizes,
    server: RedisServer,
    logdir: Path,
) -> dict[str, Any]:
    """Every other measure of one system; failures are recorded, never raised."""
    started = time.perf_counter()
    server.flush()
    out: dict[str, Any] = {"version": system.version(), "settings": system.settings, "variants": {}}
    try:
        out["enqueue"] = enqueue
        out["bulk"] = measure.guarded(lambda: measure.enqueue_bulk(system, server, sizes.bulk))
        log(f"{name}: bulk enqueue {report.brief(out['bulk'])}")
        for variant in system.variants:
            out["variants"][variant.label] = run_variant(system, variant, sizes, server, logdir)
    finally:
        system.close()
        server.flush()
    out["seconds"] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print, write the JSON and draw the chart."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dtq-bench-") as tmp, private_redis(Path(tmp)) as server:
        log(f"private redis-server {server.version()} on port {server.port}; worker logs in {tmp}")
        results: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(server),
            "quick": args.quick,
            "sizes": sizes.__dict__,
            "redis_server": "--save '' --appendonly no, loopback, private; FLUSHALL between measures",
        }
        results["limit"] = measure.guarded(lambda: server.limit(sizes.limit_requests))
        log(f"server limit: {report.brief(results['limit'], 'evalsha_per_s')}")
        loaded, failed = load_systems(args.only, server)
        enqueues = enqueue_rounds(loaded, sizes, server)
        results["systems"] = {
            name: failed[name]
            if name in failed
            else run_system(name, loaded[name], enqueues[name], sizes, server, Path(tmp))
            for name in args.only
        }
        runs = [(name, variant.label) for name, system in loaded.items() for variant in system.variants]
        for (name, label), out in latency_rounds(runs, sizes.latency, server, Path(tmp)).items():
            variant = results["systems"][name]["variants"][label]
            # Where the report looks for it: with the one-process worker's figures.
            variant.setdefault("processing_1", {})["latency"] = out
    results["seconds"] = time.perf_counter() - started
    results["targets"] = report.targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    report.print_tables(results)
    report.chart(results, args.out / "chart.png")
    log(f"wrote {args.out / 'latest.json'} and {args.out / 'chart.png'} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
