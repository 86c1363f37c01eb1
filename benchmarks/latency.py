"""Lone-job latency of dtq and Huey in interleaved rounds, on one private redis-server.

``nox -s bench`` measures each system's latency once, minutes apart from the
others', and on this shared machine the latency of the same system moves by up
to half between two such minutes (Huey's p50 measured 0.43 and 0.80 ms in two
runs an hour apart). Here every round measures each system in turn on a fresh
worker, so a slow spell touches them alike, and the medians over the rounds are
compared.

Usage (in the bench session's environment, which has Huey):
    .nox/bench/bin/python benchmarks/latency.py [JOBS per round, default 300] [ROUNDS, default 4]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import measure
import systems
from server import private_redis

#: (system, variant) pairs measured in each round, in this order.
RUNS = (("dtq", "thread"), ("dtq", "process"), ("huey", "thread"))


def one(server_url: str, name: str, label: str, jobs: int, logdir: Path) -> tuple[float, float]:
    """p50 and p99 (ms) of ``jobs`` lone jobs on a fresh worker of ``name``/``label``."""
    system = systems.load(name, server_url)
    variant = next(v for v in system.variants if v.label == label)
    workers = measure.Workers(system, variant, 1, logdir)
    workers.start()
    try:
        out = measure.latency(system, jobs)
    finally:
        workers.stop()
        system.close()
    return out["p50_ms"], out["p99_ms"]


def main(jobs: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dtq-latency-") as tmp, private_redis(Path(tmp)) as server:
        seen: dict[str, list[tuple[float, float]]] = {}
        for round_ in range(rounds):
            for name, label in RUNS:
                p50, p99 = one(server.url, name, label, jobs, Path(tmp))
                seen.setdefault(f"{name}/{label}", []).append((p50, p99))
                print(f"round {round_ + 1}: {name}/{label:8s} p50 {p50:.3f} ms  p99 {p99:.3f} ms", flush=True)
    medians = {
        key: tuple(statistics.median(s[i] for s in runs) for i in (0, 1)) for key, runs in seen.items()
    }
    huey_p50, huey_p99 = medians["huey/thread"]
    print(f"medians over {rounds} rounds of {jobs} jobs:")
    for key, (p50, p99) in medians.items():
        ratios = f"{p50 / huey_p50:.2f}x and {p99 / huey_p99:.2f}x Huey's"
        print(f"  {key:12s} p50 {p50:.3f} ms, p99 {p99:.3f} ms ({ratios})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, int(sys.argv[2]) if len(sys.argv) > 2 else 4)
