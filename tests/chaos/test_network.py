"""Network trouble between workers and Redis: dropped connections, a Redis paused past the lease,
a Redis stopped or killed outright.

Each test runs ``dtq worker`` subprocesses against a redis-server of its own,
so the trouble it causes reaches no other test.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from dtqtest import wait_for
from fleet import (
    LONG,
    PLUGIN,
    Audit,
    Fleet,
    PrivateRedis,
    all_events,
    cpu_share,
    final_jobs,
    final_tokens,
    in_flight,
    wait_settled,
    worker_pid,
)

from dtq_core import JobStatus, Queue
from dtq_core.worker import _MAX_BACKOFF_S

Report = Callable[..., None]
#: Worker connections name themselves so that the chaos can find them in CLIENT LIST.
WORKER_CLIENT = "dtq-chaos-worker"
KINDS = (
    ("--mode", "process", "-c", "2"),
    ("--mode", "thread", "-c", "2"),
    ("--mode", "process"),
    ("--mode", "thread"),
)
#: Job slots over the fleet.
SLOTS = 6


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    # Append-only with fsync on every write, so a killed and restarted server still has the jobs.
    server = PrivateRedis(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    yield server
    server.close()


@pytest.fixture
def fleet(private_redis: PrivateRedis, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    env = dict(
        os.environ,
        DTQ_URL=f"{private_redis.url}?client_name={WORKER_CLIENT}",
        DTQ_NAMESPACE=namespace,
        DTQ_ENGINE__EVENTS_MAX="1000000",
        PYTHONUNBUFFERED="1",
    )
    workers = Fleet(env, tmp_path)
    yield workers
    workers.stop()


@pytest.fixture
def queue(private_redis: PrivateRedis, namespace: str) -> Iterator[Queue]:
    with Queue(
        [PLUGIN], private_redis.url, namespace=namespace, engine_options={"events_max": 1_000_000}
    ) as q:
        yield q


def enqueue(queue: Queue, prefix: str, count: int, seconds: float) -> list[str]:
    ids = [f"{prefix}{n}" for n in range(count)]
    for job_id in ids:
        queue.enqueue(PLUGIN, {"action": "whoami", "seconds": seconds}, id=job_id)
    return ids


def start_fleet(fleet: Fleet, queue: Queue, lease_s: float) -> set[int]:
    for kind in KINDS:
        fleet.start("--lease", str(lease_s), *kind)
    fleet.wait_registered(queue)
    return fleet.pids()


def audit_run(queue: Queue, client: redis.Redis, namespace: str, ids: list[str]) -> Audit:
    """Every job succeeded once, its result written by the one lease holder Redis accepted."""
    assert wait_settled(queue, timeout_s=120), f"{in_flight(queue)} jobs still in flight"
    audit = Audit.of(all_events(queue))
    problems = audit.problems(final_jobs(queue, ids), final_tokens(client, namespace, ids))
    assert not problems, f"{len(problems)} jobs broke the guarantee, e.g. {problems[:10]}"
    return audit


def assert_same_workers_carry_on(
    queue: Queue, fleet: Fleet, pids: set[int], prefix: str, slots: int = SLOTS, job_s: float = 2.0
) -> float:
    """Every worker process that lived through the trouble still takes jobs; return the longest
    wait, in seconds, from appending the new jobs to one starting.

    As many jobs as the workers have slots, each longer than a worker may take to come back:
    a worker can take only as many as its slots, so the jobs are spread over every worker,
    and one that stopped consuming shows.
    """
    assert {w.pid for w in fleet.alive()} == pids, "a worker process died"
    appended_s = time.time()
    ids = enqueue(queue, prefix, slots, job_s)
    assert wait_settled(queue, timeout_s=60), f"new jobs not processed: {in_flight(queue)} in flight"
    jobs = [job for job in final_jobs(queue, ids).values() if job is not None]
    assert all(job.status is JobStatus.SUCCEEDED for job in jobs) and len(jobs) == slots, jobs
    ran_on = {worker_pid(job) for job in jobs}
    assert ran_on == pids, f"only {ran_on} of {pids} took new jobs"
    return max(job.started_at.timestamp() for job in jobs if job.started_at is not None) - appended_s


def assert_clean_exit(fleet: Fleet, queue: Queue) -> None:
    fleet.wait_registered(queue)
    codes = fleet.stop()
    assert all(code == 0 for code in codes.values()), codes
    assert "Traceback" not in fleet.logs(), fleet.logs()[-5000:]


# --- connections dropped -------------------------------------------------------------


@pytest.mark.timeout(900 if LONG else 120)
def test_dropped_connections_lose_nothing(
    private_redis: PrivateRedis,
    fleet: Fleet,
    queue: Queue,
    namespace: str,
    scale: Callable[[int, int], int],
    report: Report,
) -> None:
    total = scale(1_500, 15_000)
    pids = start_fleet(fleet, queue, lease_s=2)
    ids = enqueue(queue, "d", total, 0.05)
    killer = redis.Redis(port=private_redis.port, decode_responses=True, client_name="dtq-chaos-killer")
    try:
        dropped, kills = _drop_connections_until_settled(killer, queue, timeout_s=scale(90, 900))
    finally:
        killer.close()
    audit = audit_run(queue, private_redis.client, namespace, ids)
    resumed_s = assert_same_workers_carry_on(queue, fleet, pids, "after-drops-")
    report(
        jobs=total,
        client_kill_commands=kills,
        connections_dropped=dropped,
        duplicate_executions=audit.extra_executions(),
        new_jobs_picked_up_within_s=round(resumed_s, 2),
    )
    assert dropped >= 20, "too few connections were dropped to prove anything"
    assert_clean_exit(fleet, queue)


def _drop_connections_until_settled(killer: redis.Redis, queue: Queue, timeout_s: float) -> tuple[int, int]:
    """Drop connections every 0.05-0.3 s, all normal ones or one worker's by address, until jobs settle.

    Returns how many connections were dropped and how many CLIENT KILL commands it took.
    """
    rng = random.Random()
    dropped = kills = 0
    deadline = time.monotonic() + timeout_s
    while in_flight(queue):
        assert time.monotonic() < deadline, f"{in_flight(queue)} jobs still in flight after {timeout_s} s"
        time.sleep(rng.uniform(0.05, 0.3))
        kills += 1
        if rng.random() < 0.3:
            dropped += int(killer.execute_command("CLIENT", "KILL", "TYPE", "normal"))
            continue
        workers = [c["addr"] for c in killer.client_list(_type="normal") if c["name"] == WORKER_CLIENT]
        if workers:
            dropped += int(killer.execute_command("CLIENT", "KILL", "ADDR", rng.choice(workers)))
    return dropped, kills


# --- Redis paused past the lease -------------------------------------------------------

LEASE_S = 1.0
PAUSE_S = 3.0


@pytest.mark.parametrize("how", ["client-pause", "sigstop"])
@pytest.mark.timeout(120)
def test_redis_paused_longer_than_the_lease_runs_no_job_twice_to_completion(
    how: str,
    private_redis: PrivateRedis,
    fleet: Fleet,
    queue: Queue,
    namespace: str,
    report: Report,
) -> None:
    pids = start_fleet(fleet, queue, lease_s=LEASE_S)
    # Jobs that outlast the pause: when Redis answers again their holders' renewals race the
    # other workers' recovery of the leases that expired meanwhile. Then short ones.
    ids = enqueue(queue, "long", 2 * SLOTS, PAUSE_S + 2) + enqueue(queue, "short", 200, 0.05)
    time.sleep(1.0)  # every slot has a long job in hand when Redis stops answering
    _pause(private_redis, how)
    audit = audit_run(queue, private_redis.client, namespace, ids)
    resumed_s = assert_same_workers_carry_on(queue, fleet, pids, "after-pause-")
    discarded = len(re.findall("lease lost before completion; outcome discarded", fleet.logs()))
    report(
        how=how,
        lease_s=LEASE_S,
        pause_s=PAUSE_S,
        jobs=len(ids),
        duplicate_executions=audit.extra_executions(),
        stale_completions_rejected=discarded,
        new_jobs_picked_up_within_s=round(resumed_s, 2),
    )
    assert_clean_exit(fleet, queue)


def _pause(server: PrivateRedis, how: str) -> None:
    if how == "client-pause":
        # The pause ends by itself; this client sends nothing while it lasts.
        server.client.execute_command("CLIENT", "PAUSE", int(PAUSE_S * 1000), "ALL")
        time.sleep(PAUSE_S)
        return
    server.sigstop()
    time.sleep(PAUSE_S)
    server.sigcont()


# --- Redis gone: no spinning -------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigstop", "killed"])
@pytest.mark.timeout(120)
def test_workers_do_not_spin_while_redis_is_gone_and_resume_after(
    how: str,
    private_redis: PrivateRedis,
    fleet: Fleet,
    queue: Queue,
    namespace: str,
    report: Report,
) -> None:
    pids = start_fleet(fleet, queue, lease_s=2)
    ids = enqueue(queue, "warm", 40, 0.02)  # every job process is started before the measure
    audit_run(queue, private_redis.client, namespace, ids)
    # Stopped past the socket timeout (10 s), so timed-out commands and their retries are measured too.
    down_s = 14.0 if how == "sigstop" else 8.0
    if how == "sigstop":
        private_redis.sigstop()
    else:
        private_redis.kill()
    went_down = time.monotonic()
    time.sleep(1.0)
    shares = cpu_share(sorted(pids), down_s - 2.0)
    time.sleep(max(0.0, down_s - (time.monotonic() - went_down)))
    if how == "sigstop":
        private_redis.sigcont()
    else:
        private_redis.restart()
    # A worker whose engine refuses connections backs off, up to _MAX_BACKOFF_S between tries.
    job_s = 2.0 if how == "sigstop" else _MAX_BACKOFF_S + 2.0
    resumed_s = assert_same_workers_carry_on(queue, fleet, pids, "after-outage-", job_s=job_s)
    report(
        how=how,
        redis_down_s=down_s,
        worker_cpu_percent_of_a_core={str(pid): round(100 * share, 1) for pid, share in shares.items()},
        new_jobs_picked_up_within_s=round(resumed_s, 2),
    )
    assert max(shares.values()) < 0.2, shares
    assert_clean_exit(fleet, queue)


# --- a worker frozen past its lease --------------------------------------------------------


@pytest.mark.parametrize("mode", ["thread", "process"])
@pytest.mark.timeout(120)
def test_frozen_worker_completion_is_fenced_off(
    mode: str, fleet: Fleet, queue: Queue, private_redis: PrivateRedis, namespace: str, report: Report
) -> None:
    """A worker stopped (SIGSTOP) past its lease: another takes its jobs over. When it wakes it
    learns at its next heartbeat that the leases are lost and stops those attempts, whose
    completions the fencing token rejects; the new holder's count."""
    job_s = 6.0
    frozen = fleet.start("--lease", str(LEASE_S), "--mode", mode, "-c", "2")
    fleet.wait_registered(queue)
    ids = enqueue(queue, "frozen", 2, job_s)
    wait_for(lambda: all(_held_by(queue, job_id, frozen.pid) for job_id in ids))
    frozen.process.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        rescuer = fleet.start("--lease", str(LEASE_S), "--mode", mode, "-c", "2")
        wait_for(lambda: all(_held_by(queue, job_id, rescuer.pid) for job_id in ids), timeout=30)
    finally:
        frozen.process.send_signal(signal.SIGCONT)  # while the rescuer runs the same jobs
    woke_at = time.monotonic()
    wait_for(lambda: frozen.log.read_text().count("outcome discarded") == len(ids), timeout=job_s + 5)
    stale_stopped_s = time.monotonic() - woke_at
    audit = audit_run(queue, private_redis.client, namespace, ids)
    jobs = final_jobs(queue, ids)
    assert all(job is not None and worker_pid(job) == rescuer.pid for job in jobs.values())
    rescuer.process.terminate()
    assert rescuer.process.wait(30) == 0
    assert_same_workers_carry_on(queue, fleet, {frozen.pid}, "after-freeze-", slots=2)
    report(
        mode=mode,
        lease_s=LEASE_S,
        frozen_s=round(woke_at - frozen_at, 1),
        jobs=len(ids),
        duplicate_executions=audit.extra_executions(),
        stale_completions_rejected=frozen.log.read_text().count("outcome discarded"),
        stale_attempts_stopped_after_waking_s=round(stale_stopped_s, 2),
    )
    # Stopped at the first heartbeat after waking, not left to run their whole time for nothing.
    assert stale_stopped_s < LEASE_S + 1.5, stale_stopped_s
    assert frozen.log.read_text().count("lease lost;") == len(ids), "a lost lease is reported once"
    assert_clean_exit(fleet, queue)


