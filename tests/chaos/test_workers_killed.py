"""Worker processes SIGKILLed at random while thousands of jobs run.

A mixed fleet of ``dtq worker`` subprocesses (process and thread mode, one and
several slots, with and without prefetch, 2 s leases) works through the jobs while a chaos loop kills a
random worker every 0.5-1 s and starts another like it. No job may be lost or
left queued or running, and each result must come from exactly one lease
holder: the delivery the final record and the last ``started`` event name.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dtqtest import RedisServer
from fleet import LONG, PLUGIN, Audit, Fleet, all_events, final_jobs, final_tokens, in_flight

from dtq_core import Queue

Report = Callable[..., None]

#: Each worker's options; the fleet keeps one of each alive.
KINDS = (
    ("--mode", "process", "-c", "4"),
    ("--mode", "thread", "-c", "4"),
    ("--mode", "process"),
    ("--mode", "thread"),
    ("--mode", "thread", "-c", "2"),
    # Prefetched jobs wait leased in the worker and outcomes are recorded in batches: a kill
    # then strands several jobs at once, each of which must still come back.
    ("--mode", "thread", "-c", "2", "--prefetch", "16"),
    ("--mode", "process", "--prefetch", "8"),
)
LEASE_S = 2
#: How long a job sleeps: long enough that kills land mid-job, short enough for thousands.
JOB_S = 0.05


@pytest.fixture
def fleet(dtq_env: dict[str, str], tmp_path: Path) -> Iterator[Fleet]:
    env = dict(
        dtq_env,
        DTQ_ENGINE__EVENTS_MAX="1000000",
        # A job may by bad luck be in hand at several kills; it must still end succeeded, not dead.
        DTQ_MAX_LOST_LEASES="50",
    )
    workers = Fleet(env, tmp_path)
    yield workers
    workers.stop()


@pytest.mark.timeout(1800 if LONG else 180)
def test_killed_workers_lose_no_job_and_each_result_has_one_lease_holder(
    redis_server: RedisServer,
    namespace: str,
    fleet: Fleet,
    scale: Callable[[int, int], int],
    report: Report,
) -> None:
    total = scale(2_000, 20_000)
    with Queue(
        [PLUGIN], redis_server.url, namespace=namespace, engine_options={"events_max": 1_000_000}
    ) as queue:
        ids = [f"k{n}" for n in range(total)]
        for job_id in ids:
            queue.enqueue(PLUGIN, {"action": "whoami", "seconds": JOB_S}, id=job_id)
        for kind in KINDS:
            fleet.start("--lease", str(LEASE_S), *kind)
        started = time.monotonic()
        _chaos_until_settled(queue, fleet, timeout_s=scale(150, 1500))
        elapsed_s = time.monotonic() - started
        live = fleet.alive()
        fleet.wait_registered(queue)
        codes = fleet.stop()
        events = all_events(queue)
        audit = Audit.of(events)
        jobs = final_jobs(queue, ids)
        tokens = final_tokens(redis_server.client, namespace, ids)
    report(
        jobs=total,
        workers_started=len(fleet.started),
        kills=fleet.kills,
        duplicate_executions=audit.extra_executions(),
        jobs_run_more_than_once=sum(1 for starts in audit.starts.values() if len(starts) > 1),
        lease_s=LEASE_S,
        seconds=round(elapsed_s, 1),
    )
    assert sum(1 for e in events if e.type.value == "appended") == total, "the events stream was trimmed"
    problems = audit.problems(jobs, tokens)
    assert not problems, f"{len(problems)} jobs broke the guarantee, e.g. {problems[:10]}"
    assert fleet.kills >= 5, "the chaos loop hardly ran; the test proved little"
    assert all(codes[worker.pid] == 0 for worker in live), (codes, fleet.logs()[-5000:])
    assert " ERROR " not in fleet.logs(), fleet.logs()[-5000:]
    # Only survivors: a job process whose worker is killed while spawning it prints a traceback
    # (EOFError in multiprocessing's spawn_main) as it exits.
    assert "Traceback" not in fleet.logs(live), fleet.logs(live)[-5000:]


def _chaos_until_settled(queue: Queue, fleet: Fleet, timeout_s: float) -> None:
    """Kill a random worker every 0.5-1 s (and start another like it) until no job is in flight."""
    rng = random.Random()
    deadline = time.monotonic() + timeout_s
    while in_flight(queue):
        assert time.monotonic() < deadline, f"{in_flight(queue)} jobs still in flight after {timeout_s} s"
        time.sleep(rng.uniform(0.5, 1.0))
        fleet.kill_and_replace(rng)
