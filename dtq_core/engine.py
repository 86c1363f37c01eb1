"""The engine contract: the small set of atomic operations the queue and worker need.

An engine stores jobs and performs every state change of a job as one atomic
step. Nothing above this interface knows which storage is underneath. Engines
are found by URL scheme in the ``dtq.engines`` entry-point group; dtq registers
its own there exactly as a third party would.
"""

from __future__ import annotations

import abc
import enum
import math
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

import attrs

from dtq_core.config import in_bounds, mask_url, url_from_env
from dtq_core.errors import EngineError, NotSupported, UnknownEngine, UnknownPlugin
from dtq_core.job import ErrorInfo, Job, JobStatus
from dtq_core.plugin import ENGINE_GROUP, load_entry_point

# Re-exported: engines written before dtq_core.record existed import it from here.
from dtq_core.record import job_from_state as job_from_state  # noqa: PLC0414


class AppendOutcome(enum.Enum):
    """What :meth:`Engine.append` did."""

    CREATED = "created"
    #: The id exists with the same plugin and data: nothing was written.
    EXISTS = "exists"
    #: The id exists with a different plugin or data: nothing was written.
    CONFLICT = "conflict"


class CancelOutcome(enum.Enum):
    """What :meth:`Engine.cancel` did."""

    #: The job was queued or scheduled; it is now cancelled and will never run.
    CANCELLED = "cancelled"
    #: The job is running; its worker and plugin are asked to stop it.
    REQUESTED = "requested"
    ALREADY_FINAL = "already final"
    NOT_FOUND = "not found"


class ReleaseOutcome(enum.Enum):
    """What :meth:`Engine.release` did with a leased job."""

    REQUEUED = "requeued"
    DEAD = "dead"
    CANCELLED = "cancelled"
    #: The caller no longer held the lease; nothing changed.
    NOT_HELD = "not held"


#: The final statuses whose jobs are listed (and counted, and purged) by status.
INDEXED = (JobStatus.DEAD, JobStatus.FAILED)


def check_indexed(status: JobStatus) -> None:
    """Refuse a status that :meth:`Engine.final_ids` and :meth:`Engine.purge` do not take.

    Raises:
        ValueError: ``status`` is not dead or failed.
    """
    if status not in INDEXED:
        raise ValueError(f"only {', '.join(s.value for s in INDEXED)} jobs are indexed, not {status.value}")


#: An engine option's kind (int or float), least value, whether the least is allowed, and most value.
OptionRange = tuple[type, float, bool, float]


def check_engine_options(
    engine: str, url: str, options: Mapping[str, Any], ranges: Mapping[str, OptionRange]
) -> None:
    """Refuse an engine option that is unknown, or not a number in its range (``prefix`` and
    ``namespace`` are checked where they are used).

    Raises:
        EngineError: says which option, what it is and what it must be.
    """
    for name, value in options.items():
        if name in ("prefix", "namespace"):
            continue
        if name not in ranges:
            known = ", ".join(sorted(ranges))
            raise EngineError(
                f"unknown {engine} engine option {name!r} (for {mask_url(url)}); known: {known}"
            )
        kind, least, least_allowed, most = ranges[name]
        if in_bounds(value, least, most, least_allowed=least_allowed) and (
            kind is not int or value == int(value)
        ):
            continue
        what = "a whole number" if kind is int else "a number"
        wanted = f"{what} {'from' if least_allowed else 'above'} {least:g}"
        if most < math.inf:
            wanted += f" to {most:g}"
        raise EngineError(
            f"{engine} engine option {name} = {value!r}: expected {wanted} (engine options come from "
            f"engine_options=, [engine] in the config file, or DTQ_ENGINE__{name.upper()})"
        )


class Recorded(enum.IntEnum):
    """What :meth:`Engine.complete` made of an attempt's outcome; false only when refused.

    An int, so that a custom engine's plain ``True``/``False`` (the answer before
    this type) reads as STORED/REFUSED.
    """

    #: The lease no longer holds (it expired and the job went to another worker, or the
    #: job is gone): nothing was written.
    REFUSED = 0
    #: Stored as given (also when this very attempt was stored already: a repeated call).
    STORED = 1
    #: A retry stored as the job's cancellation instead: the cancel was asked for during
    #: the attempt, so the job ends cancelled rather than running again.
    CANCELLED = 2


