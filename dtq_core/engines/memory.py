"""The memory engine: the whole engine contract in one process, for tests and trials.

``memory://NAME`` names a store shared by every queue and worker of the process
that uses the same URL (``memory://`` alone is the store ``default``). Every
operation holds one lock, so each is atomic exactly as a Lua script is in Redis;
the semantics (leases, fencing, retries, delays, cancellation, retention) are
the Redis engine's, checked by the same contract tests. Nothing survives the
process: use it for unit tests of plugins and applications, never in production.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import itertools
import json
import math
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from dtq_core.config import DEFAULT_NAMESPACE
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
from dtq_core.job import ErrorInfo, Job, JobStatus
from dtq_core.record import job_from_state


def _now_ms() -> int:
    return int(time.time() * 1000)


def _score(state: Mapping[str, Any]) -> float:
    return -int(state.get("priority", 0)) * 2**40 + int(state["seq"])


@attrs.define
class _Record:
    plugin: str
    payload: str
    state: dict[str, Any]
    result: str | None = None
    error: str | None = None
    expires_ms: int | None = None  # set once final


@attrs.define
class _Space:
    """One namespace's data; the field names follow the Redis keys."""

    records: dict[str, _Record] = attrs.field(factory=dict)
    ready: dict[str, list[tuple[float, str]]] = attrs.field(factory=dict)
    active: dict[str, dict[str, int]] = attrs.field(factory=dict)
    scheduled: dict[str, dict[str, int]] = attrs.field(factory=dict)
    errors: dict[str, list[str]] = attrs.field(factory=dict)
    index: dict[str, dict[str, int]] = attrs.field(factory=dict)
    workers: dict[str, tuple[int, dict[str, str]]] = attrs.field(factory=dict)
    plugins: set[str] = attrs.field(factory=set)
    #: heap of (expiry ms, id) of final records, so expiry never scans every job
    expiring: list[tuple[int, str]] = attrs.field(factory=list)
    seq: int = 0
    #: (number, event), oldest first; numbers run on without gaps, so an
    #: event's place is its number minus the first one's
    events: collections.deque[tuple[int, Event]] = attrs.field(factory=collections.deque)
    event_seq: int = 0
    #: epoch minute -> plugin -> status -> count
    rates: dict[int, dict[str, dict[str, int]]] = attrs.field(factory=dict)