@pytest.mark.timeout(120)
def test_woken_worker_holding_a_stale_and_a_new_lease_of_one_job_keeps_the_new_one(
    fleet: Fleet, queue: Queue, private_redis: PrivateRedis, namespace: str, report: Report
) -> None:
    """A thread-mode worker stalls past its lease; the job is taken back, and on waking the worker
    takes it again into its free slot while the stale attempt (which ignores cancellation) still
    runs. The stale attempt's end must not cost the new lease: it stays renewed and succeeds."""
    worker = fleet.start("--lease", str(LEASE_S), "--mode", "thread", "-c", "2")
    fleet.wait_registered(queue)
    queue.enqueue(PLUGIN, {"action": "sleep", "seconds": 3.0}, id="twice")
    wait_for(lambda: _held_by(queue, "twice", worker.pid))
    worker.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(LEASE_S + 0.5)
        assert queue.engine.recover(PLUGIN, max_lost_leases=3, ttl_s=60) == 1
    finally:
        worker.process.send_signal(signal.SIGCONT)
    assert wait_settled(queue, timeout_s=30)
    job = queue.get("twice")
    assert job is not None
    events = [e for e in all_events(queue) if e.job_id == "twice"]
    report(attempts=job.attempts, lost_leases=job.lost_leases)
    assert (job.status, job.attempts, job.lost_leases) == (JobStatus.SUCCEEDED, 2, 1), job
    assert [e.type.value for e in events].count("succeeded") == 1
    assert_clean_exit(fleet, queue)
    # Read once the worker has exited: the two attempts' outcomes may be stored in
    # one batch, whose lines are written after the job is seen settled.
    log_text = worker.log.read_text()
    assert log_text.count("outcome discarded") == 1, log_text[-5000:]


def _held_by(queue: Queue, job_id: str, pid: int) -> bool:
    job = queue.get(job_id)
    return job is not None and job.status is JobStatus.RUNNING and worker_pid(job) == pid