@attrs.frozen
class Lease:
    """A job handed to one worker, and the fencing token that proves it holds it."""

    job: Job
    token: str


@attrs.frozen
class Appending:
    """One job of :meth:`Engine.append_many`: the arguments :meth:`Engine.append` takes.

    ``fresh``: the job's id was made for this append (:func:`~dtq_core.job.new_job_id`,
    128 random bits), so no job can have it yet, and an engine may skip looking for
    one. Only its first sending may: one sent again (its reply lost) may have run.
    """

    job: Job
    payload: str
    delay_s: float = 0.0
    eta: datetime | None = None
    fresh: bool = False


@attrs.frozen
class Batch:
    """What one :meth:`Engine.fetch` took, and how long until a delayed job is due.

    ``more`` says whether jobs of the plugins asked for were still queued
    after it (None: the engine does not say). A worker whose queue ran dry
    waits briefly for the next job in the round trip that records its last
    outcome (see :meth:`Engine.complete_and_fetch`'s ``wait_s``).
    """

    leases: list[Lease]
    next_due_s: float | None = None
    more: bool | None = None


@attrs.frozen
class Renewal:
    """What :meth:`Engine.renew` found: leases lost, and jobs asked to cancel."""

    lost: list[str] = attrs.field(factory=list)
    cancel: list[str] = attrs.field(factory=list)


@attrs.frozen
class Outcome:
    """What a worker reports when an attempt ends.

    ``status`` is final, or SCHEDULED for a retry ``retry_in_s`` from now.
    """

    status: JobStatus
    result_json: str | None = None
    error: ErrorInfo | None = None
    retry_in_s: float = 0.0


@attrs.frozen
class Completion:
    """One outcome of :meth:`Engine.complete_many`: the arguments :meth:`Engine.complete` takes."""

    lease: Lease
    outcome: Outcome
    ttl_s: float


def recorded_as(status: str, outcome: Outcome) -> Recorded:
    """The answer to an attempt's completion that left the job with ``status`` (also when it
    was sent again, by a client retrying after a dropped connection): a retry that ended
    the job cancelled is told so."""
    if outcome.status is JobStatus.SCHEDULED and status == JobStatus.CANCELLED.value:
        return Recorded.CANCELLED
    return Recorded.STORED


@attrs.frozen
class QueueStats:
    """The jobs of one plugin's queue, by state, and the live workers serving it.

    ``succeeded``, ``failed`` and ``dead`` count the jobs that ended so in the
    last hour; ``throughput`` is the jobs finished (any final status) per
    second over the last five minutes. :meth:`dtq_core.Queue.stats` fills them
    (and ``workers``) from :meth:`Engine.history` and the worker registry.
    """

    plugin: str
    waiting: int = 0
    scheduled: int = 0
    running: int = 0
    workers: int = 0
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    throughput: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``dtq stats --json`` shape of one queue."""
        return {**attrs.asdict(self), "served": self.workers > 0}


class EventType(str, enum.Enum):
    """What happened to a job, as :class:`Event` records it."""

    #: Appended and queued at once.
    APPENDED = "appended"
    #: Appended with a delay or an ETA (``delay_ms`` until due).
    SCHEDULED = "scheduled"
    #: Taken and leased by ``worker``; ``attempt`` is this delivery's number.
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: An attempt failed and the job waits ``delay_ms`` before the next one.
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"
    #: The job was running: its worker is asked to stop it.
    CANCEL_REQUESTED = "cancel_requested"
    #: Back in its queue: a final job requeued, or a released or lost lease put back.
    REQUEUED = "requeued"
    #: The worker holding the job died or stopped renewing its lease.
    LEASE_LOST = "lease_lost"

    def __str__(self) -> str:
        return self.value


#: Event messages are cut to this many characters: events say what happened,
#: the job's record keeps the whole error and its traceback.
EVENT_MESSAGE_CHARS = 200


@attrs.frozen
class Event:
    """One state change of one job, recorded by the engine in the same atomic step.

    ``id`` is opaque: it orders the events of a namespace, and
    ``Engine.events(after=id)`` returns those recorded after it. ``time_ms``
    comes from the engine's clock. ``attempt`` is the job's delivery count at
    the time (0 before its first start), ``worker`` the worker that holds or
    last held it, when known. Failures carry the error's type and the start of
    its message; ``delay_ms`` is the wait of a ``scheduled`` or ``retrying`` job.
    """

    id: str
    time_ms: int
    type: EventType
    job_id: str
    plugin: str
    attempt: int = 0
    worker: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    delay_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (``dtq events --json``): every field, the type as its name."""
        return {**attrs.asdict(self), "type": self.type.value}


