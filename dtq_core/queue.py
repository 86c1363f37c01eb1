"""The producer side: append jobs, read them back, wait for results."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import attrs

from dtq_core.config import Settings
from dtq_core.engine import (
    Appending,
    AppendOutcome,
    CancelOutcome,
    Engine,
    Event,
    MinuteCounts,
    Stats,
    resolve_engine,
    with_outcomes,
)
from dtq_core.errors import (
    DtqError,
    DuplicateJob,
    InvalidJob,
    JobFailed,
    JobNotFound,
    MalformedRecord,
    PayloadTooLarge,
    ResultTimeout,
)
from dtq_core.job import (
    Job,
    JobStatus,
    checked_schedule,
    encode_payload,
    job_like,
    job_payload,
    new_job_ids,
    normalise_id,
    optional_seconds,
    parse_job_payload,
    schedule_of,
)
from dtq_core.plugin import PluginRegistry
from dtq_core.record import MALFORMED

#: How long one wait for a result may block before checking again (seconds).
_WAIT_SLICE_S = 30.0
#: Ids generated at once for enqueue_many (one read of randomness).
_IDS_AT_ONCE = 512
#: Events read per round trip by kept_events.
_EVENTS_PAGE = 1000

log = logging.getLogger("dtq.queue")


class Queue:
    """Appends jobs for workers anywhere and reads their outcome.

    Args:
        plugins: the allow-list. A job naming any other plugin is refused. A name
            on the list need not be installed here: the job is then queued
            without local validation, for workers that have the plugin. ``None``
            takes the ``plugins`` setting (``DTQ_PLUGINS``, the config file), and
            without one allows every plugin installed here (and only those).
        url: engine URL (``redis://localhost:6379/0`` by default).
        engine: an :class:`~dtq_core.Engine` instance or subclass to use instead
            of the one the URL's scheme names.
        settings: resolved :class:`~dtq_core.Settings`; by default
            ``Settings.load()`` (``DTQ_*`` variables, then the config file).
            The other arguments, when given, take precedence over it.
        namespace: scopes job ids and queues; workers must use the same one
            (``default`` by default).
        prefix: first part of every storage key.
        max_payload_bytes: largest encoded job accepted.
        failure_ttl_s: how long a cancelled job's record is kept.
        engine_options: further engine attributes to override.
        plugin_config: settings per plugin name, given to each plugin's
            ``configure`` at load (never logged).

    Raises:
        ConfigError: a setting (argument, variable or file) is malformed.
    """

    def __init__(
        self,
        plugins: Iterable[str] | None = None,
        url: str | None = None,
        *,
        engine: Engine | type[Engine] | None = None,
        settings: Settings | None = None,
        namespace: str | None = None,
        prefix: str | None = None,
        max_payload_bytes: int | None = None,
        failure_ttl_s: float | None = None,
        engine_options: Mapping[str, Any] | None = None,
        plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.settings = s = (settings or Settings.load()).replace(
            plugins=plugins,
            url=url,
            namespace=namespace,
            prefix=prefix,
            max_payload_bytes=max_payload_bytes,
            failure_ttl_s=failure_ttl_s,
            engine=engine_options,
            plugin=plugin_config,
        )
        self.registry = PluginRegistry(s.plugins, config=s.plugin)
        self.engine = resolve_engine(engine, s.url, prefix=s.prefix, namespace=s.namespace, **s.engine)
        self.max_payload_bytes = s.max_payload_bytes
        self.failure_ttl_s = s.failure_ttl_s

    def append(self, job: Mapping[str, Any]) -> Job:
        """Queue a job given in the wire format ``{"id", "job": {"plugin", "data"}}``.

        An optional ``"options"`` dict holds ``priority``, ``max_retries``,
        ``retry_backoff_s``, ``timeout_s``, ``delay_s`` and ``eta`` (see
        :meth:`enqueue`).

        Appending an id that already exists never creates a second job: with the
        same plugin and data it returns the existing job as it is now (so a retried
        append is safe); with different ones it raises :class:`DuplicateJob`.

        Raises:
            InvalidJob: the dict is malformed or the data is not JSON.
            ValidationError: the plugin's ``validate`` refused the job.
            PayloadTooLarge: the encoded job exceeds ``max_payload_bytes``.
            PluginNotAllowed, UnknownPlugin, PluginLoadError, DuplicatePlugin:
                the plugin cannot be used.
            DuplicateJob: the id exists with different contents.
            EngineUnavailable: the engine cannot be reached.
        """
        parsed, payload = parse_job_payload(job)
        options = job.get("options") or {}
        delay_s, eta = schedule_of(options)
        return self._append(parsed, payload, delay_s, eta, fresh=job.get("id") is None)

    def enqueue(
        self,
        plugin: str,
        data: Mapping[str, Any],
        *,
        id: str | int | None = None,  # noqa: A002 - the wire format's own name
        priority: int = 0,
        delay_s: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
        retry_backoff_s: float | None = None,
        timeout_s: float | None = None,
    ) -> Job:
        """Queue a job from keyword arguments; see :meth:`append` for behaviour and errors.

        Args:
            priority: an integer in [-4095, 4095]; higher runs first, first in
                first out among equals.
            delay_s: run no sooner than this many seconds from now.
            eta: run no sooner than this aware datetime (wins over ``delay_s``).
            max_retries, retry_backoff_s, timeout_s: override the plugin's.
        """
        # As append() would check {"id", "job", "options"}, without building that dict.
        options = _given(
            priority=priority, max_retries=max_retries, retry_backoff_s=retry_backoff_s, timeout_s=timeout_s
        )
        job, payload = job_payload(plugin, data, id, options)
        return self._append(job, payload, *checked_schedule(delay_s, eta), fresh=id is None)

    def append_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Queue many jobs given in the wire format, in few round trips; return them in order.

        Every job is checked as :meth:`append` checks it before any is
        appended, so a bad one appends nothing. Each job is then appended
        atomically on its own (not the batch as a whole); repeating the call is
        safe, since a repeated id with the same contents is not queued twice.

        Raises:
            InvalidJob, ValidationError, PayloadTooLarge, PluginNotAllowed,
                UnknownPlugin: a job is bad; the message gives its position.
            DuplicateJob: ids that exist with other contents (the rest were appended).
            EngineUnavailable: the engine cannot be reached.
        """
        with _collector_paused():
            return self._append_all([self._checked(position, raw) for position, raw in enumerate(jobs)])

    def _append_all(self, entries: list[Appending]) -> list[Job]:
        """:meth:`append_many` once its jobs are checked."""
        outcomes = self.engine.append_many(entries)
        if AppendOutcome.CONFLICT in outcomes:
            conflicts = [
                e.job.id for e, o in zip(entries, outcomes, strict=True) if o is AppendOutcome.CONFLICT
            ]
            raise DuplicateJob(
                f"{len(conflicts)} job id(s) already exist with a different plugin or data "
                f"({', '.join(map(repr, conflicts[:5]))}); the other jobs were appended",
                job_id=conflicts[0],
            )
        if outcomes.count(AppendOutcome.CREATED) == len(entries) and not any(
            e.delay_s or e.eta for e in entries
        ):
            return [entry.job for entry in entries]  # each queued as it was given: the usual case
        return [
            self._appended(entry.job, outcome, bool(entry.delay_s or entry.eta))
            for entry, outcome in zip(entries, outcomes, strict=True)
        ]

    def enqueue_many(
        self,
        plugin: str,
        datas: Iterable[Mapping[str, Any]],
        *,
        priority: int = 0,
        delay_s: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
        retry_backoff_s: float | None = None,
        timeout_s: float | None = None,
    ) -> list[Job]:
        """Queue one job of ``plugin`` per data dict, with generated ids; see :meth:`append_many`."""
        chosen = _given(
            priority=priority,
            delay_s=delay_s,
            eta=eta,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            timeout_s=timeout_s,
        )
        with _collector_paused():
            return self._append_all(self._checked_alike(plugin, chosen, datas))

    def get(self, job_id: str | int) -> Job | None:
        """The job's current record, or None if no such job exists (or it expired)."""
        return self.engine.get(normalise_id(job_id))

    def result(self, job_id: str | int, timeout: float | None = None) -> Any:
        """Wait until the job is final and return its result.

        Blocks on a notification from the engine rather than polling.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes.

        Raises:
            JobNotFound: no such job.
            JobFailed: the job failed or is dead (``exc.job`` has the error).
            ResultTimeout: it did not finish in time.
        """
        key = normalise_id(job_id)
        if timeout != math.inf:  # inf: as long as it takes, as None
            timeout = optional_seconds("timeout", timeout)  # a NaN one waited forever
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            # Every engine's wait reads the job first: no read of its own before it.
            job = self.engine.wait_for_final(key, _slice(deadline))
            if job is None or job.status.is_final or time.monotonic() >= deadline:
                break
        if job is None:
            raise JobNotFound(f"no job with id {key!r} (never appended, or its record expired)")
        if job.status is JobStatus.SUCCEEDED:
            return job.result
        if job.status.is_final:
            raise JobFailed(_failure_message(job), job=job)
        raise ResultTimeout(f"job {key!r} is still {job.status.value} after {timeout} s")

    def cancel(self, job_id: str | int) -> CancelOutcome:
        """Cancel a job.

        A queued or scheduled job is cancelled at once and never runs. A running
        job is asked to stop: in process mode its worker stops it; in thread mode
        the plugin sees ``caller.cancelled``. It ends ``cancelled``.

        Raises:
            JobNotFound: no such job.
        """
        job = self._existing(job_id)
        outcome = self.engine.cancel(job, ttl_s=self.failure_ttl_s)
        if outcome is CancelOutcome.NOT_FOUND:
            raise JobNotFound(f"no job with id {job.id!r} (it expired meanwhile)")
        return outcome

    def dead(self, *, limit: int = 100, offset: int = 0) -> list[Job]:
        """Dead jobs (the dead letters), newest first."""
        return self._final(JobStatus.DEAD, limit, offset)

    def failed(self, *, limit: int = 100, offset: int = 0) -> list[Job]:
        """Failed jobs, newest first."""
        return self._final(JobStatus.FAILED, limit, offset)

    def requeue(self, job_id: str | int, *, only: JobStatus | None = None) -> Job:
        """Queue a dead, failed or cancelled job again for a fresh set of attempts.

        Args:
            only: requeue the job only if it has this status (``dtq dead requeue``: dead).

        Raises:
            JobNotFound: no such job, it is not final, or not ``only``.
            InvalidJob: the job was buried because its stored record was malformed:
                there is no data to run again.
        """
        job = self._existing(job_id)
        if not job.status.is_final or job.status is JobStatus.SUCCEEDED:
            raise JobNotFound(
                f"job {job.id!r} is {job.status.value}; only dead, failed or cancelled jobs requeue"
            )
        if only is not None and job.status is not only:
            raise JobNotFound(
                f"job {job.id!r} is {job.status.value}, not {only.value}; requeue it with "
                "`dtq retry` (Queue.requeue) if it should run again"
            )
        if job.error is not None and job.error.type == MALFORMED:
            raise InvalidJob(
                f"job {job.id!r} cannot run again: it was buried because its stored record was "
                f"malformed ({job.error.message}), so dtq has no data for it; append a new job instead"
            )
        if not self.engine.requeue(job):
            raise JobNotFound(f"job {job.id!r} was requeued or expired meanwhile")
        return self.engine.get(job.id) or job

    def purge(self, status: JobStatus = JobStatus.DEAD) -> int:
        """Delete every dead (or failed) job; return how many were deleted."""
        return self.engine.purge(status)

    def requeue_all(self, status: JobStatus = JobStatus.DEAD) -> tuple[list[str], dict[str, str]]:
        """Requeue every dead (or failed) job kept, newest first.

        Returns the ids requeued, and why each of the others was skipped (a
        buried malformed record has no data to run; a job may expire or be
        requeued by someone else meanwhile).
        """
        requeued: list[str] = []
        skipped: dict[str, str] = {}
        for job_id in self.engine.final_ids(status, limit=10_000):
            try:
                self.requeue(job_id, only=status)
                requeued.append(job_id)
            except (InvalidJob, JobNotFound, MalformedRecord) as exc:  # one bad record stops no others
                skipped[job_id] = str(exc)
        return requeued, skipped

    def delete(self, job_id: str | int) -> None:
        """Delete one final job's record (succeeded, failed, dead or cancelled) and its attempt errors.

        Raises:
            JobNotFound: no such job, or it is not final (cancel it first), or
                it was requeued meanwhile.
            NotSupported: the engine cannot delete one job.
        """
        try:
            job = self._existing(job_id)
        except MalformedRecord:
            # Unreadable, but an ended job's record can still go: the engine deletes final
            # records only, so a live one (which a worker buries) stays, and this is raised.
            if not self.engine.delete(normalise_id(job_id)):
                raise
            return
        if not job.status.is_final:
            raise JobNotFound(
                f"job {job.id!r} is {job.status.value}; only final jobs can be deleted (cancel it first)"
            )
        if not self.engine.delete(job.id):
            raise JobNotFound(f"job {job.id!r} was requeued or expired meanwhile")

    def browse(self, status: JobStatus, plugin: str, *, offset: int = 0, limit: int = 50) -> list[Job]:
        """A page of ``plugin``'s queued, scheduled or running jobs (see :meth:`Engine.browse`).

        Raises:
            ValueError: ``status`` is not queued, scheduled or running.
            NotSupported: the engine cannot list live jobs.
        """
        return self.engine.browse(status, plugin, offset=offset, limit=limit)

    def stats(self) -> Stats:
        """Each plugin's queue (waiting, scheduled, running, live workers serving it,
        jobs succeeded, failed and dead in the last hour, jobs finished per second
        over the last five minutes), and the numbers of dead and failed jobs kept.
        ``stats().unserved()`` names the queues with jobs that no live worker serves.
        """
        stats = self.engine.stats()
        serving: dict[str, int] = {}
        for worker in self.engine.workers():
            for plugin in filter(None, worker.get("plugins", "").split(",")):
                serving[plugin] = serving.get(plugin, 0) + 1
        history, now_s = self.engine.history(60), time.time()
        queues = [
            with_outcomes(attrs.evolve(q, workers=serving.get(q.plugin, 0)), history, now_s)
            for q in stats.queues
        ]
        return attrs.evolve(stats, queues=queues)

    def events(self, *, after: str | None = None, limit: int = 100, block_s: float = 0.0) -> list[Event]:
        """Job lifecycle events after the one with id ``after`` (see :meth:`Engine.events`)."""
        return self.engine.events(
            after=after, limit=limit, block_s=optional_seconds("block_s", block_s) or 0.0
        )

    def kept_events(
        self, wanted: Callable[[Event], bool] = lambda _event: True, *, most: int | None = None
    ) -> Iterator[Event]:
        """The kept events that are ``wanted``, oldest first, read a page at a time (at most
        ``most`` looked at): a job's events are found wherever they are in the kept stream."""
        after: str | None = None
        looked = 0
        while most is None or looked < most:
            asked = _EVENTS_PAGE if most is None else min(_EVENTS_PAGE, most - looked)
            page = self.events(after=after, limit=asked)
            looked += len(page)
            yield from filter(wanted, page)
            if len(page) < asked:
                return
            after = page[-1].id

    def last_event_id(self) -> str | None:
        """The newest event's id, to follow only events recorded from now on."""
        return self.engine.last_event_id()

    def history(self, minutes: int = 60) -> list[MinuteCounts]:
        """Outcomes per minute and plugin, oldest first (see :meth:`Engine.history`)."""
        return self.engine.history(minutes)

    def workers(self) -> list[dict[str, str]]:
        """The live workers: id, host, pid, plugins, concurrency, mode, jobs in hand, last heartbeat."""
        return self.engine.workers()

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _existing(self, job_id: str | int) -> Job:
        job = self.engine.get(normalise_id(job_id))
        if job is None:
            raise JobNotFound(f"no job with id {str(job_id)!r} (never appended, or its record expired)")
        return job

    def _final(self, status: JobStatus, limit: int, offset: int) -> list[Job]:
        jobs = (
            self._readable(job_id) for job_id in self.engine.final_ids(status, limit=limit, offset=offset)
        )
        return [job for job in jobs if job is not None and job.status is status]

    def _readable(self, job_id: str) -> Job | None:
        """The job's record, or None if it is gone or malformed (logged: the others are still listed)."""
        try:
            return self.engine.get(job_id)
        except MalformedRecord as exc:
            log.warning("%s", exc)
            return None

    def check(self, job: Job) -> str:
        """Refuse ``job`` as :meth:`append` would, without appending it; return its encoded payload.

        Raises:
            PluginNotAllowed, UnknownPlugin, ValidationError, PayloadTooLarge: as for ``append``.
        """
        return self._checked_payload(job, encode_payload(job))

    def _checked_payload(self, job: Job, payload: str) -> str:
        """:meth:`check`, given the job's payload."""
        self.registry.check_allowed(job.plugin)
        self._validate(job)
        return self._sized(job, payload)

    def _sized(self, job: Job, payload: str) -> str:
        """``payload``, unless it is too large."""
        # ASCII text (most payloads; CPython knows it without a look) is as long in UTF-8.
        size = len(payload) if payload.isascii() else len(payload.encode("utf-8"))
        if size > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"job {job.id!r} encodes to {size} bytes, over the limit of "
                f"{self.max_payload_bytes} (max_payload_bytes); keep large inputs elsewhere "
                "(a file, a database, object storage) and put their location in data"
            )
        return payload

    def _append(self, job: Job, payload: str, delay_s: float, eta: datetime | None, *, fresh: bool) -> Job:
        """Append a job checked as :meth:`append` checks it; ``fresh``: its id was made for it."""
        entry = Appending(job, self._checked_payload(job, payload), delay_s, eta, fresh)
        outcome = self.engine.append_entry(entry)
        if outcome is AppendOutcome.CONFLICT:
            raise DuplicateJob(
                f"a job with id {job.id!r} already exists with a different plugin or data; "
                "use another id, or omit it to get a generated one",
                job_id=job.id,
            )
        return self._appended(job, outcome, bool(delay_s or eta))

    def _appended(self, job: Job, outcome: AppendOutcome, scheduled: bool) -> Job:
        """The job as an append left it: as stored already, scheduled, or queued."""
        if outcome is AppendOutcome.EXISTS:
            return self.engine.get(job.id) or job
        return attrs.evolve(job, status=JobStatus.SCHEDULED) if scheduled else job

    def _checked(self, position: int, raw: Mapping[str, Any]) -> Appending:
        """One job of :meth:`append_many`, parsed and checked; errors name its position."""
        try:
            job, payload = parse_job_payload(raw)
            delay_s, eta = schedule_of(raw.get("options") or {})
            return Appending(
                job, self._checked_payload(job, payload), delay_s, eta, fresh=raw.get("id") is None
            )
        except DtqError as exc:
            _name_position(exc, position)
            raise

    def _checked_alike(
        self, plugin: str, options: Mapping[str, Any], datas: Iterable[Mapping[str, Any]]
    ) -> list[Appending]:
        """:meth:`enqueue_many`'s jobs, checked as :meth:`append_many` checks each one.

        The first is checked in full. The others share its plugin, options and
        schedule, so they passed those checks already: only their data, the
        plugin's ``validate`` and their size are left to check.
        """
        entries: list[Appending] = []
        ids: list[str] = []
        validate: Callable[[Job], None] = _accept
        for position, data in enumerate(datas):
            if not entries:
                raw = {"job": {"plugin": plugin, "data": data}, "options": options}
                entries.append(first := self._checked(position, raw))
                validate = self._validator(plugin)
                continue
            try:
                ids = ids or new_job_ids(_IDS_AT_ONCE)
                job, payload = job_like(first.job, data, ids.pop())
                validate(job)
                entries.append(
                    Appending(job, self._sized(job, payload), first.delay_s, first.eta, fresh=True)
                )
            except DtqError as exc:
                _name_position(exc, position)
                raise
        return entries

    def _validate(self, job: Job) -> None:
        self._validator(job.plugin)(job)

    def _validator(self, plugin: str) -> Callable[[Job], None]:
        """What checks a job of ``plugin`` when it is appended."""
        # A name on the allow-list that is not installed here is queued as is:
        # the workers that have the plugin validate nothing more, by design.
        if self.registry.allow is not None and not self.registry.is_installed(plugin):
            return _accept
        return self.registry.get(plugin).validate


