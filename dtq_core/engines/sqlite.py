"""The SQLite engine: durable jobs on one machine, with no server.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``. Several
worker and producer processes on one machine share the file. Every operation is
one ``BEGIN IMMEDIATE`` transaction in WAL mode: SQLite lets one writer in at a
time, so each state change is atomic across processes, and a process killed
mid-transaction leaves the file as it was before it. The semantics are the
Redis engine's, checked by the same contract tests. Waiting (for a job, or for
a result) polls the file every few milliseconds, since SQLite has no
notifications.

Schema (one file can hold several namespaces):

* ``dtq_jobs``: one row per job; ``status``, ``plugin``, ``score`` (queue
  order), ``due_ms`` (delayed), ``deadline_ms`` and ``token`` (leased) are
  columns, the rest of the job's bookkeeping is JSON in ``state``, exactly the
  fields the other engines keep; ``expires_ms`` is set once the job is final.
* ``dtq_workers``: the worker registry. ``dtq_seq``: the arrival counter.
* ``dtq_events``: lifecycle events, numbered per namespace (``n``) without
  gaps, trimmed to the newest ``events_max``.
* ``dtq_rates``: outcomes counted per minute, plugin and status, kept two hours.

A row written by something other than dtq (any sqlite3 client can) is never
run and never crashes a worker: a queued or leased row whose payload, state or
errors fail the checks of :mod:`dtq_core.record`, or whose payload names
another plugin than its ``plugin`` column, is buried as dead with the reason
in the transaction that found it. A scheduled or leased row whose ``due_ms``
or ``deadline_ms`` is not a number counts as due or expired, so none waits for
ever. A row whose ``status`` is not a dtq status is in no queue: no worker
takes it, and reading it raises :class:`~dtq_core.errors.MalformedRecord`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from dtq_core.config import DEFAULT_FAILURE_TTL_S, DEFAULT_NAMESPACE
from dtq_core.engine import (
    HISTORY_S,
    INDEXED,
    LOST_LEASE,
    MINUTE_MS,
    AppendOutcome,
    Batch,
    CancelOutcome,
    Engine,
    Event,
    EventType,
    Lease,
    MinuteCounts,
    OptionRange,
    Outcome,
    QueueStats,
    Recorded,
    ReleaseOutcome,
    Renewal,
    Stats,
    check_browsable,
    check_engine_options,
    check_indexed,
    counter_event_id,
    counter_event_seq,
    dead_after_lost_leases,
    delivery_token,
    history_minutes,
    recorded_as,
    short_message,
    uncount_attempt,
)
from dtq_core.errors import EngineError, EngineUnavailable, MalformedRecord
from dtq_core.job import ErrorInfo, Job, JobStatus, encode_payload
from dtq_core.record import job_from_state, leased_job, malformed_error, read_state

log = logging.getLogger("dtq.engine")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dtq_jobs (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    plugin TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    score REAL,
    due_ms INTEGER,
    deadline_ms INTEGER,
    token TEXT,
    result TEXT,
    error TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    finished_ms INTEGER,
    expires_ms INTEGER,
    PRIMARY KEY (namespace, id)
);
CREATE INDEX IF NOT EXISTS dtq_jobs_ready ON dtq_jobs (namespace, plugin, status, score);
CREATE INDEX IF NOT EXISTS dtq_jobs_due ON dtq_jobs (namespace, plugin, status, due_ms);
CREATE INDEX IF NOT EXISTS dtq_jobs_expiry ON dtq_jobs (namespace, expires_ms);
CREATE TABLE IF NOT EXISTS dtq_workers (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    expiry_ms INTEGER NOT NULL,
    info TEXT NOT NULL,
    PRIMARY KEY (namespace, id)
);
CREATE TABLE IF NOT EXISTS dtq_seq (namespace TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dtq_events (
    namespace TEXT NOT NULL,
    n INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    type TEXT NOT NULL,
    job_id TEXT NOT NULL,
    plugin TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT,
    error_type TEXT,
    error_message TEXT,
    delay_ms INTEGER,
    PRIMARY KEY (namespace, n)
);
CREATE TABLE IF NOT EXISTS dtq_rates (
    namespace TEXT NOT NULL,
    minute INTEGER NOT NULL,
    plugin TEXT NOT NULL,
    status TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (namespace, minute, plugin, status)
);
"""