def short_message(message: str) -> str:
    """An error message as events keep it: at most :data:`EVENT_MESSAGE_CHARS` characters."""
    if len(message) <= EVENT_MESSAGE_CHARS:
        return message
    return message[: EVENT_MESSAGE_CHARS - 3] + "..."


_COUNTER_ID = re.compile(r"[0-9]{1,19}")


def counter_event_id(seq: int) -> str:
    """The event id of the ``seq``-th event, for engines that number events.

    Zero-padded, so ids compare as strings exactly as their numbers do.
    """
    return f"{seq:016d}"


def counter_event_seq(event_id: str | None) -> int:
    """The number in an id made by :func:`counter_event_id` (0 for None: before every event).

    Raises:
        ValueError: ``event_id`` is not such an id.
    """
    if event_id is None:
        return 0
    if not _COUNTER_ID.fullmatch(event_id):
        raise ValueError(f"{event_id!r} is not an event id of this engine")
    return int(event_id)


#: Outcomes counted per minute by :meth:`Engine.history` (a retry is counted as it is scheduled).
COUNTED = ("succeeded", "failed", "dead", "cancelled", "retrying")
#: The outcomes that end a job, for throughput.
FINISHED = ("succeeded", "failed", "dead", "cancelled")
#: How long per-minute counts are kept (seconds): about two hours.
HISTORY_S = 7200
MINUTE_MS = 60_000


@attrs.frozen
class MinuteCounts:
    """The outcomes counted in one minute, per plugin: ``counts[plugin][status]``.

    ``start`` is the minute's first instant (aware UTC). Statuses are those of
    :data:`COUNTED`; a plugin or status with nothing counted is absent.
    """

    start: datetime
    counts: dict[str, dict[str, int]] = attrs.field(factory=dict)

    def count(self, plugin: str, status: str) -> int:
        """How many jobs of ``plugin`` ended with (or were retried for) ``status`` this minute."""
        return self.counts.get(plugin, {}).get(status, 0)


def history_minutes(
    minutes: int, now_ms: int, counts: Mapping[int, dict[str, dict[str, int]]]
) -> list[MinuteCounts]:
    """The last ``minutes`` minutes up to the one holding ``now_ms``, oldest first, empty ones included.

    ``counts`` maps an epoch minute (ms // 60000) to its counts.
    """
    current = now_ms // MINUTE_MS
    return [
        MinuteCounts(datetime.fromtimestamp(m * 60, timezone.utc), counts.get(m, {}))
        for m in range(current - minutes + 1, current + 1)
    ]


def with_outcomes(queue: QueueStats, history: Sequence[MinuteCounts], now_s: float) -> QueueStats:
    """``queue`` with its outcomes of the last hour and its throughput over the last five minutes.

    ``history`` is :meth:`Engine.history` (60 minutes, the current one last);
    throughput divides the jobs finished in the last five minutes (the current
    one included) by the time since the first of them began.
    """
    hour = history[-60:]
    totals = {status: sum(m.count(queue.plugin, status) for m in hour) for status in FINISHED}
    recent = history[-5:]
    finished = sum(m.count(queue.plugin, status) for m in recent for status in FINISHED)
    span_s = now_s - recent[0].start.timestamp() if recent else 0.0
    return attrs.evolve(
        queue,
        succeeded=totals["succeeded"],
        failed=totals["failed"],
        dead=totals["dead"],
        throughput=finished / span_s if span_s > 0 else 0.0,
    )


