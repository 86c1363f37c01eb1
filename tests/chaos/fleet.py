"""Helpers for the chaos tests: worker subprocesses to kill, events to audit, CPU to measure."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import redis
from dtqtest import RedisServer, dtq_command, wait_for

from dtq_core import Event, EventType, Job, JobStatus, Queue
from dtq_core.engines.redis import Keys

#: True for ``DTQ_CHAOS=long`` (the chaos conftest's switch; its fixtures cannot size a timeout mark).
LONG = os.environ.get("DTQ_CHAOS") == "long"
PLUGIN = "test_only"


@attrs.define
class WorkerProcess:
    """One ``dtq worker`` subprocess and the file its output goes to."""

    args: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


class Fleet:
    """``dtq worker`` subprocesses of one engine and namespace, killed and replaced on demand.

    Output goes to a file per worker, not a pipe: nobody reads a pipe while the
    chaos runs, and a worker blocked on a full one would look hung.
    """

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.started: list[WorkerProcess] = []
        self.kills = 0

    def start(self, *args: str) -> WorkerProcess:
        """Start ``dtq worker --plugins test_only ARGS``."""
        log = self.directory / f"worker-{len(self.started)}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [*dtq_command(), "worker", "--plugins", PLUGIN, *args],
                env=self.env,
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(tuple(args), process, log)
        self.started.append(worker)
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [worker for worker in self.started if worker.alive()]

    def kill_and_replace(self, rng: random.Random) -> None:
        """SIGKILL a random live worker and start one like it."""
        victim = rng.choice(self.alive())
        victim.process.kill()
        victim.process.wait(10)
        self.kills += 1
        self.start(*victim.args)

    def wait_registered(self, queue: Queue, timeout_s: float = 30) -> None:
        """Wait until every live worker has registered (it then handles SIGTERM as documented)."""
        wait_for(lambda: {w.pid for w in self.alive()} <= registered_pids(queue), timeout=timeout_s)

    def stop(self) -> dict[int, int | None]:
        """SIGTERM every live worker; return each one's exit code by pid (None: had to be killed)."""
        codes: dict[int, int | None] = {}
        for worker in self.alive():
            worker.process.send_signal(signal.SIGTERM)
        for worker in self.started:
            try:
                codes[worker.pid] = worker.process.wait(30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(10)
                codes[worker.pid] = None
        return codes

    def logs(self, workers: Sequence[WorkerProcess] | None = None) -> str:
        """The output of ``workers`` (default: every one started), each under a header."""
        chosen = self.started if workers is None else workers
        return "\n".join(f"--- {w.args} pid {w.pid}\n{w.log.read_text(errors='replace')}" for w in chosen)

    def pids(self) -> set[int]:
        return {worker.pid for worker in self.started}


class PrivateRedis:
    """A redis-server of one test's own, to pause, stop, kill and restart on the same port and directory."""

    def __init__(self, directory: Path, *extra: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.extra = extra
        self.server = RedisServer(directory, *extra)
        self.port = self.server.port
        self.url = self.server.url
        self.stopped = False

    @property
    def client(self) -> redis.Redis:
        return self.server.client

    def sigstop(self) -> None:
        self.server.process.send_signal(signal.SIGSTOP)
        self.stopped = True

    def sigcont(self) -> None:
        self.server.process.send_signal(signal.SIGCONT)
        self.stopped = False

    def kill(self) -> None:
        self.server.client.close()
        self.server.process.kill()
        self.server.process.wait(10)

    def restart(self) -> None:
        self.server = RedisServer(self.directory, *self.extra, port=self.port)

    def close(self) -> None:
        if self.stopped:
            self.sigcont()
        if self.server.process.poll() is None:
            self.server.stop()


def registered_pids(queue: Queue) -> set[int]:
    """The pids of the workers registered in the queue's namespace."""
    return {int(info["pid"]) for info in queue.workers()}


def wait_settled(queue: Queue, timeout_s: float) -> bool:
    """Wait until the plugin's queue has nothing waiting, scheduled or running; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if in_flight(queue) == 0:
            return True
        time.sleep(0.2)
    return False


def in_flight(queue: Queue) -> int:
    """Jobs of the plugin not yet final: waiting, scheduled or running."""
    for q in queue.engine.stats().queues:
        if q.plugin == PLUGIN:
            return q.waiting + q.scheduled + q.running
    return 0


def all_events(queue: Queue) -> list[Event]:
    """Every lifecycle event kept, oldest first."""
    events: list[Event] = []
    after: str | None = None
    while batch := queue.events(after=after, limit=1000):
        events += batch
        after = batch[-1].id
    return events


def final_jobs(queue: Queue, ids: Iterable[str]) -> dict[str, Job | None]:
    return {job_id: queue.get(job_id) for job_id in ids}


#: A final record's fencing token and arrival number, read raw (None, None: no record).
Token = tuple[str | None, int | None]


def final_tokens(client: redis.Redis, namespace: str, ids: Sequence[str]) -> dict[str, Token]:
    """The fencing token in each job's final record, read raw (the completion Redis accepted),
    with the record's arrival number, which the token of its delivery holds."""
    keys = Keys(namespace=namespace)
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.done(job_id), "state")
    pipe.hmget(keys.succeeded, list(ids))
    *states, succeeded = pipe.execute()
    # A succeeded job's record is one JSON field of the succeeded hash, holding its state JSON.
    states = [s if r is None else json.loads(r)["state"] for s, r in zip(states, succeeded, strict=True)]
    raw = [None if s is None else json.loads(s) for s in states]
    return {
        job_id: (None, None) if r is None else (r.get("token"), r.get("seq"))
        for job_id, r in zip(ids, raw, strict=True)
    }


def worker_pid(job: Job) -> int:
    """The pid of the worker process named in the job's record (worker ids are host:pid:random)."""
    assert job.worker is not None
    return int(job.worker.split(":")[1])


@attrs.define
class Audit:
    """What the events and final records of a run say about each job's deliveries."""

    starts: dict[str, list[Event]]
    succeeded: Counter[str]
    lease_lost: Counter[str]

    @classmethod
    def of(cls, events: Sequence[Event]) -> Audit:
        starts: dict[str, list[Event]] = defaultdict(list)
        succeeded: Counter[str] = Counter()
        lease_lost: Counter[str] = Counter()
        for event in events:
            if event.type is EventType.STARTED:
                starts[event.job_id].append(event)
            elif event.type is EventType.SUCCEEDED:
                succeeded[event.job_id] += 1
            elif event.type is EventType.LEASE_LOST:
                lease_lost[event.job_id] += 1
        return cls(starts, succeeded, lease_lost)

    def extra_executions(self) -> int:
        """Deliveries beyond the first, over every job."""
        return sum(len(starts) - 1 for starts in self.starts.values())

    def problems(self, jobs: dict[str, Job | None], tokens: dict[str, Token]) -> list[str]:
        """Every way a job broke "one final state, its result from exactly one lease holder"."""
        found = []
        for job_id, job in jobs.items():
            found += [f"{job_id}: {problem}" for problem in self._problems(job_id, job, tokens[job_id])]
        return found

    def _problems(self, job_id: str, job: Job | None, token: Token) -> list[str]:
        if job is None:
            return ["lost: no record"]
        if job.status is not JobStatus.SUCCEEDED:
            return [f"ended {job.status.value} ({job.error}), attempts {job.attempts}"]
        starts = self.starts.get(job_id, [])
        attempts = [event.attempt for event in starts]
        last = starts[-1] if starts else None
        checks = {
            "succeeded events": (self.succeeded[job_id], 1),
            "attempts started": (attempts, list(range(1, job.attempts + 1))),
            "last start (worker, attempt)": (
                None if last is None else (last.worker, last.attempt),
                (job.worker, job.attempts),
            ),
            "result's worker": ((job.result or {}).get("worker"), job.worker),
            "result's attempt": ((job.result or {}).get("attempt"), job.attempts),
            "accepted token": (token[0], f"{job.worker}/{token[1]}/{job.attempts}"),
            "lost leases": ((job.lost_leases, self.lease_lost[job_id]), (job.attempts - 1, job.attempts - 1)),
        }
        return [f"{name}: {got!r}, expected {want!r}" for name, (got, want) in checks.items() if got != want]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and its live children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    return sum(_ticks(p) for p in [pid, *children_of(pid)]) / tick


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0  # gone meanwhile
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            found.append(int(entry))
    return found


def cpu_share(pids: Sequence[int], seconds: float) -> dict[int, float]:
    """Each process's CPU use over the next ``seconds``, as a fraction of one core."""
    before = {pid: cpu_seconds(pid) for pid in pids}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {pid: (cpu_seconds(pid) - before[pid]) / elapsed for pid in pids}