_LIVE = ("queued", "scheduled", "running")
#: Each engine option's range; see check_engine_options.
_OPTION_RANGES: dict[str, OptionRange] = {
    "busy_timeout_s": (float, 0, False, math.inf),
    "errors_kept": (int, 1, True, math.inf),
    "index_cap": (int, 0, True, math.inf),  # 0: no dead or failed job is listed
    "events_max": (int, 0, True, math.inf),
}
_POLL_S = 0.02


def _now_ms() -> int:
    return int(time.time() * 1000)


def _score(state: Mapping[str, Any]) -> float:
    return float(-int(state.get("priority", 0)) * 2**40 + int(state["seq"]))


class SqliteEngine(Engine):
    """Jobs in one SQLite file; see the module documentation.

    Args:
        path: the database file (created if missing).
        namespace: scopes job ids and queues.
        busy_timeout_s: how long a transaction waits for another process's.
        errors_kept: the most attempt errors kept per job.
        index_cap: the most dead (and failed) jobs kept.
        events_max: how many lifecycle events the namespace keeps; 0 records none.
    """

    def __init__(
        self,
        path: str,
        *,
        url: str = "",
        namespace: str = DEFAULT_NAMESPACE,
        prefix: str = "dtq",
        busy_timeout_s: float = 30.0,
        errors_kept: int = 10,
        index_cap: int = 10_000,
        events_max: int = 10_000,
    ) -> None:
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self.namespace = f"{prefix}:{namespace}"
        self.busy_timeout_s = busy_timeout_s
        self.errors_kept = errors_kept
        self.index_cap = index_cap
        self.events_max = events_max
        self._local = threading.local()
        # Workers woken (wake) whose wait has not ended since; set operations are atomic.
        self._woken: set[str] = set()
        try:
            self._connection().executescript(_SCHEMA)  # executescript manages its own transaction
        except sqlite3.Error as exc:
            raise EngineUnavailable(f"cannot set up SQLite database {path}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteEngine:
        """``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
        path = urllib.parse.urlsplit(url).path[1:]
        if not path:
            raise EngineError(
                f"SQLite URL {url!r} names no file; use sqlite:///dtq.db or sqlite:////abs/dtq.db"
            )
        cls.check_options(url, options)
        return cls(path, url=url, **options)

    @classmethod
    def check_options(cls, url: str, options: Mapping[str, Any]) -> None:
        """Refuse an unknown or out-of-range option (see ``from_url``)."""
        check_engine_options("SQLite", url, options, _OPTION_RANGES)

    # --- producers -------------------------------------------------------------

    def append(
        self, job: Job, payload: str, *, delay_s: float = 0.0, eta: datetime | None = None
    ) -> AppendOutcome:
        """Create the job unless its id exists."""
        with self._tx() as db:
            now = self._expire(db)
            row = db.execute(
                "SELECT payload FROM dtq_jobs WHERE namespace = ? AND id = ?", (self.namespace, job.id)
            ).fetchone()
            if row is not None:
                return AppendOutcome.EXISTS if row[0] == payload else AppendOutcome.CONFLICT
            state: dict[str, Any] = {**job.options(), "seq": self._next_seq(db), "created": now}
            state.update(attempts=0, lost=0, priority=job.priority)
            due = int(eta.timestamp() * 1000) if eta is not None else now + int(delay_s * 1000)
            scheduled = due > now
            db.execute(
                "INSERT INTO dtq_jobs (namespace, id, plugin, payload, state, status, score, due_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.namespace,
                    job.id,
                    job.plugin,
                    payload,
                    json.dumps(state),
                    "scheduled" if scheduled else "queued",
                    _score(state),
                    due if scheduled else None,
                ),
            )
            new = {"id": job.id, "plugin": job.plugin, "state": state}
            if scheduled:
                self._event(db, EventType.SCHEDULED, new, delay_ms=due - now)
            else:
                self._event(db, EventType.APPENDED, new)
            return AppendOutcome.CREATED

    def get(self, job_id: str) -> Job | None:
        """The job's record, live or final."""
        with self._tx(write=False) as db:
            row = self._row(db, job_id)
            return None if row is None else _job(row)

    def wait_for_final(self, job_id: str, timeout_s: float) -> Job | None:
        """Poll until the job is final or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job is None or job.status.is_final or time.monotonic() >= deadline:
                return job
            time.sleep(min(_POLL_S * 5, max(0.0, deadline - time.monotonic())))

    def cancel(self, job: Job, *, ttl_s: float) -> CancelOutcome:
        """Cancel at once, or flag a running job."""
        with self._tx() as db:
            row = self._row(db, job.id)
            if row is None:
                return CancelOutcome.NOT_FOUND
            if row["status"] == "running":
                if not row["state"].get("cancel"):
                    row["state"]["cancel"] = 1
                    self._save(db, row)
                    self._event(db, EventType.CANCEL_REQUESTED, row)
                return CancelOutcome.REQUESTED
            if row["status"] not in ("queued", "scheduled"):
                return CancelOutcome.ALREADY_FINAL
            row["due_ms"] = None
            self._finish(db, row, "cancelled", ttl_s)
            return CancelOutcome.CANCELLED

    # --- workers -----------------------------------------------------------------

    def fetch(self, plugins: Sequence[str], *, count: int, lease_s: float, worker_id: str) -> Batch:
        """Promote due jobs, then take and lease up to ``count``, in one transaction.

        Malformed rows are buried as dead instead of being taken (see the module documentation).
        """
        with self._tx() as db:
            now = self._expire(db)
            marks = ",".join("?" * len(plugins))
            for due, with_now in _DUE:
                db.execute(
                    f"UPDATE dtq_jobs SET status = 'queued', due_ms = NULL WHERE namespace = ? "  # noqa: S608
                    f"AND status = 'scheduled' AND plugin IN ({marks}) AND {due}",
                    (self.namespace, *plugins, *([now] if with_now else [])),
                )
            leases: list[Lease] = []
            for plugin in plugins:
                while len(leases) < count and (rows := self._queued(db, plugin, count - len(leases))):
                    leases += self._take(db, plugin, rows, now, lease_s, worker_id)
            next_due = db.execute(
                f"SELECT MIN(due_ms) FROM dtq_jobs WHERE namespace = ? AND status = 'scheduled' "  # noqa: S608
                f"AND plugin IN ({marks})",
                (self.namespace, *plugins),
            ).fetchone()[0]
            return Batch(leases, None if next_due is None else (next_due - now) / 1000)

    def _queued(self, db: sqlite3.Connection, plugin: str, limit: int) -> list[Any]:
        return db.execute(
            "SELECT * FROM dtq_jobs WHERE namespace = ? AND plugin = ? AND status = 'queued' "
            "ORDER BY score LIMIT ?",
            (self.namespace, plugin, limit),
        ).fetchall()

    def _take(
        self, db: sqlite3.Connection, plugin: str, rows: list[Any], now: int, lease_s: float, worker_id: str
    ) -> list[Lease]:
        """Lease the rows that are sound; bury the others as dead."""
        leases = []
        for raw in rows:
            try:
                row = _decode(raw)
                leased_job(row["id"], plugin, row["payload"], _state(row))
            except MalformedRecord as exc:
                self._bury(db, exc.job_id, plugin, exc.reason, DEFAULT_FAILURE_TTL_S)
                continue
            leases.append(self._lease(db, row, now, lease_s, worker_id))
        return leases

    def wait_for_jobs(self, plugins: Sequence[str], timeout_s: float) -> None:
        """Poll until a job of ``plugins`` is queued (or due), or time runs out."""
        self._poll_for_jobs(plugins, timeout_s, lambda: False)

    def wait_and_fetch(
        self, plugins: Sequence[str], timeout_s: float, *, count: int, lease_s: float, worker_id: str
    ) -> Batch:
        """Poll as :meth:`wait_for_jobs` does, until ``worker_id`` is woken too; then fetch."""
        self._poll_for_jobs(plugins, timeout_s, lambda: worker_id in self._woken)
        self._woken.discard(worker_id)
        return self.fetch(plugins, count=count, lease_s=lease_s, worker_id=worker_id)

    def wake(self, worker_id: str) -> None:
        """End the worker's wait at its next poll, or its next wait if it is not waiting yet."""
        self._woken.add(worker_id)

    def _poll_for_jobs(self, plugins: Sequence[str], timeout_s: float, woken: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout_s
        marks = ",".join("?" * len(plugins))
        query = (
            f"SELECT 1 FROM dtq_jobs WHERE namespace = ? AND plugin IN ({marks}) AND "  # noqa: S608
            "(status = 'queued' OR (status = 'scheduled' AND due_ms <= ?)) LIMIT 1"
        )
        while time.monotonic() < deadline and not woken():
            with self._tx(write=False) as db:
                if db.execute(query, (self.namespace, *plugins, _now_ms())).fetchone():
                    return
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))

    def complete(self, lease: Lease, outcome: Outcome, *, ttl_s: float) -> Recorded:
        """Record an outcome under the lease's token."""
        with self._tx() as db:
            row = self._row(db, lease.job.id)
            if row is None or row["token"] != lease.token:
                return Recorded.REFUSED
            if row["status"] != "running":
                return recorded_as(row["status"], outcome)
            row["deadline_ms"] = None
            error = None if outcome.error is None else json.dumps(outcome.error.to_dict())
            if error is not None:
                self._add_error(row, error)
            status = outcome.status
            if status is JobStatus.SCHEDULED and row["state"].get("cancel"):
                status = JobStatus.CANCELLED  # asked for during the attempt: no retry (as complete.lua)
            if status is JobStatus.SCHEDULED:
                delay_ms = int(outcome.retry_in_s * 1000)
                row.update(status="scheduled", due_ms=_now_ms() + delay_ms)
                self._save(db, row)
                self._count(db, row["plugin"], EventType.RETRYING.value)
                self._event(db, EventType.RETRYING, row, outcome.error, delay_ms)
                return Recorded.STORED
            row.update(result=outcome.result_json, error=error)
            self._finish(db, row, status.value, ttl_s, outcome.error)
            return recorded_as(status.value, outcome)

    def renew(self, leases: Sequence[Lease], lease_s: float) -> Renewal:
        """Extend held leases; report lost ones and cancellation requests."""
        renewal = Renewal()
        with self._tx() as db:
            deadline = _now_ms() + int(lease_s * 1000)
            for lease in leases:
                row = self._row(db, lease.job.id)
                if row is None or row["status"] != "running" or row["token"] != lease.token:
                    renewal.lost.append(lease.job.id)
                    continue
                row["deadline_ms"] = deadline
                self._save(db, row)
                if row["state"].get("cancel"):
                    renewal.cancel.append(lease.job.id)
        return renewal

    def progress(self, lease: Lease, progress: float | None, message: str | None) -> tuple[bool, bool]:
        """Record progress under the lease's token."""
        with self._tx() as db:
            row = self._row(db, lease.job.id)
            if row is None or row["status"] != "running" or row["token"] != lease.token:
                return False, False
            if progress is not None:
                row["state"]["progress"] = float(progress)
            if message:
                row["state"]["message"] = message
            self._save(db, row)
            return True, bool(row["state"].get("cancel"))

    def release(self, lease: Lease, *, lost: bool, max_lost_leases: int, ttl_s: float) -> ReleaseOutcome:
        """Give a held job back."""
        return self._release_held(lease, lost, False, max_lost_leases, ttl_s)

    def hand_back(self, lease: Lease, *, max_lost_leases: int, ttl_s: float) -> ReleaseOutcome:
        """Give back a job never started, its attempt not counted (as ``release.lua``)."""
        return self._release_held(lease, False, True, max_lost_leases, ttl_s)

    def _release_held(
        self, lease: Lease, lost: bool, unstarted: bool, max_lost: int, ttl_s: float
    ) -> ReleaseOutcome:
        with self._tx() as db:
            row = self._row(db, lease.job.id)
            if row is None or row["token"] != lease.token:
                return ReleaseOutcome.NOT_HELD
            return self._release(db, row, lost, max_lost, ttl_s, unstarted)

    def recover(self, plugin: str, *, max_lost_leases: int, ttl_s: float, limit: int = 100) -> int:
        """Requeue or bury the jobs whose lease expired."""
        with self._tx() as db:
            # A deadline that is not a number (not written by dtq) counts as expired.
            rows = db.execute(
                "SELECT * FROM dtq_jobs WHERE namespace = ? AND plugin = ? AND status = 'running' "
                "AND (deadline_ms <= ? OR typeof(deadline_ms) NOT IN ('integer', 'real')) "
                "ORDER BY deadline_ms LIMIT ?",
                (self.namespace, plugin, _now_ms(), limit),
            ).fetchall()
            outcomes = [self._recover_row(db, plugin, r, max_lost_leases, ttl_s) for r in rows]
            return sum(1 for outcome in outcomes if outcome is not ReleaseOutcome.NOT_HELD)

    def _recover_row(
        self, db: sqlite3.Connection, plugin: str, raw: Any, max_lost: int, ttl_s: float
    ) -> ReleaseOutcome:
        try:
            row = _decode(raw)
            leased_job(row["id"], plugin, row["payload"], _state(row))
        except MalformedRecord as exc:
            self._bury(db, exc.job_id, plugin, exc.reason, ttl_s)
            return ReleaseOutcome.DEAD
        return self._release(db, row, True, max_lost, ttl_s)

    def heartbeat(self, worker_id: str, info: Mapping[str, str], ttl_s: float) -> None:
        """Register or refresh a worker."""
        now = _now_ms()
        with self._tx() as db:
            db.execute(
                "DELETE FROM dtq_workers WHERE namespace = ? AND expiry_ms <= ?", (self.namespace, now)
            )
            db.execute(
                "INSERT OR REPLACE INTO dtq_workers (namespace, id, expiry_ms, info) VALUES (?, ?, ?, ?)",
                (
                    self.namespace,
                    worker_id,
                    now + int(ttl_s * 1000),
                    json.dumps({**info, "last_seen": str(now)}),
                ),
            )

    def unregister(self, worker_id: str) -> None:
        """Drop a worker's registration."""
        with self._tx() as db:
            db.execute("DELETE FROM dtq_workers WHERE namespace = ? AND id = ?", (self.namespace, worker_id))

    def workers(self) -> list[dict[str, str]]:
        """Live workers' descriptions."""
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT id, info FROM dtq_workers WHERE namespace = ? AND expiry_ms > ?",
                (self.namespace, _now_ms()),
            ).fetchall()
        return [dict(json.loads(info), id=worker_id) for worker_id, info in rows]

    def stats(self) -> Stats:
        """Counts per plugin queue and of dead and failed jobs."""
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT plugin, status, COUNT(*) FROM dtq_jobs WHERE namespace = ? "
                "AND (expires_ms IS NULL OR expires_ms > ?) GROUP BY plugin, status",
                (self.namespace, _now_ms()),
            ).fetchall()
        counts: dict[str, dict[str, int]] = {}
        for plugin, status, n in rows:
            counts.setdefault(plugin, {})[status] = n
        queues = [
            QueueStats(
                plugin,
                waiting=c.get("queued", 0),
                scheduled=c.get("scheduled", 0),
                running=c.get("running", 0),
            )
            for plugin, c in sorted(counts.items())
        ]
        # As the Redis engine's indexes, which keep the newest index_cap ids.
        dead, failed = (min(self.index_cap, sum(c.get(s.value, 0) for c in counts.values())) for s in INDEXED)
        return Stats(queues=queues, dead=dead, failed=failed)

    # --- final jobs --------------------------------------------------------------

    def final_ids(self, status: JobStatus, *, limit: int = 100, offset: int = 0) -> list[str]:
        """Ids of jobs with ``status`` (dead or failed), newest first: the newest ``index_cap``
        of them, as the Redis engine's index keeps (the others can still be read by id)."""
        check_indexed(status)
        listed = max(0, min(limit, self.index_cap - offset))
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT id FROM dtq_jobs WHERE namespace = ? AND status = ? AND expires_ms > ? "
                "ORDER BY finished_ms DESC, id LIMIT ? OFFSET ?",
                (self.namespace, status.value, _now_ms(), listed, offset),
            ).fetchall()
        return [job_id for (job_id,) in rows]

    def requeue(self, job: Job) -> bool:
        """Bring a final job back to its queue for a fresh set of attempts."""
        with self._tx() as db:
            row = self._row(db, job.id)
            if row is None or row["status"] in _LIVE or row["status"] == "succeeded":
                return False
            old = row["state"]
            keep = ("max_retries", "retry_backoff_s", "timeout_s", "priority", "created")
            state = {k: old[k] for k in keep if k in old}
            state.update(attempts=0, lost=0, seq=self._next_seq(db))
            row.update(state=state, status="queued", score=_score(state), token=None, expires_ms=None)
            row.update(result=None, error=None, finished_ms=None)
            self._save(db, row)
            self._event(db, EventType.REQUEUED, row)
            return True

    def purge(self, status: JobStatus) -> int:
        """Delete every job with ``status`` (dead or failed); return how many had not expired."""
        check_indexed(status)
        delete = "DELETE FROM dtq_jobs WHERE namespace = ? AND status = ? AND expires_ms "
        with self._tx() as db:
            given = (self.namespace, status.value, _now_ms())
            db.execute(delete + "<= ?", given)  # gone already for every read: not counted
            return int(db.execute(delete + "> ?", given).rowcount)

    def delete(self, job_id: str) -> bool:
        """Delete one final job's row; False when it is live or gone."""
        with self._tx() as db:
            cursor = db.execute(
                "DELETE FROM dtq_jobs WHERE namespace = ? AND id = ? AND expires_ms > ? "
                "AND status IN ('succeeded', 'failed', 'dead', 'cancelled')",
                (self.namespace, job_id, _now_ms()),
            )
            return cursor.rowcount > 0

    def browse(self, status: JobStatus, plugin: str, *, offset: int = 0, limit: int = 50) -> list[Job]:
        """A page of a queue's live jobs with ``status`` (see :meth:`Engine.browse`).

        A row whose record is malformed is left out (a worker that takes it buries it).
        """
        check_browsable(status, offset, limit)
        with self._tx(write=False) as db:
            rows = db.execute(
                f"SELECT * FROM dtq_jobs WHERE namespace = ? AND plugin = ? AND status = ? "  # noqa: S608
                f"ORDER BY {_BROWSE_ORDER[status]}, id LIMIT ? OFFSET ?",
                (self.namespace, plugin, status.value, limit, offset),
            ).fetchall()
        jobs = []
        for raw in rows:
            with contextlib.suppress(MalformedRecord):
                jobs.append(_job(_decode(raw)))
        return jobs

    # --- events and history --------------------------------------------------------

    def events(self, *, after: str | None = None, limit: int = 100, block_s: float = 0.0) -> list[Event]:
        """The kept events after ``after``; polls the file for new ones while ``block_s`` lasts."""
        after_n = counter_event_seq(after)
        deadline = time.monotonic() + block_s
        while True:
            with self._tx(write=False) as db:
                rows = db.execute(
                    f"SELECT n, {_EVENT_FIELDS} FROM dtq_events WHERE namespace = ? AND n > ? "  # noqa: S608
                    "ORDER BY n LIMIT ?",
                    (self.namespace, after_n, max(1, limit)),
                ).fetchall()
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return [_event(row) for row in rows]
            time.sleep(min(_POLL_S * 5, remaining))

    def last_event_id(self) -> str | None:
        """The newest kept event's id."""
        with self._tx(write=False) as db:
            newest = db.execute("SELECT MAX(n) FROM dtq_events WHERE namespace = ?", (self.namespace,))
            n = newest.fetchone()[0]
        return None if n is None else counter_event_id(int(n))

    def history(self, minutes: int = 60) -> list[MinuteCounts]:
        """Outcomes per minute and plugin, from ``dtq_rates``."""
        now = _now_ms()
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT minute, plugin, status, count FROM dtq_rates WHERE namespace = ? AND minute > ?",
                (self.namespace, now // MINUTE_MS - max(1, minutes)),
            ).fetchall()
        counts: dict[int, dict[str, dict[str, int]]] = {}
        for minute, plugin, status, n in rows:
            counts.setdefault(minute, {}).setdefault(plugin, {})[status] = n
        return history_minutes(max(1, minutes), now, counts)

    def ping(self) -> None:
        """Raise :class:`EngineUnavailable` unless the file can be read."""
        with self._tx(write=False) as db:
            db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # --- plumbing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        # Writers take the write lock up front (BEGIN IMMEDIATE), so a
        # read-then-write never fails half way; readers do not block anyone (WAL).
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # a damaged file may refuse this too
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise EngineUnavailable(f"SQLite database {self.path}: {exc}") from exc
            if type(exc) is sqlite3.DatabaseError:  # not a subclass: those are dtq's own mistakes
                raise EngineUnavailable(
                    f"SQLite database {self.path} is damaged ({exc}); restore it from a backup, or "
                    f"recover what it holds with: sqlite3 {self.path} .recover | sqlite3 new.db"
                ) from exc
            raise

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
                self._use_wal(connection)
                connection.execute("PRAGMA synchronous=FULL")  # a committed change survives a power cut
            except sqlite3.Error as exc:
                raise EngineUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
            self._local.connection = connection
        return connection

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """Put the file in WAL mode (it stays so), unless it is already.

        The switch needs the file to itself, and SQLite answers "database is locked"
        at once, without its busy timeout, when another connection is switching it
        too (processes started together on a new file): so it is tried again until
        the busy timeout runs out.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _row(self, db: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
        """The job's row, unless its record has expired."""
        row = db.execute(
            "SELECT * FROM dtq_jobs WHERE namespace = ? AND id = ? "
            "AND (expires_ms IS NULL OR expires_ms > ?)",
            (self.namespace, job_id, _now_ms()),
        ).fetchone()
        return None if row is None else _decode(row)

    def _save(self, db: sqlite3.Connection, row: Mapping[str, Any]) -> None:
        db.execute(
            "UPDATE dtq_jobs SET state = ?, status = ?, score = ?, due_ms = ?, deadline_ms = ?, "
            "token = ?, result = ?, error = ?, errors = ?, finished_ms = ?, expires_ms = ? "
            "WHERE namespace = ? AND id = ?",
            (
                json.dumps(row["state"]),
                row["status"],
                row["score"],
                row["due_ms"],
                row["deadline_ms"],
                row["token"],
                row["result"],
                row["error"],
                json.dumps(row["errors"]),
                row["finished_ms"],
                row["expires_ms"],
                self.namespace,
                row["id"],
            ),
        )

    def _next_seq(self, db: sqlite3.Connection) -> int:
        db.execute(
            "INSERT INTO dtq_seq (namespace, seq) VALUES (?, 1) "
            "ON CONFLICT (namespace) DO UPDATE SET seq = seq + 1",
            (self.namespace,),
        )
        return int(db.execute("SELECT seq FROM dtq_seq WHERE namespace = ?", (self.namespace,)).fetchone()[0])

    def _expire(self, db: sqlite3.Connection) -> int:
        now = _now_ms()
        db.execute("DELETE FROM dtq_jobs WHERE namespace = ? AND expires_ms <= ?", (self.namespace, now))
        return now

    def _lease(
        self, db: sqlite3.Connection, row: dict[str, Any], now: int, lease_s: float, worker_id: str
    ) -> Lease:
        state = row["state"]
        state["attempts"] = int(state.get("attempts", 0)) + 1
        state.update(started=now, worker=worker_id)
        state.pop("progress", None)
        state.pop("message", None)
        token = delivery_token(worker_id, state)
        row.update(status="running", token=token, deadline_ms=now + int(lease_s * 1000))
        self._save(db, row)
        self._event(db, EventType.STARTED, row)
        return Lease(_job(row), token=token)

    def _bury(self, db: sqlite3.Connection, job_id: str, plugin: str, reason: str, ttl_s: float) -> None:
        """End a job whose row is malformed as dead, with the reason, in a row any dtq reads."""
        error = malformed_error(reason)
        payload = encode_payload(Job(id=job_id, plugin=plugin, data={}))
        db.execute(
            "UPDATE dtq_jobs SET payload = ?, plugin = ? WHERE namespace = ? AND id = ?",
            (payload, plugin, self.namespace, job_id),
        )
        row: dict[str, Any] = dict.fromkeys(_COLUMNS)
        row.update(id=job_id, plugin=plugin, payload=payload, error=json.dumps(error.to_dict()), errors=[])
        row["state"] = {"attempts": 0, "lost": 0, "priority": 0, "created": _now_ms()}
        self._finish(db, row, "dead", ttl_s, error)
        log.warning(
            "job %s (%s): malformed record, buried as dead: %s",
            job_id,
            plugin,
            reason,
            extra={"job_id": job_id, "plugin": plugin, "status": "dead"},
        )

    def _release(
        self,
        db: sqlite3.Connection,
        row: dict[str, Any],
        lost: bool,
        max_lost: int,
        ttl_s: float,
        unstarted: bool = False,
    ) -> ReleaseOutcome:
        if row["status"] != "running":
            return ReleaseOutcome.NOT_HELD
        state = row["state"]
        row.update(token=None, deadline_ms=None)
        if unstarted:
            uncount_attempt(state)
        if lost:
            state["lost"] = int(state.get("lost", 0)) + 1
            self._add_error(row, json.dumps(LOST_LEASE.to_dict()))
            self._event(db, EventType.LEASE_LOST, row, LOST_LEASE)
        if state.get("cancel"):
            self._finish(db, row, "cancelled", ttl_s)
            return ReleaseOutcome.CANCELLED
        if state["lost"] >= max_lost:
            dead = dead_after_lost_leases(max_lost)
            row["error"] = json.dumps(dead.to_dict())
            self._finish(db, row, "dead", ttl_s, dead)
            return ReleaseOutcome.DEAD
        row["status"] = "queued"
        self._save(db, row)
        self._event(db, EventType.REQUEUED, row)
        return ReleaseOutcome.REQUEUED

    def _finish(
        self,
        db: sqlite3.Connection,
        row: dict[str, Any],
        status: str,
        ttl_s: float,
        error: ErrorInfo | None = None,
    ) -> None:
        now = _now_ms()
        row["state"]["finished"] = now
        # The token stays on the final row, so a retried complete is recognised.
        row.update(status=status, finished_ms=now, expires_ms=now + int(ttl_s * 1000))
        self._save(db, row)
        self._count(db, row["plugin"], status)
        self._event(db, EventType(status), row, error)

    def _add_error(self, row: dict[str, Any], error_json: str) -> None:
        row["errors"] = [*row["errors"], error_json][-self.errors_kept :]

    def _event(
        self,
        db: sqlite3.Connection,
        kind: EventType,
        row: Mapping[str, Any],
        error: ErrorInfo | None = None,
        delay_ms: int | None = None,
    ) -> None:
        """Record a lifecycle event in the operation's transaction, keeping the newest ``events_max``."""
        if self.events_max <= 0:
            return
        # Events are trimmed from the oldest, never the newest, so MAX(n) only grows.
        n = db.execute(
            "SELECT COALESCE(MAX(n), 0) + 1 FROM dtq_events WHERE namespace = ?", (self.namespace,)
        ).fetchone()[0]
        state = row["state"]
        db.execute(
            f"INSERT INTO dtq_events (namespace, n, {_EVENT_FIELDS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.namespace,
                n,
                _now_ms(),
                kind.value,
                row["id"],
                row["plugin"],
                int(state.get("attempts", 0)),
                state.get("worker"),
                None if error is None else error.type,
                None if error is None else short_message(error.message),
                delay_ms,
            ),
        )
        db.execute(
            "DELETE FROM dtq_events WHERE namespace = ? AND n <= ?", (self.namespace, n - self.events_max)
        )

    def _count(self, db: sqlite3.Connection, plugin: str, status: str) -> None:
        """Count an outcome in the current minute; forget minutes older than two hours."""
        minute = _now_ms() // MINUTE_MS
        db.execute(
            "INSERT INTO dtq_rates (namespace, minute, plugin, status, count) VALUES (?, ?, ?, ?, 1) "
            "ON CONFLICT (namespace, minute, plugin, status) DO UPDATE SET count = count + 1",
            (self.namespace, minute, plugin, status),
        )
        db.execute(
            "DELETE FROM dtq_rates WHERE namespace = ? AND minute <= ?",
            (self.namespace, minute - HISTORY_S // 60),
        )


_COLUMNS = (
    "namespace",
    "id",
    "plugin",
    "payload",
    "state",
    "status",
    "score",
    "due_ms",
    "deadline_ms",
    "token",
    "result",
    "error",
    "errors",
    "finished_ms",
    "expires_ms",
)


#: The column that orders each browsable status: queue order, due time, lease deadline.
_BROWSE_ORDER = {JobStatus.QUEUED: "score", JobStatus.SCHEDULED: "due_ms", JobStatus.RUNNING: "deadline_ms"}


#: The columns of an event after its namespace and number, in :class:`Event`'s order.
_EVENT_FIELDS = "time_ms, type, job_id, plugin, attempt, worker, error_type, error_message, delay_ms"


def _event(row: Sequence[Any]) -> Event:
    n, time_ms, kind, job_id, plugin, attempt, worker, error_type, error_message, delay_ms = row
    return Event(
        id=counter_event_id(int(n)),
        time_ms=int(time_ms),
        type=EventType(kind),
        job_id=job_id,
        plugin=plugin,
        attempt=int(attempt),
        worker=worker,
        error_type=error_type,
        error_message=error_message,
        delay_ms=delay_ms,
    )


#: The ``due_ms`` conditions under which a scheduled row is promoted, and whether each
#: takes the current time: due; and (garbage, dtq never writes it) no time, or text
#: (which SQLite sorts after every number). One statement each, so each uses the index.
_DUE = (("due_ms <= ?", True), ("due_ms IS NULL", False), ("due_ms >= ''", False))


def _decode(row: Sequence[Any]) -> dict[str, Any]:
    """A row as a dict, its JSON columns decoded.

    Raises:
        MalformedRecord: the state or errors column is not what dtq writes.
    """
    decoded = dict(zip(_COLUMNS, row, strict=True))
    try:
        decoded["state"] = dict(read_state(decoded["state"]))
    except ValueError as exc:
        raise MalformedRecord(decoded["id"], str(exc)) from exc
    try:
        errors = json.loads(decoded["errors"])
    except (TypeError, ValueError, RecursionError):
        errors = None
    if not (isinstance(errors, list) and all(isinstance(e, str) for e in errors)):
        raise MalformedRecord(decoded["id"], "the errors column is not a JSON list of errors")
    decoded["errors"] = errors
    return decoded


def _state(row: Mapping[str, Any]) -> dict[str, Any]:
    """The state as the other engines keep it: with the status and due time columns."""
    return {**row["state"], "status": row["status"], "due": row["due_ms"]}


def _job(row: Mapping[str, Any]) -> Job:
    return job_from_state(row["id"], row["payload"], _state(row), row["result"], row["error"], row["errors"])