@attrs.frozen
class Stats:
    """A namespace at a glance: its queues, and how many jobs are dead or failed."""

    queues: list[QueueStats]
    dead: int = 0
    failed: int = 0

    def unserved(self) -> list[str]:
        """Plugins with waiting, scheduled or running jobs that no live worker serves."""
        return [q.plugin for q in self.queues if q.workers == 0 and (q.waiting or q.scheduled or q.running)]

    def to_dict(self) -> dict[str, Any]:
        """The ``dtq stats --json`` shape: every queue, the dead and failed totals, the unserved queues."""
        return {
            "queues": [q.to_dict() for q in self.queues],
            "dead": self.dead,
            "failed": self.failed,
            "unserved": self.unserved(),
        }


#: The statuses :meth:`Engine.browse` lists: those of jobs still in a queue.
BROWSABLE = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RUNNING)


def check_browsable(status: JobStatus, offset: int, limit: int) -> None:
    """Raise ValueError unless :meth:`Engine.browse` can list this page of jobs with ``status``."""
    if status not in BROWSABLE:
        names = ", ".join(s.value for s in BROWSABLE)
        raise ValueError(f"only {names} jobs can be browsed, not {status.value}")
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must not be negative, got offset={offset}, limit={limit}")


class Engine(abc.ABC):
    """Storage for one namespace of jobs.

    Every method that changes a job does so atomically: a process killed at any
    instant leaves each job either before or after the change, never between.
    Times (leases, due times, timestamps) come from the engine's own clock so
    that workers with skewed clocks agree. ``ttl_s`` arguments are how long a
    final record is kept.
    """

    #: Whether an engine opened from the same URL and options in another process works on the
    #: same jobs (a server's: yes; one in the process's memory: no). A process-mode worker whose
    #: engine was chosen by its URL then lets its job processes record their successes.
    shared_by_processes: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, **options: Any) -> Engine:
        """Create the engine for ``url``; ``options`` are engine attributes to override."""

    @classmethod
    def check_options(cls, url: str, options: Mapping[str, Any]) -> None:
        """Refuse engine options ``from_url`` would refuse, without connecting (``dtq config``).

        The default takes any; an engine with options overrides it (see
        :func:`check_engine_options`) and calls it from ``from_url``.

        Raises:
            EngineError: an option is unknown or out of its range.
        """
        return None  # an engine that takes no options need not say so

    # --- producers ---------------------------------------------------------

    @abc.abstractmethod
    def append(
        self, job: Job, payload: str, *, delay_s: float = 0.0, eta: datetime | None = None
    ) -> AppendOutcome:
        """Queue ``job`` (or schedule it, with a delay or ETA) unless its id exists.

        ``payload`` is its canonical JSON; the job's options go with it.
        """

    def append_entry(self, entry: Appending) -> AppendOutcome:
        """:meth:`append` of one entry (which says whether its id is fresh); engines may override it."""
        return self.append(entry.job, entry.payload, delay_s=entry.delay_s, eta=entry.eta)

    def append_many(self, entries: Sequence[Appending]) -> list[AppendOutcome]:
        """Append each entry as :meth:`append` does, one outcome per entry, in order.

        Each append is atomic on its own, not the batch: a crash part-way leaves
        a prefix appended, and repeating the call is safe (repeats are
        ``EXISTS``). Engines override this to save round trips.
        """
        return [self.append(e.job, e.payload, delay_s=e.delay_s, eta=e.eta) for e in entries]

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job's current record, or None if unknown or expired."""

    @abc.abstractmethod
    def wait_for_final(self, job_id: str, timeout_s: float) -> Job | None:
        """Read the job, then block until it is final or ``timeout_s`` passes; return its record then.

        None when there is no such job. With ``timeout_s`` 0 it reads once and
        returns: :meth:`Queue.result` relies on that first read, and makes no
        read of its own.
        """

    @abc.abstractmethod
    def cancel(self, job: Job, *, ttl_s: float) -> CancelOutcome:
        """Cancel a queued or scheduled job, or ask a running one to stop."""

    # --- workers -----------------------------------------------------------

    @abc.abstractmethod
    def fetch(self, plugins: Sequence[str], *, count: int, lease_s: float, worker_id: str) -> Batch:
        """Promote due delayed jobs, then take up to ``count`` queued jobs and lease them."""

    @abc.abstractmethod
    def wait_for_jobs(self, plugins: Sequence[str], timeout_s: float) -> None:
        """Block until a job of ``plugins`` may have been queued, or ``timeout_s`` passes."""

    def wait_and_fetch(
        self, plugins: Sequence[str], timeout_s: float, *, count: int, lease_s: float, worker_id: str
    ) -> Batch:
        """:meth:`wait_for_jobs`, then :meth:`fetch`: an idle worker's "wake me with work".

        Engines override this to do both in one round trip.
        """
        self.wait_for_jobs(plugins, timeout_s)
        return self.fetch(plugins, count=count, lease_s=lease_s, worker_id=worker_id)

    def wake(self, worker_id: str) -> None:
        """End the wait of a :meth:`wait_and_fetch` called with ``worker_id``, if one is under way.

        A worker asked to stop calls it from a thread of its own, so that an
        idle worker stops at once rather than when its wait times out. The
        default does nothing: the wait then ends at its timeout (``poll_s`` at
        most). Called from another thread than the waiting one.
        """
        return None

    @abc.abstractmethod
    def complete(self, lease: Lease, outcome: Outcome, *, ttl_s: float) -> Recorded:
        """Record an attempt's outcome if ``lease`` still holds; REFUSED (nothing written) otherwise.

        A retry of a job whose cancel was asked for during the attempt ends the
        job cancelled instead (CANCELLED), as the caller asked.
        """

    def complete_and_fetch(
        self,
        completions: Sequence[Completion],
        plugins: Sequence[str],
        *,
        count: int,
        lease_s: float,
        worker_id: str,
        wait_s: float = 0.0,
    ) -> tuple[list[Recorded], Batch]:
        """:meth:`complete_many`, then :meth:`fetch`: a worker's "done with these, what next".

        The completions are recorded before the fetch runs. With ``wait_s`` (a
        worker that found the queue drained), :meth:`wait_for_jobs` waits up to
        that long between them. Engines override this to do it all in one round trip.
        """
        stored = self.complete_many(completions) if completions else []
        if wait_s > 0:
            self.wait_for_jobs(plugins, wait_s)
        return stored, self.fetch(plugins, count=count, lease_s=lease_s, worker_id=worker_id)

    def complete_many(self, completions: Sequence[Completion]) -> list[Recorded]:
        """Record several outcomes as :meth:`complete` does, one answer per completion, in order.

        Each completion is atomic on its own, not the batch. Engines override
        this to save round trips.
        """
        return [self.complete(c.lease, c.outcome, ttl_s=c.ttl_s) for c in completions]

    @abc.abstractmethod
    def renew(self, leases: Sequence[Lease], lease_s: float) -> Renewal:
        """Extend ``leases`` by ``lease_s``; report the lost ones and those asked to cancel."""

    @abc.abstractmethod
    def progress(self, lease: Lease, progress: float | None, message: str | None) -> tuple[bool, bool]:
        """Record a running job's progress; return (lease held, cancellation requested)."""

    @abc.abstractmethod
    def release(self, lease: Lease, *, lost: bool, max_lost_leases: int, ttl_s: float) -> ReleaseOutcome:
        """Give a held job back to its queue; ``lost`` counts it as a lost lease (its process died)."""

    def hand_back(self, lease: Lease, *, max_lost_leases: int, ttl_s: float) -> ReleaseOutcome:
        """Give back a held job that never started (prefetched, then the worker stopped).

        Its delivery should not count as an attempt, so that a job handed back at
        every shutdown keeps its retries; the next delivery's token must still
        differ from this one's. This default counts it (``release`` with
        ``lost=False``): the built-in engines override it.
        """
        return self.release(lease, lost=False, max_lost_leases=max_lost_leases, ttl_s=ttl_s)

    @abc.abstractmethod
    def recover(self, plugin: str, *, max_lost_leases: int, ttl_s: float, limit: int = 100) -> int:
        """Requeue (or bury as dead) jobs of ``plugin`` whose lease expired; return how many."""

    @abc.abstractmethod
    def heartbeat(self, worker_id: str, info: Mapping[str, str], ttl_s: float) -> None:
        """Register a live worker (or refresh it) for ``ttl_s`` seconds."""

    @abc.abstractmethod
    def unregister(self, worker_id: str) -> None:
        """Remove a worker's registration (it is stopping)."""

    @abc.abstractmethod
    def workers(self) -> list[dict[str, str]]:
        """The live workers' descriptions (with ``id`` and ``last_seen`` in ms)."""

    @abc.abstractmethod
    def stats(self) -> Stats:
        """Counts of each plugin's queue (waiting, scheduled, running) and of dead and failed jobs.

        ``workers`` is left at 0: :meth:`dtq_core.Queue.stats` fills it from the registry.
        """

    # --- final jobs --------------------------------------------------------

    @abc.abstractmethod
    def final_ids(self, status: JobStatus, *, limit: int = 100, offset: int = 0) -> list[str]:
        """Ids of dead (or failed) jobs, newest first."""

    @abc.abstractmethod
    def requeue(self, job: Job) -> bool:
        """Queue a final job again for a fresh set of attempts; False if its record is gone."""

    @abc.abstractmethod
    def purge(self, status: JobStatus) -> int:
        """Delete every dead (or failed) job's record; return how many (none already expired).

        Raises:
            ValueError: ``status`` is neither dead nor failed (see :func:`check_indexed`).
        """

    def delete(self, job_id: str) -> bool:
        """Delete one final job's record (succeeded, failed, dead or cancelled) and its attempt errors.

        Returns False, deleting nothing, when the job is not final (or is gone).

        Raises:
            NotSupported: the engine does not implement it (this default).
        """
        raise NotSupported(
            f"the {type(self).__name__} engine cannot delete one job: it does not implement Engine.delete"
        )

    # --- browsing ------------------------------------------------------------

    def browse(self, status: JobStatus, plugin: str, *, offset: int = 0, limit: int = 50) -> list[Job]:
        """A page of the live jobs of ``plugin``'s queue with ``status`` (queued, scheduled or running).

        Queued jobs come in the order workers take them (priority, then
        arrival), scheduled ones by due time and running ones by lease
        deadline, soonest first. A job that moves on while the page is read
        may be left out of it.

        Raises:
            ValueError: ``status`` is not one of :data:`BROWSABLE`, or ``offset``
                or ``limit`` is negative.
            NotSupported: the engine does not implement it (this default).
        """
        raise NotSupported(
            f"the {type(self).__name__} engine cannot list {status.value} jobs: "
            "it does not implement Engine.browse"
        )

    # --- events and history ----------------------------------------------

    @abc.abstractmethod
    def events(self, *, after: str | None = None, limit: int = 100, block_s: float = 0.0) -> list[Event]:
        """Up to ``limit`` recorded events after the one with id ``after``, oldest first.

        ``after=None`` starts at the oldest event kept. When there are none yet,
        wait up to ``block_s`` seconds for one. The engine keeps about its
        ``events_max`` newest events (0: it records none; Redis counts stream
        entries, and one holds up to 100 events of a bulk append); an ``after``
        older than the oldest kept starts there.

        Raises:
            ValueError: ``after`` is not an event id of this engine.
        """

    @abc.abstractmethod
    def last_event_id(self) -> str | None:
        """The id of the newest event kept, or None: where a follower starts to see only new ones."""

    @abc.abstractmethod
    def history(self, minutes: int = 60) -> list[MinuteCounts]:
        """Outcomes per minute and plugin for the last ``minutes`` minutes (at most two hours kept).

        Oldest first, one entry per minute up to the current one, empty minutes
        included; each final outcome and each retry counts once, in the minute
        it was recorded.
        """

    # --- plumbing ----------------------------------------------------------

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise :class:`~dtq_core.errors.EngineUnavailable` unless the storage answers."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""


