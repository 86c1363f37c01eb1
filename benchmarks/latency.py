"""Lone-job latency of dtq and Huey alone, in the interleaved rounds ``nox -s bench`` uses.

``nox -s bench`` measures every system's latency in rounds (see
``run.latency_rounds``); this runs the same rounds for dtq's two modes and Huey
only, with as many jobs and rounds as asked, for a closer look in less time.

Usage (in the bench session's environment, which has Huey):
    .nox/bench/bin/python benchmarks/latency.py [JOBS per round, default 300] [ROUNDS, default 4]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import run
from server import private_redis

#: (system, variant) pairs measured in each round, in this order.
RUNS = [("dtq", "thread"), ("dtq", "process"), ("huey", "thread")]


def main(jobs: int, rounds: int) -> None:
    run.LATENCY_ROUNDS = rounds
    with tempfile.TemporaryDirectory(prefix="dtq-latency-") as tmp, private_redis(Path(tmp)) as server:
        medians = run.latency_rounds(RUNS, jobs, server, Path(tmp))
    huey = medians[("huey", "thread")]
    print(f"medians over {rounds} rounds of {jobs} jobs:")
    for (name, label), out in medians.items():
        if "p50_ms" not in out or "p50_ms" not in huey:
            print(f"  {name}/{label}: {out.get('error') or huey.get('error')}")
            continue
        ratios = f"{out['p50_ms'] / huey['p50_ms']:.2f}x and {out['p99_ms'] / huey['p99_ms']:.2f}x Huey's"
        print(f"  {name}/{label:8s} p50 {out['p50_ms']:.3f} ms, p99 {out['p99_ms']:.3f} ms ({ratios})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, int(sys.argv[2]) if len(sys.argv) > 2 else 4)