def _accept(job: Job) -> None:
    """The check of a plugin that is allowed but not installed here: none."""


def _name_position(exc: DtqError, position: int) -> None:
    """Make ``exc``'s message say which job of the batch it is about (its type and attributes stay)."""
    exc.args = (f"job {position} of the batch: {exc}", *exc.args[1:])


def _given(**options: Any) -> dict[str, Any]:
    """The job options a caller gave: those not None."""
    return {key: value for key, value in options.items() if value is not None}


def _failure_message(job: Job) -> str:
    reason = "no error recorded" if job.error is None else f"{job.error.type}: {job.error.message}"
    return f"job {job.id!r} ({job.plugin}) ended {job.status.value} after {job.attempts} attempt(s): {reason}"


def _slice(deadline: float) -> float:
    """The next wait's length: what is left of the time, at most one slice, never negative."""
    return max(0.0, min(_WAIT_SLICE_S, deadline - time.monotonic()))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while a bulk call builds and appends its jobs.

    Each job leaves three objects the collector tracks (its Job, the Job's
    dict, its entry), none in a cycle: reference counting frees what goes. Left
    on, the collector runs every 700 of them, and a full collection of a large
    application's heap (40 ms in the benchmark's process) lands in about every
    other call of 10,000 jobs: 59,000-82,000 jobs/s pooled against
    105,000-110,000 with it paused (measured, the benchmark's imports loaded).
    Restored as it was, also when the call fails; one still running in another
    thread is not stopped.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