#: Recorded for each delivery whose worker (or job process) died.
LOST_LEASE = ErrorInfo(
    type="LeaseLost",
    message="the worker running this job stopped renewing its lease (killed, out of memory, or hung)",
)


def delivery_token(worker_id: str, state: dict[str, Any]) -> str:
    """A leased job's fencing token: unique per delivery of its id, as fetch.lua makes it.

    The arrival number (``seq``) is new for each append and requeue, which
    both start the attempts at 0 again: without it, a worker that leased an id,
    lost the lease, and leased the id again after a requeue (or a re-append once
    the first job's record expired) would hold its stale token again, and the
    stale attempt's outcome would be taken. Deliveries handed back unstarted
    (:func:`uncount_attempt`) share attempt numbers with the next, so their
    count is part of the token too.
    """
    token = f"{worker_id}/{int(state.get('seq', 0))}/{state['attempts']}"
    returned = int(state.get("returned", 0))
    return f"{token}.{returned}" if returned else token


def uncount_attempt(state: dict[str, Any]) -> None:
    """Take back the attempt a delivery counted, when it is handed back unstarted (as release.lua)."""
    state["attempts"] = max(0, int(state.get("attempts", 1)) - 1)
    state["returned"] = int(state.get("returned", 0)) + 1
    if state["attempts"] == 0:
        state.pop("started", None)