class _Store:
    """Every namespace of one ``memory://NAME``, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.spaces: dict[str, _Space] = {}

    def space(self, namespace: str) -> _Space:
        return self.spaces.setdefault(namespace, _Space())


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


#: Each engine option's range; see check_engine_options.
_OPTION_RANGES: dict[str, OptionRange] = {
    "errors_kept": (int, 1, True, math.inf),
    "index_cap": (int, 0, True, math.inf),  # 0: no dead or failed job is listed
    "events_max": (int, 0, True, math.inf),
}


class MemoryEngine(Engine):
    """Jobs kept in this process's memory; see the module documentation.

    Args:
        store: the shared store (from :meth:`from_url`, or a fresh one).
        namespace: scopes job ids and queues.
        errors_kept: the most attempt errors kept per job.
        index_cap: the most ids kept in the dead and the failed index.
        events_max: how many lifecycle events the namespace keeps; 0 records none.
    """

    def __init__(
        self,
        store: _Store | None = None,
        *,
        url: str = "memory://",
        namespace: str = DEFAULT_NAMESPACE,
        prefix: str = "dtq",
        errors_kept: int = 10,
        index_cap: int = 10_000,
        events_max: int = 10_000,
    ) -> None:
        self._store = store or _Store()
        self.url = url
        self.namespace = f"{prefix}:{namespace}"
        self.errors_kept = errors_kept
        self.index_cap = index_cap
        self.events_max = events_max
        self._woken: set[str] = set()  # workers woken (wake) whose wait has not ended since

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryEngine:
        """The engine on the process-wide store named by ``memory://NAME``."""
        cls.check_options(url, options)
        name = urllib.parse.urlsplit(url).netloc or "default"
        with _STORES_LOCK:
            store = _STORES.setdefault(name, _Store())
        return cls(store, url=url, **options)

    @classmethod
    def check_options(cls, url: str, options: Mapping[str, Any]) -> None:
        """Refuse an unknown or out-of-range option (see ``from_url``)."""
        check_engine_options("memory", url, options, _OPTION_RANGES)

    @property
    def _space(self) -> _Space:
        return self._store.space(self.namespace)

    # --- producers -------------------------------------------------------------

    def append(
        self, job: Job, payload: str, *, delay_s: float = 0.0, eta: datetime | None = None
    ) -> AppendOutcome:
        """Create the job unless its id exists (as ``append.lua``)."""
        with self._store.lock:
            space = self._space
            self._expire(space)
            existing = space.records.get(job.id)
            if existing is not None:
                return AppendOutcome.EXISTS if existing.payload == payload else AppendOutcome.CONFLICT
            now = _now_ms()
            space.seq += 1
            state: dict[str, Any] = {
                **job.options(),
                "seq": space.seq,
                "created": now,
                "attempts": 0,
                "lost": 0,
            }
            state.setdefault("priority", 0)
            due = int(eta.timestamp() * 1000) if eta is not None else now + int(delay_s * 1000)
            record = space.records[job.id] = _Record(job.plugin, payload, state)
            space.plugins.add(job.plugin)
            if due > now:
                state.update(status="scheduled", due=due)
                space.scheduled.setdefault(job.plugin, {})[job.id] = due
                self._event(space, EventType.SCHEDULED, job.id, record, delay_ms=due - now)
            else:
                state["status"] = "queued"
                self._enqueue(space, job.plugin, job.id, state)
                self._event(space, EventType.APPENDED, job.id, record)
            self._store.lock.notify_all()
            return AppendOutcome.CREATED

    def get(self, job_id: str) -> Job | None:
        """The job's record, live or final."""
        with self._store.lock:
            space = self._space
            self._expire(space)
            record = space.records.get(job_id)
            return None if record is None else _job(job_id, record, space.errors.get(job_id, []))

    def wait_for_final(self, job_id: str, timeout_s: float) -> Job | None:
        """Wait on the store's condition until the job is final or time runs out."""
        deadline = time.monotonic() + timeout_s
        with self._store.lock:
            while True:
                job = self.get(job_id)
                remaining = deadline - time.monotonic()
                if job is None or job.status.is_final or remaining <= 0:
                    return job
                self._store.lock.wait(remaining)

    def cancel(self, job: Job, *, ttl_s: float) -> CancelOutcome:
        """Cancel at once, or flag a running job (as ``cancel.lua``)."""
        with self._store.lock:
            space = self._space
            record = space.records.get(job.id)
            if record is None:
                return CancelOutcome.NOT_FOUND
            status = record.state["status"]
            if status == "running":
                if not record.state.get("cancel"):
                    record.state["cancel"] = 1
                    self._event(space, EventType.CANCEL_REQUESTED, job.id, record)
                return CancelOutcome.REQUESTED
            if status not in ("queued", "scheduled"):
                return CancelOutcome.ALREADY_FINAL
            self._unqueue(space, job.plugin, job.id)
            record.state.pop("due", None)
            self._finish(space, job.id, record, "cancelled", ttl_s)
            return CancelOutcome.CANCELLED

    # --- workers -----------------------------------------------------------------

    def fetch(self, plugins: Sequence[str], *, count: int, lease_s: float, worker_id: str) -> Batch:
        """Promote due jobs, then take and lease up to ``count`` (as ``fetch.lua``)."""
        with self._store.lock:
            space = self._space
            self._expire(space)
            now = _now_ms()
            next_due = [self._promote(space, plugin, now) for plugin in plugins]
            leases: list[Lease] = []
            for plugin in plugins:
                queue = space.ready.get(plugin, [])
                while queue and len(leases) < count:
                    _, job_id = queue.pop(0)
                    leases.append(self._lease(space, plugin, job_id, now, lease_s, worker_id))
            waits = [due - now for due in next_due if due is not None]
            more = any(space.ready.get(plugin) for plugin in plugins) or any(w <= 0 for w in waits)
            return Batch(leases, min(waits) / 1000 if waits else None, more=more)

    def wait_for_jobs(self, plugins: Sequence[str], timeout_s: float) -> None:
        """Wait on the store's condition (any append or requeue wakes it)."""
        with self._store.lock:
            self._wait_locked(plugins, timeout_s)

    def wait_and_fetch(
        self, plugins: Sequence[str], timeout_s: float, *, count: int, lease_s: float, worker_id: str
    ) -> Batch:
        """Wait as :meth:`wait_for_jobs` does, unless ``worker_id`` was woken since; then fetch."""
        with self._store.lock:
            if worker_id not in self._woken:
                self._wait_locked(plugins, timeout_s)
            self._woken.discard(worker_id)
        return self.fetch(plugins, count=count, lease_s=lease_s, worker_id=worker_id)

    def _wait_locked(self, plugins: Sequence[str], timeout_s: float) -> None:
        if not any(self._space.ready.get(plugin) for plugin in plugins):
            self._store.lock.wait(timeout_s)

    def wake(self, worker_id: str) -> None:
        """End the worker's wait, or its next one if it is not waiting yet (no wake-up is lost).

        Every wait on the store wakes; the others find nothing new and wait again.
        """
        with self._store.lock:
            self._woken.add(worker_id)
            self._store.lock.notify_all()

    def complete(self, lease: Lease, outcome: Outcome, *, ttl_s: float) -> Recorded:
        """Record an outcome under the lease's token (as ``complete.lua``)."""
        job = lease.job
        with self._store.lock:
            space = self._space
            record = space.records.get(job.id)
            if record is None or record.state.get("token") != lease.token:
                return Recorded.REFUSED
            if record.state["status"] != "running":
                return recorded_as(record.state["status"], outcome)
            space.active.get(job.plugin, {}).pop(job.id, None)
            if outcome.error is not None:
                self._add_error(space, job.id, json.dumps(outcome.error.to_dict()))
            status = outcome.status
            if status is JobStatus.SCHEDULED and record.state.get("cancel"):
                status = JobStatus.CANCELLED  # asked for during the attempt: no retry (as complete.lua)
            if status is JobStatus.SCHEDULED:
                delay_ms = int(outcome.retry_in_s * 1000)
                record.state.update(status="scheduled", due=_now_ms() + delay_ms)
                space.scheduled.setdefault(job.plugin, {})[job.id] = record.state["due"]
                self._count(space, job.plugin, EventType.RETRYING.value)
                self._event(space, EventType.RETRYING, job.id, record, outcome.error, delay_ms)
                return Recorded.STORED
            record.result = outcome.result_json
            record.error = None if outcome.error is None else json.dumps(outcome.error.to_dict())
            self._finish(space, job.id, record, status.value, ttl_s, outcome.error)
            return recorded_as(status.value, outcome)

    def renew(self, leases: Sequence[Lease], lease_s: float) -> Renewal:
        """Extend held leases; report lost ones and cancellation requests."""
        renewal = Renewal()
        with self._store.lock:
            space = self._space
            deadline = _now_ms() + int(lease_s * 1000)
            for lease in leases:
                record = space.records.get(lease.job.id)
                if (
                    record is None
                    or record.state["status"] != "running"
                    or record.state.get("token") != lease.token
                ):
                    renewal.lost.append(lease.job.id)
                    continue
                space.active.setdefault(lease.job.plugin, {})[lease.job.id] = deadline
                if record.state.get("cancel"):
                    renewal.cancel.append(lease.job.id)
        return renewal

    def progress(self, lease: Lease, progress: float | None, message: str | None) -> tuple[bool, bool]:
        """Record progress under the lease's token."""
        with self._store.lock:
            record = self._space.records.get(lease.job.id)
            if (
                record is None
                or record.state["status"] != "running"
                or record.state.get("token") != lease.token
            ):
                return False, False
            if progress is not None:
                record.state["progress"] = float(progress)
            if message:
                record.state["message"] = message
            return True, bool(record.state.get("cancel"))

    def release(self, lease: Lease, *, lost: bool, max_lost_leases: int, ttl_s: float) -> ReleaseOutcome:
        """Give a held job back (as ``release.lua`` with a token)."""
        return self._release_held(lease, lost, False, max_lost_leases, ttl_s)

    def hand_back(self, lease: Lease, *, max_lost_leases: int, ttl_s: float) -> ReleaseOutcome:
        """Give back a job never started, its attempt not counted (as ``release.lua``)."""
        return self._release_held(lease, False, True, max_lost_leases, ttl_s)

    def _release_held(
        self, lease: Lease, lost: bool, unstarted: bool, max_lost: int, ttl_s: float
    ) -> ReleaseOutcome:
        with self._store.lock:
            record = self._space.records.get(lease.job.id)
            if record is None or record.state.get("token") != lease.token:
                return ReleaseOutcome.NOT_HELD
            return self._release(
                self._space, lease.job.plugin, lease.job.id, lost, max_lost, ttl_s, unstarted
            )

    def recover(self, plugin: str, *, max_lost_leases: int, ttl_s: float, limit: int = 100) -> int:
        """Requeue or bury the jobs whose lease expired."""
        with self._store.lock:
            space = self._space
            now = _now_ms()
            expired = [i for i, deadline in space.active.get(plugin, {}).items() if deadline <= now][:limit]
            outcomes = [self._release(space, plugin, i, True, max_lost_leases, ttl_s) for i in expired]
            return sum(1 for outcome in outcomes if outcome is not ReleaseOutcome.NOT_HELD)

    def heartbeat(self, worker_id: str, info: Mapping[str, str], ttl_s: float) -> None:
        """Register or refresh a worker."""
        with self._store.lock:
            now = _now_ms()
            description = {**info, "last_seen": str(now)}
            self._space.workers[worker_id] = (now + int(ttl_s * 1000), description)

    def unregister(self, worker_id: str) -> None:
        """Drop a worker's registration."""
        with self._store.lock:
            self._space.workers.pop(worker_id, None)

    def workers(self) -> list[dict[str, str]]:
        """Live workers' descriptions."""
        with self._store.lock:
            now = _now_ms()
            live = self._space.workers.items()
            return [dict(info, id=worker_id) for worker_id, (expiry, info) in live if expiry > now]

    def stats(self) -> Stats:
        """Counts per plugin queue and of dead and failed jobs."""
        with self._store.lock:
            space = self._space
            self._expire(space)
            queues = [
                QueueStats(
                    plugin,
                    waiting=len(space.ready.get(plugin, [])),
                    scheduled=len(space.scheduled.get(plugin, {})),
                    running=len(space.active.get(plugin, {})),
                )
                for plugin in sorted(space.plugins)
            ]
            dead, failed = (len(space.index.get(s.value, {})) for s in INDEXED)
            return Stats(queues=queues, dead=dead, failed=failed)

    # --- final jobs --------------------------------------------------------------

    def final_ids(self, status: JobStatus, *, limit: int = 100, offset: int = 0) -> list[str]:
        """Ids in the status's index, newest first."""
        check_indexed(status)
        with self._store.lock:
            self._expire(self._space)
            index = self._space.index.get(status.value, {})
            newest = sorted(index, key=lambda i: index[i], reverse=True)
            return newest[offset : offset + limit]

    def requeue(self, job: Job) -> bool:
        """Bring a final job back to its queue for a fresh set of attempts."""
        with self._store.lock:
            space = self._space
            for index in space.index.values():
                index.pop(job.id, None)
            record = space.records.get(job.id)
            if record is None or record.expires_ms is None:
                return False
            old = record.state
            space.seq += 1
            state: dict[str, Any] = {
                "status": "queued",
                "attempts": 0,
                "lost": 0,
                "created": old.get("created"),
                "priority": old.get("priority", 0),
                "seq": space.seq,
                **{k: old[k] for k in ("max_retries", "retry_backoff_s", "timeout_s") if k in old},
            }
            space.records[job.id] = _Record(job.plugin, record.payload, state)
            self._enqueue(space, job.plugin, job.id, state)
            self._event(space, EventType.REQUEUED, job.id, space.records[job.id])
            self._store.lock.notify_all()
            return True

    def purge(self, status: JobStatus) -> int:
        """Delete every job with ``status``, listed in its index or past its cap; return how many."""
        check_indexed(status)
        with self._store.lock:
            space = self._space
            self._expire(space)
            space.index.pop(status.value, None)
            gone = [
                job_id for job_id, record in space.records.items() if record.state["status"] == status.value
            ]
            for job_id in gone:
                del space.records[job_id]
                space.errors.pop(job_id, None)
            return len(gone)

    def delete(self, job_id: str) -> bool:
        """Delete one final job's record; False when it is live or gone."""
        with self._store.lock:
            space = self._space
            self._expire(space)
            record = space.records.get(job_id)
            if record is None or record.expires_ms is None:
                return False
            del space.records[job_id]
            space.errors.pop(job_id, None)
            for index in space.index.values():
                index.pop(job_id, None)
            return True

    def browse(self, status: JobStatus, plugin: str, *, offset: int = 0, limit: int = 50) -> list[Job]:
        """A page of a queue's live jobs with ``status`` (see :meth:`Engine.browse`)."""
        check_browsable(status, offset, limit)
        with self._store.lock:
            space = self._space
            self._expire(space)
            ids = _live_ids(space, status, plugin)[offset : offset + limit]
            return [_job(i, space.records[i], space.errors.get(i, [])) for i in ids if i in space.records]

    # --- events and history --------------------------------------------------------

    def events(self, *, after: str | None = None, limit: int = 100, block_s: float = 0.0) -> list[Event]:
        """The kept events after ``after``; waits on the store's condition for new ones."""
        after_seq = counter_event_seq(after)
        deadline = time.monotonic() + block_s
        with self._store.lock:
            while True:
                events = self._events_after(self._space, after_seq, limit)
                remaining = deadline - time.monotonic()
                if events or remaining <= 0:
                    return events
                self._store.lock.wait(remaining)

    def last_event_id(self) -> str | None:
        """The newest kept event's id."""
        with self._store.lock:
            events = self._space.events
            return events[-1][1].id if events else None

    def history(self, minutes: int = 60) -> list[MinuteCounts]:
        """Outcomes per minute and plugin, from the store's counters."""
        with self._store.lock:
            rates = {minute: _copy(counts) for minute, counts in self._space.rates.items()}
        return history_minutes(max(1, minutes), _now_ms(), rates)

    def ping(self) -> None:
        """Always answers."""

    def close(self) -> None:
        """Nothing to release: the store lives as long as the process."""

    # --- the shared steps of the operations above (called with the lock held) ----

    def _enqueue(self, space: _Space, plugin: str, job_id: str, state: Mapping[str, Any]) -> None:
        bisect.insort(space.ready.setdefault(plugin, []), (_score(state), job_id))

    def _unqueue(self, space: _Space, plugin: str, job_id: str) -> None:
        queue = space.ready.get(plugin, [])
        space.ready[plugin] = [(score, i) for score, i in queue if i != job_id]
        space.scheduled.get(plugin, {}).pop(job_id, None)

    def _promote(self, space: _Space, plugin: str, now: int) -> int | None:
        scheduled = space.scheduled.get(plugin, {})
        for job_id in [i for i, due in scheduled.items() if due <= now]:
            del scheduled[job_id]
            state = space.records[job_id].state
            state["status"] = "queued"
            state.pop("due", None)
            self._enqueue(space, plugin, job_id, state)
        return min(scheduled.values(), default=None)

    def _lease(
        self, space: _Space, plugin: str, job_id: str, now: int, lease_s: float, worker_id: str
    ) -> Lease:
        record = space.records[job_id]
        state = record.state
        state["attempts"] = int(state["attempts"]) + 1
        state.update(status="running", started=now, worker=worker_id, token=delivery_token(worker_id, state))
        state.pop("progress", None)
        state.pop("message", None)
        space.active.setdefault(plugin, {})[job_id] = now + int(lease_s * 1000)
        self._event(space, EventType.STARTED, job_id, record)
        return Lease(_job(job_id, record, space.errors.get(job_id, [])), token=state["token"])

    def _release(
        self,
        space: _Space,
        plugin: str,
        job_id: str,
        lost: bool,
        max_lost: int,
        ttl_s: float,
        unstarted: bool = False,
    ) -> ReleaseOutcome:
        space.active.get(plugin, {}).pop(job_id, None)
        record = space.records.get(job_id)
        if record is None or record.state["status"] != "running":
            return ReleaseOutcome.NOT_HELD
        state = record.state
        state.pop("token", None)
        if unstarted:
            uncount_attempt(state)
        if lost:
            state["lost"] = int(state["lost"]) + 1
            self._add_error(space, job_id, json.dumps(LOST_LEASE.to_dict()))
            self._event(space, EventType.LEASE_LOST, job_id, record, LOST_LEASE)
        if state.get("cancel"):
            self._finish(space, job_id, record, "cancelled", ttl_s)
            return ReleaseOutcome.CANCELLED
        if state["lost"] >= max_lost:
            dead = dead_after_lost_leases(max_lost)
            record.error = json.dumps(dead.to_dict())
            self._finish(space, job_id, record, "dead", ttl_s, dead)
            return ReleaseOutcome.DEAD
        state["status"] = "queued"
        self._enqueue(space, plugin, job_id, state)
        self._event(space, EventType.REQUEUED, job_id, record)
        self._store.lock.notify_all()
        return ReleaseOutcome.REQUEUED

    def _finish(
        self,
        space: _Space,
        job_id: str,
        record: _Record,
        status: str,
        ttl_s: float,
        error: ErrorInfo | None = None,
    ) -> None:
        now = _now_ms()
        record.state.update(status=status, finished=now)
        record.expires_ms = now + int(ttl_s * 1000)
        heapq.heappush(space.expiring, (record.expires_ms, job_id))
        if status in (s.value for s in INDEXED):
            index = space.index.setdefault(status, {})
            index[job_id] = now
            while len(index) > self.index_cap:
                del index[min(index, key=lambda i: index[i])]
        self._count(space, record.plugin, status)
        self._event(space, EventType(status), job_id, record, error)
        self._store.lock.notify_all()

    def _event(
        self,
        space: _Space,
        kind: EventType,
        job_id: str,
        record: _Record,
        error: ErrorInfo | None = None,
        delay_ms: int | None = None,
    ) -> None:
        """Record a lifecycle event (as the scripts' XADD), keeping the newest ``events_max``."""
        if self.events_max <= 0:
            return
        space.event_seq += 1
        event = Event(
            id=counter_event_id(space.event_seq),
            time_ms=_now_ms(),
            type=kind,
            job_id=job_id,
            plugin=record.plugin,
            attempt=int(record.state.get("attempts", 0)),
            worker=record.state.get("worker"),
            error_type=None if error is None else error.type,
            error_message=None if error is None else short_message(error.message),
            delay_ms=delay_ms,
        )
        space.events.append((space.event_seq, event))
        while len(space.events) > self.events_max:
            space.events.popleft()
        self._store.lock.notify_all()

    def _events_after(self, space: _Space, after_seq: int, limit: int) -> list[Event]:
        if not space.events:
            return []
        start = max(0, after_seq - space.events[0][0] + 1)
        return [event for _, event in itertools.islice(space.events, start, start + max(1, limit))]

    def _count(self, space: _Space, plugin: str, status: str) -> None:
        """Count an outcome in the current minute; forget minutes older than two hours."""
        minute = _now_ms() // MINUTE_MS
        by_status = space.rates.setdefault(minute, {}).setdefault(plugin, {})
        by_status[status] = by_status.get(status, 0) + 1
        if len(space.rates) > HISTORY_S // 60:
            for old in [m for m in space.rates if m <= minute - HISTORY_S // 60]:
                del space.rates[old]

    def _add_error(self, space: _Space, job_id: str, error_json: str) -> None:
        errors = space.errors.setdefault(job_id, [])
        errors.append(error_json)
        del errors[: -self.errors_kept]

    def _expire(self, space: _Space) -> None:
        now = _now_ms()
        while space.expiring and space.expiring[0][0] <= now:
            expiry, job_id = heapq.heappop(space.expiring)
            record = space.records.get(job_id)
            if record is None or record.expires_ms != expiry:
                continue  # requeued, purged or finished again since
            del space.records[job_id]
            space.errors.pop(job_id, None)
            for index in space.index.values():
                index.pop(job_id, None)


def _live_ids(space: _Space, status: JobStatus, plugin: str) -> list[str]:
    """A queue's ids with ``status`` in browsing order (as the Redis engine's sorted sets)."""
    if status is JobStatus.QUEUED:
        return [job_id for _, job_id in space.ready.get(plugin, [])]
    times = (space.scheduled if status is JobStatus.SCHEDULED else space.active).get(plugin, {})
    return sorted(times, key=lambda job_id: (times[job_id], job_id))


def _copy(counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    return {plugin: dict(by_status) for plugin, by_status in counts.items()}


def _job(job_id: str, record: _Record, errors: Sequence[str]) -> Job:
    return job_from_state(job_id, record.payload, record.state, record.result, record.error, errors)