def dead_after_lost_leases(max_lost: int) -> ErrorInfo:
    """The reason recorded on a job that lost its lease ``max_lost`` times."""
    return ErrorInfo(
        type="LeaseLost",
        message=(
            f"the job lost its lease {max_lost} times: each worker that took it died or hung, "
            "so it is dead instead of taking more workers down; inspect it before requeueing"
        ),
    )


def open_engine(url: str, **options: Any) -> Engine:
    """The engine registered in ``dtq.engines`` for ``url``'s scheme, created from ``url``.

    Raises:
        UnknownEngine: no engine is registered for the scheme.
    """
    return engine_class(url).from_url(url, **options)


def engine_class(url: str) -> type[Engine]:
    """The engine class registered in ``dtq.engines`` for ``url``'s scheme.

    Raises:
        UnknownEngine: no engine is registered for the scheme.
    """
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError as exc:  # an unclosed IPv6 bracket, say
        raise UnknownEngine(f"engine URL {mask_url(url)!r} is malformed: {exc}") from exc
    if not scheme:
        raise UnknownEngine(
            f"engine URL {mask_url(url)!r} has no scheme; expected e.g. redis://localhost:6379/0"
        )
    try:
        cls = load_entry_point(ENGINE_GROUP, scheme)
    except UnknownPlugin as exc:
        raise UnknownEngine(f"{exc}; check the URL's scheme or install the engine's distribution") from exc
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise UnknownEngine(f"engine {scheme!r} does not derive from dtq_core.Engine")
    return cls


def resolve_engine(engine: Engine | type[Engine] | None, url: str | None, **options: Any) -> Engine:
    """The engine a queue or worker uses.

    ``engine`` may be a ready instance (used as is), an :class:`Engine` subclass
    (created with ``from_url``), or None (chosen by the URL's scheme). The URL
    defaults to ``$DTQ_URL``, then ``redis://localhost:6379/0``.
    """
    if isinstance(engine, Engine):
        return engine
    resolved_url = url_from_env(url)
    if engine is not None:
        return engine.from_url(resolved_url, **options)
    return open_engine(resolved_url, **options)
