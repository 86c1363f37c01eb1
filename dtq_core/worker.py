"""The consumer side: take jobs, hand each to its plugin, record the outcome.

A worker only takes jobs from the queues of plugins it has installed and
allows. Every job it takes is leased, not removed; a heartbeat thread renews the
leases of the jobs in hand (and registers the worker), so a long job is never
given to a second worker while its worker lives, and a dead worker's jobs come
back once their lease runs out (any live worker requeues them).

One dispatcher thread fetches jobs while a slot is idle; ``concurrency`` slot
threads each run one job at a time, in a child process (``mode="process"``, the
default) or in the slot thread itself (``mode="thread"``). A busy slot leases
its next ``prefetch`` jobs itself, so a stream of short jobs costs one fetch
per ``prefetch`` jobs: while it runs a full share, in the background (its
jobs never wait for the round trip); otherwise when it runs out, in the round
trip that records its last outcome. An acknowledger thread records
outcomes in batches (whatever ended while its previous round trip was out), so
no slot waits for Redis to store a result. Until an outcome is stored the job
stays leased: a worker killed in between loses nothing, the job runs again.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import queue as queue_module
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any

import attrs

from dtq_core.caller import Control
from dtq_core.config import Settings, mask_url, url_from_env
from dtq_core.engine import (
    Batch,
    Completion,
    Engine,
    Lease,
    Outcome,
    Recorded,
    ReleaseOutcome,
    resolve_engine,
)
from dtq_core.errors import DtqError, EngineUnavailable, JobProcessError, NotReplicated, PluginError
from dtq_core.job import ErrorInfo, Job, JobStatus
from dtq_core.periodic import Periodic, PeriodicScheduler
from dtq_core.plugin import Plugin, PluginRegistry, scrub_settings
from dtq_core.queue import Queue
from dtq_core.retry import Attempt, Ending, RetryPolicy, decide, policy_for, timeout_for
from dtq_core.runner import (
    Ahead,
    ProcessRunner,
    Runner,
    ThreadRunner,
    bytes_over,
    recorded_success,
    unrunnable,
)

log = logging.getLogger("dtq.worker")

#: Expired leases recovered per call (a burst calls until fewer come back).
_RECOVER_BATCH = 100
#: Longest pause between attempts to reach an engine that is down (seconds).
_MAX_BACKOFF_S = 5.0
#: How long a fetch that found nothing stands for the dispatcher's own look before it
#: blocks (seconds): a job that comes later wakes the blocked wait (see _looked_just_now).
_LOOKED_FRESH_S = 0.01
#: How long a slot whose share was not full (the queue ran dry) waits for a next job, in the
#: round trip that records its last outcome, before it goes back to the dispatcher (seconds).
#: Redis ends such a wait at its next cron tick: up to 100 ms at its default hz of 10.
_REFILL_WAIT_S = 0.01
#: How long a stopping worker waits for its waker thread (s); see :class:`_Waker`.
_WAKER_JOIN_S = 1.0
MODES = ("process", "thread")


class Observer:
    """Told what a worker does, from its threads; the Prometheus exporter is one.

    Methods must return quickly and not raise. The default ones do nothing.
    """

    def attempt_ended(self, job: Job, status: JobStatus, duration_s: float | None) -> None:
        """An attempt ended with ``status``: final, SCHEDULED for a retry, or QUEUED when the
        process running it died and the job went back (``duration_s`` is None then).

        Told once the outcome is stored: for a slot whose queue ran dry, after its
        brief wait for a next job (up to 100 ms on Redis), so a producer may have
        seen the result a moment before."""

    def leases_recovered(self, plugin: str, count: int) -> None:
        """``count`` jobs of ``plugin`` whose worker stopped renewing were taken back."""


class Worker:
    """Processes jobs of the plugins it serves.

    Args:
        plugins: the plugins to serve (the allow-list). Every one must load, or
            the worker refuses to start. ``None`` takes the ``plugins`` setting
            (``DTQ_PLUGINS``, the config file), and without one serves every
            installed plugin that loads; the others are reported and their jobs
            stay queued.
        url: engine URL (``redis://localhost:6379/0`` by default).
        engine: an engine instance or subclass instead of the URL's.
        settings: resolved :class:`~dtq_core.Settings`; by default
            ``Settings.load()`` (``DTQ_*`` variables, then the config file).
            The other arguments, when given, take precedence over it.
        namespace: must match the producers' (``default`` by default).
        prefix: must match the producers'.
        concurrency: jobs run at once.
        prefetch: jobs a slot leases at once. Above 1, a stream of short jobs
            needs far fewer round trips, and a slot running a full share leases
            its next one meanwhile (it holds up to twice ``prefetch``); the
            leased jobs wait their turn in the slot (renewed, and handed back
            at shutdown), so keep it at 1 for long jobs, which other workers
            could start.
        mode: ``"process"`` (each slot runs jobs in a child process: isolation,
            hard time limits, cancellation stops the job) or ``"thread"``.
        lease_s: how long a job stays leased without renewal; a dead worker's
            jobs come back within about this.
        heartbeat_s: how often leases are renewed and the worker re-registered;
            default a third of ``lease_s``, at most 2 s.
        max_lost_leases: deliveries whose worker died before the job is dead.
        result_ttl_s: how long a succeeded job's record is kept.
        failure_ttl_s: how long a failed, dead or cancelled job's record is kept.
        max_result_bytes: the largest encoded result recorded; a larger one fails
            its attempt for good (``ResultTooLarge``). Keep it below the server's
            own limit on one argument (Redis: ``proto-max-bulk-len``).
        grace_s: on shutdown, how long jobs in hand may take to finish before
            they are stopped and handed back to the queue.
        poll_s: longest idle wait before the worker looks for expired leases.
        periodic: cron schedules whose jobs this worker enqueues (each tick
            once, however many workers share the schedule).
        rescan_s: how often installed plugins are looked at again: a worker
            without an allow-list starts serving newly installed ones, and
            every worker warns when a loaded plugin changed on disk (it keeps
            running the loaded code until restarted).
        worker_id: how this worker names itself (host:pid:random).
        engine_options: further engine attributes to override.
        plugin_config: settings per plugin name, given to each plugin's
            ``configure`` at load (never logged).
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
        concurrency: int | None = None,
        prefetch: int | None = None,
        mode: str | None = None,
        lease_s: float | None = None,
        heartbeat_s: float | None = None,
        max_lost_leases: int | None = None,
        result_ttl_s: float | None = None,
        failure_ttl_s: float | None = None,
        max_result_bytes: int | None = None,
        grace_s: float | None = None,
        poll_s: float | None = None,
        periodic: Sequence[Periodic] = (),
        rescan_s: float | None = None,
        worker_id: str | None = None,
        engine_options: Mapping[str, Any] | None = None,
        plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.settings = s = (settings or Settings.load()).replace(
            plugins=plugins,
            url=url,
            namespace=namespace,
            prefix=prefix,
            concurrency=concurrency,
            prefetch=prefetch,
            mode=mode,
            lease_s=lease_s,
            heartbeat_s=heartbeat_s,
            max_lost_leases=max_lost_leases,
            result_ttl_s=result_ttl_s,
            failure_ttl_s=failure_ttl_s,
            max_result_bytes=max_result_bytes,
            grace_s=grace_s,
            poll_s=poll_s,
            rescan_s=rescan_s,
            engine=engine_options,
            plugin=plugin_config,
        )
        if s.mode not in MODES:
            raise DtqError(f"mode must be one of {', '.join(MODES)}, got {s.mode!r}")
        if s.concurrency < 1 or s.prefetch < 1:
            raise DtqError(f"concurrency and prefetch must be at least 1, got {s.concurrency}, {s.prefetch}")
        self.registry = PluginRegistry(s.plugins, config=s.plugin)
        self.plugins = self._loadable_plugins()
        self.engine = resolve_engine(engine, s.url, prefix=s.prefix, namespace=s.namespace, **s.engine)
        self._recorder = _recorder_spec(s) if engine is None and self.engine.shared_by_processes else None
        # An engine from before complete_and_fetch took wait_s overrides it without one.
        self._refill_can_wait = "wait_s" in inspect.signature(self.engine.complete_and_fetch).parameters
        self.concurrency = s.concurrency
        self.prefetch = s.prefetch
        self.mode = s.mode
        self.lease_s = s.lease_s
        self.heartbeat_s = s.heartbeat_s or min(s.lease_s / 3, 2.0)
        self.max_lost_leases = s.max_lost_leases
        self.result_ttl_s = s.result_ttl_s
        self.failure_ttl_s = s.failure_ttl_s
        self.max_result_bytes = s.max_result_bytes
        self.grace_s = s.grace_s
        self.poll_s = s.poll_s
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Follow-up jobs appended by plugins go through a queue on the same engine.
        self.queue = Queue(engine=self.engine, settings=s)
        # A tick's job is kept from a second enqueue only while its record lives: at
        # start (or after an outage), no catching up on ticks older than that.
        catch_up_s = max(1.0, min(60.0, self.result_ttl_s, self.failure_ttl_s))
        kept_s = min(self.result_ttl_s, self.failure_ttl_s)
        self.scheduler = (
            PeriodicScheduler(periodic, self.queue, catch_up_s=catch_up_s, kept_s=kept_s)
            if periodic
            else None
        )
        self._next_tick_s = 0.0  # time.monotonic() of the next periodic check
        self.rescan_s = s.rescan_s
        #: Told of attempts ending and leases recovered (the metrics exporter is one).
        self.observers: list[Observer] = []
        self._next_rescan = time.monotonic() + self.rescan_s
        # Keyed by delivery (job id and lease token), not job id alone: a worker woken from a
        # stall may hold a new lease of a job while the stale attempt of a lost one still stops.
        self._in_hand: dict[tuple[str, str], Control] = {}
        self._in_hand_lock = threading.Lock()
        self._stale: set[tuple[str, str]] = set()  # deliveries in hand whose lease is lost: not renewed
        # In hand and running (execute): the others in hand were only sent ahead to a job process.
        self._executing: set[tuple[str, str]] = set()
        # Leased and waiting in a slot (prefetched): renewed, and handed back if not started.
        self._waiting: dict[tuple[str, str], Lease] = {}
        self._burst = False  # set by each run
        self._failure: JobProcessError | None = None  # what ends a burst early
        self._stopping = threading.Event()
        self._waker: _Waker | None = None  # while running: ends an idle wait on stop()
        self._pool: _Pool | None = None  # while running: ends a wait for a slot on stop()
        self._signalled: int | None = None  # the SIGTERM or SIGINT that came (see _install_signal_handlers)
        self._next_recovery = 0.0
        # When a fetch last found nothing, and its wait for the next delayed job then.
        self._found_empty: tuple[float, float | None] | None = None
        # Whether the latest fetch (any slot's) left no job queued, by the engine's word.
        self._left_empty = False

    # --- public ------------------------------------------------------------------

    def get_jobs(self) -> list[Job]:
        """Process every job available now, then return them as they ended.

        The original design's name for a burst: expired leases are recovered
        first, so jobs of dead workers are included. Jobs scheduled for later
        are left for later.
        """
        return self._run(burst=True)

    def work(self, *, burst: bool = False) -> None:
        """Process jobs until SIGTERM or SIGINT (or, with ``burst``, until none is left).

        On the first signal the worker stops taking jobs and gives those in hand
        ``grace_s`` to finish; the rest are stopped and handed back to the queue.
        A second signal hands them back at once. A lost connection is retried
        with backoff, forever.
        """
        restore = self._install_signal_handlers()
        log.info(
            "worker %s: %s, concurrency %d (%s mode), on %s",
            self.worker_id,
            ", ".join(self.plugins),
            self.concurrency,
            self.mode,
            mask_url(str(getattr(self.engine, "url", type(self.engine).__name__))),
        )
        try:
            self._run(burst=burst)
        finally:
            restore()
            self._signalled = None
        log.info("worker %s stopped", self.worker_id)

    def stop(self) -> None:
        """Ask the worker to stop taking jobs and finish those in hand (thread-safe).

        Not from a signal handler: it sets an Event, which takes a lock. The
        worker's own SIGTERM and SIGINT handlers leave the stop to a thread.
        """
        self._stopping.set()
        waker = self._waker
        if waker is not None:
            waker.poke()  # it ends an idle wait (see _Waker)
        self._end_wait_for_slot()

    def _end_wait_for_slot(self) -> None:
        """End the dispatcher's wait for an idle slot, all of them busy, once stopping: the
        prefetched jobs then go back at once, not a poll later."""
        pool = self._pool
        if pool is not None:
            pool.wake()

    def in_hand(self) -> list[Lease]:
        """The leases of the jobs this worker holds now: running, then waiting their turn."""
        with self._in_hand_lock:
            return [control.lease for control in self._in_hand.values()] + list(self._waiting.values())

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.close()

    # --- the loop ----------------------------------------------------------------

    def _run(self, *, burst: bool) -> list[Job]:
        # Only a burst returns its jobs: a long-running worker must not keep them all.
        pool = self._pool = _Pool(self, self.concurrency, self._make_runner, keep_finished=burst)
        grace = self.grace_s
        self._burst, self._failure = burst, None
        try:
            # The heartbeat runs on through the shutdown: the jobs in hand keep their leases while
            # they end (a job still running a lease's length into the grace period was taken
            # and run again by another worker, and its outcome here refused).
            with _Heartbeat(self):
                try:
                    with _Waker(self):
                        self._dispatch(pool, burst)
                except BaseException:
                    grace = 0.0  # a second signal, or a crash: hand jobs back now
                    raise
                finally:
                    self._stopping.set()  # also on a crash: slots must start nothing more
                    self._shut_down(pool, grace)
        finally:
            self._unregister()
            # Registered by its __enter__; forgotten here, even if a signal cut that short.
            self._waker = self._pool = None
            if pool.ended():
                self._stopping.clear()  # a stopped worker can be run again
            else:  # a slot lives on in a job's thread: it must lease nothing when that ends
                log.warning("a job's thread did not end; this worker stays stopped (make a new one)")
        if self._failure is not None:
            raise self._failure
        return pool.finished

    def _shut_down(self, pool: _Pool, grace_s: float) -> None:
        """Hand the prefetched jobs back, then stop the slots, giving their jobs ``grace_s`` to
        end; a second signal meanwhile (raised in this thread), even during that hand-back,
        hands the jobs still held back at once, then ends the run."""
        try:
            self._hand_back_waiting()
            pool.shutdown(grace_s, before_kill=self._hand_back)
        except BaseException:
            pool.shutdown(0.0, before_kill=self._hand_back)
            raise

    def _dispatch(self, pool: _Pool, burst: bool) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._dispatch_once(pool, burst):
                    return
                failures = 0
            except EngineUnavailable as exc:
                if burst:
                    raise
                failures += 1
                pause = _backoff_s(failures)
                log.warning("%s; retrying in %.1f s", exc, pause)
                self._stopping.wait(pause)

    def _dispatch_once(self, pool: _Pool, burst: bool) -> bool:
        """Fill free slots; False when a burst has nothing left to do."""
        self._housekeeping()
        free = pool.acquire(self.poll_s)
        if not free:
            return True
        try:
            batch = (None if burst else self._looked_just_now()) or self._take(free * self.prefetch)
            if not batch.leases and not burst:
                # Idle: block until woken (an append) or a delayed job is due, and
                # lease what woke it in the same round trip, the slots still in hand.
                batch = self._take(free * self.prefetch, wait_s=self._idle_s(batch.next_due_s))
        except BaseException:
            pool.give_back(free)
            raise
        shares = [
            batch.leases[i :: min(free, len(batch.leases))] for i in range(min(free, len(batch.leases)))
        ]
        for share in shares:
            pool.submit(share)
        pool.give_back(free - len(shares))
        if batch.leases:
            return True
        if burst:
            return not pool.wait_until_idle(self.poll_s)
        return True

    def _note_if_empty(self, batch: Batch) -> None:
        """Remember when a fetch found nothing (see :meth:`_looked_just_now`), and whether
        it left the queue empty (see :meth:`_refill`)."""
        if not batch.leases:
            self._found_empty = (time.monotonic(), batch.next_due_s)
        self._left_empty = batch.more is False

    def _looked_just_now(self) -> Batch | None:
        """What a fetch found a moment ago if that was nothing (once); else None.

        A slot whose share ended records its last outcome and fetches in one
        round trip; when that fetch finds nothing, the slot comes back to the
        dispatcher, which would look again (a second fetch, also finding nothing)
        before it blocks. So would the dispatcher after a blocking wait that a
        leftover wake-up hint ended with nothing to fetch. Within
        :data:`_LOOKED_FRESH_S` of any fetch that found nothing it goes straight to the
        blocking wait instead: a job appended or released since left a wake-up
        hint that ends the wait at once, and the next delayed job the fetch saw
        bounds it (a retry scheduled since is found when the wait ends, within
        ``poll_s``, as it would be after the dispatcher's own look).
        """
        found, self._found_empty = self._found_empty, None
        if found is None:
            return None
        elapsed = time.monotonic() - found[0]
        if elapsed > _LOOKED_FRESH_S:
            return None
        due = found[1]
        return Batch([], None if due is None else max(0.0, due - elapsed))

    def _take(self, count: int, *, wait_s: float | None = None, rotate: bool = True) -> Batch:
        """Lease up to ``count`` jobs, after blocking up to ``wait_s`` for one to come if given;
        they wait in this worker until a slot runs them. ``rotate`` (the dispatcher's thread
        only, which also adds plugins) moves the first plugin to the end."""
        lease_s, worker_id, plugins = self.lease_s, self.worker_id, self.plugins
        if wait_s is None:
            batch = self.engine.fetch(plugins, count=count, lease_s=lease_s, worker_id=worker_id)
        else:
            batch = self.engine.wait_and_fetch(
                plugins, wait_s, count=count, lease_s=lease_s, worker_id=worker_id
            )
        if rotate:
            self.plugins = plugins[1:] + plugins[:1]  # no plugin starves the others
        self._note_if_empty(batch)
        self._waiting_for_slot(batch.leases)
        return batch

    def _fetch_ahead(self) -> list[Lease]:
        """A slot's next share, leased while it runs a full one; none when stopping or unreachable
        (the slot then leases as it runs out, in :meth:`_refill`, which reports the error)."""
        if self._stopping.is_set():
            return []
        try:
            return self._take(self.prefetch, rotate=False).leases
        except DtqError:
            return []
        except Exception:
            log.exception("could not lease a slot's next share ahead; it will lease as it runs out")
            return []

    def _refill(self, ended: list[Ended], acks: _Acknowledger, *, drained: bool) -> list[Lease]:
        """A slot's next jobs, leased by the slot itself in the round trip that records
        ``ended`` (the outcome that emptied its share); none when stopping or unreachable.

        When the share was ``drained`` (not full, or the latest fetch left the
        queue empty: with ``prefetch`` 1 a share is always full), the engine waits (about
        :data:`_REFILL_WAIT_S`) for a job between the two: the outcome's news
        reaches a waiting producer without waiting for a fetch that would find
        nothing, and a job appended meanwhile comes straight to this slot. Not in
        a burst, which ends when the queue is empty.
        Outcomes that could not be recorded go to ``acks``, which retries them.
        """
        if self._stopping.is_set():
            acks.submit_all(ended)
            return []
        waits = drained and not self._burst and self._refill_can_wait
        options: dict[str, float] = {"wait_s": _REFILL_WAIT_S} if waits else {}
        try:
            stored, batch = self.engine.complete_and_fetch(
                _to_record(ended),
                self.plugins,
                count=self.prefetch,
                lease_s=self.lease_s,
                worker_id=self.worker_id,
                **options,
            )
        except NotReplicated as exc:
            # Recorded and leased, but not on enough replicas yet: the acknowledger records
            # the outcomes again (a repeat is answered as the first), and the jobs run.
            log.warning("outcomes not confirmed by enough replicas, retried: %s", exc)
            acks.submit_all(ended)
            return self._waiting_for_slot(exc.leased)
        except DtqError as exc:
            log.warning("could not fetch jobs: %s", exc)  # the dispatcher retries with backoff
            acks.submit_all(ended)
            return []
        except Exception:
            # An engine's bug: its outcomes still go to the acknowledger, which records them.
            log.exception("could not record outcomes and fetch jobs; the outcomes are retried")
            acks.submit_all(ended)
            return []
        self._note_if_empty(batch)
        acks.finish(self._reported(ended, _answers(ended, stored), finished=acks.keep_finished))
        return self._waiting_for_slot(batch.leases)

    def _waiting_for_slot(self, leases: list[Lease]) -> list[Lease]:
        """Note ``leases`` as held and waiting their turn (renewed, handed back if not started)."""
        if leases:
            with self._in_hand_lock:
                self._waiting.update((_delivery(lease), lease) for lease in leases)
        return leases

    def _start(self, lease: Lease) -> bool:
        """Move a waiting lease to the running ones; False if it may no longer run."""
        with self._in_hand_lock:
            if self._waiting.pop(_delivery(lease), None) is None:
                return False  # its lease was lost while it waited
        if self._stopping.is_set():
            self._give_back(lease)
            return False
        return True

    def _cannot_start(self, leases: list[Lease], exc: JobProcessError) -> None:
        """Hand back the share ``leases`` from the one a slot could not start on (its job
        process did not start); the slot pauses next (:meth:`_pause_slot`). A burst stops
        and raises ``exc``."""
        self._give_back(leases[0])  # it had started
        handed = 1 + self._hand_back_unstarted(leases[1:])
        if self._stopping.is_set():
            return  # stopping: its child was killed on purpose, or soon would be
        log.error("%s; handed %d job(s) back to the queue", exc, handed)
        if self._burst:
            self._failure = exc
            self._stopping.set()

    def _pause_slot(self, exc: JobProcessError) -> None:
        """After :meth:`_cannot_start`: pause the slot, longer each time in a row (the worker
        cannot help it, other workers may); not when stopping."""
        self._stopping.wait(_backoff_s(exc.in_a_row))

    def _hand_back_unstarted(self, leases: Sequence[Lease]) -> int:
        """Give back those of ``leases`` still waiting for a slot (not begun, their lease not
        lost); how many."""
        with self._in_hand_lock:
            waiting = [lease for lease in leases if self._waiting.pop(_delivery(lease), None)]
        for lease in waiting:
            self._give_back(lease)
        return len(waiting)

    def _unbegin(self, started: Started) -> None:
        """Hand back a begun job that will not run after all (see :meth:`begin`)."""
        lease = started.control.lease
        self._drop_in_hand(lease)
        self._give_back(lease)

    def _drop_in_hand(self, lease: Lease) -> None:
        """Forget a delivery held as running: no longer renewed or stoppable by this worker."""
        delivery = _delivery(lease)
        with self._in_hand_lock:
            self._in_hand.pop(delivery, None)
            self._stale.discard(delivery)
            self._executing.discard(delivery)

    def _give_back(self, lease: Lease, *, started: bool = False) -> ReleaseOutcome | None:
        """Hand a job this worker will not run (or finish) back to the queue; None if that
        failed (its lease expires). Unless ``started``, its delivery is not counted as an attempt."""
        try:
            if started:
                return self.engine.release(
                    lease, lost=False, max_lost_leases=self.max_lost_leases, ttl_s=self.failure_ttl_s
                )
            return self.engine.hand_back(
                lease, max_lost_leases=self.max_lost_leases, ttl_s=self.failure_ttl_s
            )
        except DtqError as exc:
            log.warning("job %s: could not hand it back (%s); its lease will expire", lease.job.id, exc)
            return None

    def _housekeeping(self) -> None:
        """Recover expired leases, enqueue periodic jobs, look for new plugins: each when due."""
        now = time.monotonic()
        if now >= self._next_recovery:
            self._recover()
        if self.scheduler is not None and now >= self._next_tick_s:
            self._enqueue_periodic()
        if now >= self._next_rescan:
            self._rescan_plugins()

    def _idle_s(self, next_due_s: float | None) -> float:
        """How long an idle worker blocks: until a delayed job or a periodic tick is due, at most poll_s."""
        waits = [self.poll_s]
        if next_due_s is not None:
            waits.append(next_due_s)
        if self.scheduler is not None:
            waits.append(self._next_tick_s - time.monotonic())
        return max(0.01, min(waits))

    def _enqueue_periodic(self) -> None:
        assert self.scheduler is not None
        try:
            for job in self.scheduler.run_due():
                log.info("periodic job %s enqueued (%s)", job.id, job.status.value)
        except EngineUnavailable:
            raise
        except DtqError as exc:  # e.g. the plugin's validate refused it: report, keep working
            log.error("periodic jobs: %s", exc)
        wait = self.scheduler.seconds_to_next_tick()
        self._next_tick_s = time.monotonic() + (self.poll_s if wait is None else max(0.0, wait))

    def _rescan_plugins(self) -> None:
        self._next_rescan = time.monotonic() + self.rescan_s
        try:
            self._look_for_plugins()
        except Exception:
            # What is installed cannot stop the jobs of the plugins served (malformed
            # metadata of another package, say): logged, and looked at again next time.
            log.exception("could not look for newly installed plugins")

    def _look_for_plugins(self) -> None:
        for name in self.registry.changed_since_load():  # also refreshes the registry's scan
            log.warning(
                "plugin %s changed on disk since this worker loaded it; restart the worker to run "
                "the new code (it keeps running the loaded one)",
                name,
            )
        if self.registry.allow is not None:
            return
        for name in self._load_reporting_failures(sorted(set(self.registry.names()) - set(self.plugins))):
            log.info("now serving newly installed plugin %s", name)
            self.plugins.append(name)

    def _recover(self) -> None:
        for plugin in self.plugins:
            count = self._recover_plugin(plugin)
            if count:
                log.warning("recovered %d job(s) of %s whose worker stopped renewing", count, plugin)
                for observer in self.observers:
                    observer.leases_recovered(plugin, count)
        self._next_recovery = time.monotonic() + max(0.05, self.lease_s / 4)

    def _recover_plugin(self, plugin: str) -> int:
        """Recover ``plugin``'s expired leases: all of them in a burst, which ends before its
        next recovery (it took the first 100, and left a dead worker's others behind)."""
        recovered = 0
        while True:
            count = self.engine.recover(
                plugin, max_lost_leases=self.max_lost_leases, ttl_s=self.failure_ttl_s, limit=_RECOVER_BATCH
            )
            recovered += count
            if not self._burst or count < _RECOVER_BATCH:
                return recovered

    def _hand_back_waiting(self) -> None:
        """On stopping, give back the prefetched jobs no slot has begun, so that other workers
        can take them while the jobs in hand finish (a slot that pops one first runs it)."""
        with self._in_hand_lock:
            waiting = list(self._waiting.items())
        for delivery, lease in waiting:
            # Forgotten once given back, not before: a second signal that cuts this loop short
            # leaves the rest held, for _hand_back. A slot that took one meanwhile gives it
            # back itself (stopping); the later of two hand-backs is refused, harmlessly.
            self._give_back(lease)
            with self._in_hand_lock:
                self._waiting.pop(delivery, None)

    def _hand_back(self) -> None:
        """Give the jobs still in hand back to the queue (shutdown past the grace period)."""
        with self._in_hand_lock:
            leases = [control.lease for control in self._in_hand.values()] + list(self._waiting.values())
            running = set(self._executing)
        for lease in leases:
            outcome = self._give_back(lease, started=_delivery(lease) in running)
            if outcome is not None:
                log.warning(
                    "job %s (%s): stopped at shutdown, %s", lease.job.id, lease.job.plugin, outcome.value
                )

    def _renew(self) -> None:
        """Renew the leases in hand; stop the attempts whose lease is lost or whose job is cancelled."""
        with self._in_hand_lock:
            leases = [c.lease for delivery, c in self._in_hand.items() if delivery not in self._stale]
            leases += self._waiting.values()
        for batch in _one_lease_per_job(leases):
            renewal = self.engine.renew(batch, self.lease_s)
            by_id = {lease.job.id: lease for lease in batch}
            for job_id in renewal.lost:
                self._lease_lost(by_id[job_id])
            for job_id in renewal.cancel:
                self._stop(by_id[job_id])

    def _lease_lost(self, lease: Lease) -> None:
        """The lease ran out (this worker was cut off or stalled past it) and the job went back.

        Another worker may run it now, and this attempt's outcome will be refused,
        so the attempt is stopped rather than left to run for nothing.
        """
        with self._in_hand_lock:
            if self._waiting.pop(_delivery(lease), None) is not None:
                log.warning("job %s: lease lost before it started; left to its new owner", lease.job.id)
                return
            if _delivery(lease) not in self._in_hand:
                return  # the attempt ended meanwhile: its completion had the last word
        if self._recorder is not None and recorded_success(self.engine, lease) is not None:
            return  # its job process recorded its success, and is about to say so
        with self._in_hand_lock:
            self._stale.add(_delivery(lease))
        log.warning(
            "job %s attempt %d: lease lost; another worker may run it, so this attempt is stopped",
            lease.job.id,
            lease.job.attempts,
        )
        self._stop(lease)

    def _stop(self, lease: Lease) -> None:
        with self._in_hand_lock:
            control = self._in_hand.get(_delivery(lease))
        if control is not None:
            control.cancel.set()

    def _unregister(self) -> None:
        try:
            self.engine.unregister(self.worker_id)
        except DtqError as exc:
            log.warning("could not unregister worker %s: %s", self.worker_id, exc)

    def _make_runner(self) -> Runner:
        if self.mode == "process":
            return ProcessRunner(self.registry, self.engine, self.queue, self._recorder)
        return ThreadRunner(self.registry, self.engine, self.queue)

    # --- one job -----------------------------------------------------------------

    def begin(self, lease: Lease) -> Started | Ended:
        """Hold a leased job as running: its plugin found, its lease renewed and its cancel
        reachable from now on; or, when its plugin cannot run here, its outcome (dead)."""
        job = lease.job
        try:
            plugin = self.registry.get(job.plugin)
        except PluginError as exc:
            return self._ended(lease, decide(RetryPolicy(), job, unrunnable(exc)), time.monotonic())
        control = Control(lease)
        with self._in_hand_lock:
            self._in_hand[_delivery(lease)] = control
        return Started(control, plugin, timeout_for(plugin, job))

    def execute(self, runner: Runner, started: Started, ahead: Ahead | None = None) -> Ended | Job:
        """Run a begun job to the end of its attempt: its outcome, still to record.

        ``ahead`` may begin the slot's next job, which a process runner sends its
        child before this one ends. An attempt whose runner died is settled at
        once (released): its Job is returned.
        """
        control, lease = started.control, started.control.lease
        began = time.monotonic()
        if started.limit_s is not None:
            control.deadline = began + started.limit_s  # the time limit counts from here
        with self._in_hand_lock:
            self._executing.add(_delivery(lease))
        try:
            attempt = runner.run(control, started.limit_s, started.plugin, ahead)
        finally:
            self._drop_in_hand(lease)
        if attempt is None:
            return self._lost(lease)
        attempt = self._sized(lease.job, attempt)
        ended = self._ended(lease, decide(policy_for(started.plugin, lease.job), lease.job, attempt), began)
        recorded = runner.recorded  # by the job process itself (a success: so is this outcome)
        return ended if recorded is None else attrs.evolve(ended, recorded=recorded)

    def _sized(self, job: Job, attempt: Attempt) -> Attempt:
        """``attempt``, unless its result is over ``max_result_bytes``: then a failure that says so.

        Sent anyway, it could be refused by the server (over its own argument limit),
        which may close the connection as it reads it: that looks like an unreachable
        server, and the outcome would be retried until the job's lease ran out.
        """
        size = bytes_over(attempt.result_json, self.max_result_bytes)
        if size is None:
            return attempt
        message = (
            f"plugin {job.plugin!r} returned a result of {size} bytes as JSON, over the worker's "
            f"max_result_bytes ({self.max_result_bytes}); store large results elsewhere (a file, "
            "object storage) and return their location"
        )
        return Attempt(Ending.PERMANENT, error=ErrorInfo(type="ResultTooLarge", message=message))

    def _ended(self, lease: Lease, outcome: Outcome, started: float) -> Ended:
        ttl = self.result_ttl_s if outcome.status is JobStatus.SUCCEEDED else self.failure_ttl_s
        settings = self.registry.config.get(lease.job.plugin)
        if outcome.error is not None and settings:
            # Stored with the job and logged: never with the plugin's settings in it.
            error = outcome.error
            scrubbed = attrs.evolve(
                error,
                message=scrub_settings(error.message, settings),
                traceback=scrub_settings(error.traceback, settings),
            )
            outcome = attrs.evolve(outcome, error=scrubbed)
        return Ended(Completion(lease, outcome, ttl), time.monotonic() - started)

    def record(self, ended: Sequence[Ended], *, finished: bool = True) -> list[Job]:
        """Store outcomes in one batch (retried while Redis is away); log and report each.

        Returns the jobs as they ended, unless ``finished`` is false (then none:
        building them costs CPU on every job, and only a burst keeps them).
        """
        completions = _to_record(ended)
        stored = self.engine.complete_many(completions) if completions else []
        return self._reported(ended, _answers(ended, stored), finished=finished)

    def _reported(self, ended: Sequence[Ended], stored: Sequence[Recorded], *, finished: bool) -> list[Job]:
        """Log and report outcomes as the engine stored them; the jobs as they ended, if ``finished``."""
        jobs: list[Job] = []
        for one, answer in zip(ended, stored, strict=True):
            job = one.completion.lease.job
            outcome = _as_stored(one.completion.outcome, Recorded(int(answer)))  # int: a custom engine's bool
            _log_outcome(job, outcome, bool(answer), one.duration_s)
            if answer:
                self._tell_ended(job, outcome.status, one.duration_s)
            if finished:
                jobs.append(_finished(job, outcome))
        return jobs

    def _lost(self, lease: Lease) -> Job:
        job = lease.job
        released = self.engine.release(
            lease, lost=True, max_lost_leases=self.max_lost_leases, ttl_s=self.failure_ttl_s
        )
        if released is ReleaseOutcome.NOT_HELD:
            log.info("job %s: stopped after its lease was handed back or lost", job.id)
        else:
            log.warning(
                "job %s (%s) attempt %d: its process died; %s",
                job.id,
                job.plugin,
                job.attempts,
                released.value,  # "requeued", not "ReleaseOutcome.REQUEUED"
                extra={"job_id": job.id, "plugin": job.plugin, "attempt": job.attempts, "status": "lost"},
            )
        status = {ReleaseOutcome.DEAD: JobStatus.DEAD, ReleaseOutcome.CANCELLED: JobStatus.CANCELLED}.get(
            released, JobStatus.QUEUED
        )
        if released is not ReleaseOutcome.NOT_HELD:
            self._tell_ended(job, status, None)
        return attrs.evolve(job, status=status, lost_leases=job.lost_leases + 1)

    def _tell_ended(self, job: Job, status: JobStatus, duration_s: float | None) -> None:
        for observer in self.observers:
            observer.attempt_ended(job, status, duration_s)

    # --- set-up ------------------------------------------------------------------

    def _loadable_plugins(self) -> list[str]:
        names = self.registry.names()
        if self.registry.allow is not None:
            for name in names:
                self.registry.get(name)  # an explicitly named plugin must load: fail fast
            return names
        loadable = self._load_reporting_failures(names)
        if not loadable:
            raise PluginError(
                "no installed plugin loads, so there is nothing to serve; install one "
                "(pip install dtq-plugin-...) and check it with `dtq plugins`",
                plugin="",
            )
        return loadable

    def _load_reporting_failures(self, names: Iterable[str]) -> list[str]:
        """The names whose plugin loads; the others are logged and left unserved."""
        loadable = []
        for name in names:
            try:
                self.registry.get(name)
            except PluginError as exc:
                log.error("not serving %s: %s", name, exc)
            else:
                loadable.append(name)
        return loadable

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        # The handler runs in the main thread between two of its bytecodes, maybe
        # inside a lock's critical section there: it takes no lock and does no I/O
        # (not even a log line), or it could wait forever on the code it interrupted.
        # It leaves a note and a byte for the waker thread, which does the rest.
        def handle(signum: int, _frame: FrameType | None) -> None:
            if self._signalled is not None or self._stopping.is_set():  # is_set takes no lock
                raise SystemExit(128 + signum)
            self._signalled = signum
            waker = self._waker
            if waker is not None:
                waker.ask_stop(signum)
            # else no run is going on; one about to start sees the note (_Waker.__enter__)

        self._signalled = None

        for sig in previous:
            signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def describe(self) -> dict[str, str]:
        """What the worker registry shows about this worker."""
        return {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "plugins": ",".join(sorted(self.plugins)),
            "concurrency": str(self.concurrency),
            "mode": self.mode,
            # A JSON list: an id may hold a comma (older workers joined the ids with commas).
            "in_hand": json.dumps([lease.job.id for lease in self.in_hand()]),
        }


@attrs.frozen
class WorkerRow:
    """One live worker as the registry describes it (:meth:`Worker.describe`), with numbers and lists
    for its text: what ``dtq workers`` and the dashboard show."""

    id: str
    host: str
    pid: int | None
    plugins: list[str]
    concurrency: int | None
    mode: str
    in_hand: list[str]
    #: seconds since its last heartbeat, when the engine says
    heartbeat_age_s: float | None

    def to_dict(self) -> dict[str, Any]:
        """The ``/api/workers`` (and ``dtq workers --json``) shape of one worker."""
        return attrs.asdict(self)


def worker_rows(workers: Sequence[Mapping[str, str]], now_s: float | None = None) -> list[WorkerRow]:
    """The registry's descriptions (:meth:`Queue.workers`) as rows, sorted by host and pid."""
    now_ms = (time.time() if now_s is None else now_s) * 1000
    rows = [_worker_row(info, now_ms) for info in workers]
    return sorted(rows, key=lambda row: (row.host, row.pid or 0, row.id))


def _worker_row(info: Mapping[str, str], now_ms: float) -> WorkerRow:
    last_seen = info.get("last_seen", "")
    return WorkerRow(
        id=info.get("id", "?"),
        host=info.get("host", ""),
        pid=_whole(info.get("pid", "")),
        plugins=_split(info.get("plugins", "")),
        concurrency=_whole(info.get("concurrency", "")),
        mode=info.get("mode", ""),
        in_hand=_ids(info.get("in_hand", "")),
        heartbeat_age_s=max(0.0, (now_ms - int(last_seen)) / 1000) if last_seen.isdigit() else None,
    )


def _split(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def _ids(text: str) -> list[str]:
    """The job ids a worker holds: a JSON list, or (an older worker's) joined with commas."""
    try:
        ids = json.loads(text)
    except ValueError:
        return _split(text)
    return [str(i) for i in ids] if isinstance(ids, list) else _split(text)


def _whole(text: str) -> int | None:
    """A registry field's number (the registry keeps text), or None if it holds none."""
    return int(text) if text.isdigit() else None


def _backoff_s(failures: int) -> float:
    """The pause after ``failures`` failed tries in a row: doubling from 0.2 s, at most _MAX_BACKOFF_S."""
    return min(_MAX_BACKOFF_S, 0.1 * 2.0**failures)


def _recorder_spec(s: Settings) -> dict[str, Any]:
    """What a job process needs to open the worker's engine and record a success as the
    worker would (see :class:`~dtq_core.runner.ChildRecorder`)."""
    return {
        "url": url_from_env(s.url),
        "options": {"prefix": s.prefix, "namespace": s.namespace, **s.engine},
        "result_ttl_s": s.result_ttl_s,
        "max_result_bytes": s.max_result_bytes,
    }


def _as_stored(outcome: Outcome, recorded: Recorded) -> Outcome:
    """``outcome`` as the engine stored it: a retry it turned into the job's cancellation
    (asked for during the attempt) is reported, counted and logged as that."""
    if recorded is Recorded.CANCELLED:
        return attrs.evolve(outcome, status=JobStatus.CANCELLED, retry_in_s=0.0)
    return outcome


def _finished(job: Job, outcome: Outcome) -> Job:
    """The job as its attempt left it."""
    result = None if outcome.result_json is None else json.loads(outcome.result_json)
    return attrs.evolve(job, status=outcome.status, result=result, error=outcome.error)


def _log_outcome(job: Job, outcome: Outcome, stored: bool, duration_s: float) -> None:
    if not stored:
        log.warning(
            "job %s (%s) attempt %d: lease lost before completion; outcome discarded, "
            "the job's current owner decides",
            job.id,
            job.plugin,
            job.attempts,
        )
        return
    level = logging.INFO if outcome.status is JobStatus.SUCCEEDED else logging.WARNING
    if not log.isEnabledFor(level):
        return  # --quiet: no line, so none of its parts is built (a few µs a job)
    error = "" if outcome.error is None else f": {outcome.error.type}: {outcome.error.message}"
    retry = f", retry in {outcome.retry_in_s:.1f} s" if outcome.status is JobStatus.SCHEDULED else ""
    status = "failed" if outcome.status is JobStatus.SCHEDULED else outcome.status.value
    log.log(
        level,
        "job %s (%s) attempt %d %s in %.3f s%s%s",
        job.id,
        job.plugin,
        job.attempts,
        status,
        duration_s,
        error,
        retry,
        extra={
            "job_id": job.id,
            "plugin": job.plugin,
            "attempt": job.attempts,
            "status": "retrying" if outcome.status is JobStatus.SCHEDULED else outcome.status.value,
            "duration_s": round(duration_s, 6),
            "error": None if outcome.error is None else f"{outcome.error.type}: {outcome.error.message}",
        },
    )


def _delivery(lease: Lease) -> tuple[str, str]:
    # A token is unique per delivery of one job only: the same worker's first attempts
    # at two jobs share a token.
    return (lease.job.id, lease.token)


def _one_lease_per_job(leases: Sequence[Lease]) -> list[list[Lease]]:
    """Split leases into batches that name each job once, so that a job id the engine reports
    lost names one lease. Two leases of one job are in hand only while a stale attempt stops."""
    batches: list[list[Lease]] = []
    seen: dict[str, int] = {}
    for lease in leases:
        n = seen[lease.job.id] = seen.get(lease.job.id, -1) + 1
        if n == len(batches):
            batches.append([])
        batches[n].append(lease)
    return batches


@attrs.frozen
class Ended:
    """An attempt that ended, and its outcome still to be recorded; or, with ``recorded``,
    recorded by its job process already (see :class:`~dtq_core.runner.ChildRecorder`),
    still to be logged and counted."""

    completion: Completion
    duration_s: float
    recorded: Recorded | None = None


def _to_record(ended: Sequence[Ended]) -> list[Completion]:
    """The completions of ``ended`` still to record (not recorded by their job processes)."""
    return [e.completion for e in ended if e.recorded is None]


def _answers(ended: Sequence[Ended], stored: Sequence[Recorded]) -> list[Recorded]:
    """The engine's answer for each of ``ended``: its job process's, else the next of ``stored``
    (the answers to :func:`_to_record`'s completions, in order)."""
    fresh = iter(stored)
    return [e.recorded if e.recorded is not None else next(fresh) for e in ended]


@attrs.frozen
class Started:
    """A job held as running (:meth:`Worker.begin`): its control, plugin and time limit."""

    control: Control
    plugin: Plugin
    limit_s: float | None


class _Pool:
    """``size`` slot threads, each with its own runner, fed a share of leases at a time.

    A slot leases its next jobs itself: while it runs a full share, in the
    background (:meth:`Worker._fetch_ahead`); otherwise as the share ends
    (:meth:`Worker._refill`). It goes back to idle, freeing its place for the
    dispatcher, only when none is left. Outcomes go to the acknowledger, which
    records them in batches.
    """

    def __init__(
        self, worker: Worker, size: int, make_runner: Callable[[], Runner], *, keep_finished: bool
    ) -> None:
        self.worker = worker
        self.size = size
        self.acks = _Acknowledger(worker, keep_finished=keep_finished)
        self._work: queue_module.SimpleQueue[list[Lease] | None] = queue_module.SimpleQueue()
        # Idle slots and busy ones, under one condition: the dispatcher waiting for an idle
        # slot also wakes when the worker stops (see wake), not a poll later, so that the
        # prefetched jobs go back at once while the jobs running end.
        self._free = size
        self._busy = 0
        self._idle = threading.Condition()
        self._runners = [make_runner() for _ in range(size)]
        # Fetches a busy slot's next share while it runs one: see _fetch_ahead.
        self._ahead = ThreadPoolExecutor(max_workers=size, thread_name_prefix="dtq-fetch")
        # Set as each slot's thread ends: Thread.join and is_alive cannot be trusted once
        # a signal's exception has cut a join short (Python before 3.12 then takes the
        # thread for ended: bpo-45274's fix releases the lock the live thread holds).
        self._ended = [threading.Event() for _ in self._runners]
        self._threads = [
            threading.Thread(target=self._slot, args=(runner, ended), name=f"dtq-slot-{i}", daemon=True)
            for i, (runner, ended) in enumerate(zip(self._runners, self._ended, strict=True))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def finished(self) -> list[Job]:
        """The jobs whose outcome was recorded (kept only for a burst)."""
        return self.acks.finished

    def acquire(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for an idle slot, or until the worker stops; take every
        idle slot; return how many (0 when none came)."""
        stopping = self.worker._stopping
        with self._idle:
            self._idle.wait_for(lambda: self._free > 0 or stopping.is_set(), timeout=timeout_s)
            if stopping.is_set():
                return 0
            taken, self._free = self._free, 0
            return taken

    def give_back(self, count: int) -> None:
        """Return slots that were acquired but not used."""
        with self._idle:
            self._free += count
            self._idle.notify_all()

    def wake(self) -> None:
        """End the dispatcher's wait for an idle slot (the worker is stopping)."""
        with self._idle:
            self._idle.notify_all()

    def submit(self, leases: list[Lease]) -> None:
        """Hand a share of leases to the next idle slot (one was acquired for it)."""
        with self._idle:
            self._busy += 1
        self._work.put(leases)

    def wait_until_idle(self, timeout_s: float) -> bool:
        """Wait until no slot is busy and every outcome is recorded; True if so."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            if not self._idle.wait_for(lambda: self._busy == 0, timeout=timeout_s):
                return False
        return self.acks.wait_until_empty(max(0.0, deadline - time.monotonic()))

    def shutdown(self, grace_s: float, before_kill: Callable[[], None]) -> None:
        """Let the jobs in hand finish within ``grace_s``; then call ``before_kill``
        (which hands their jobs back) and stop them. Outcomes are recorded last."""
        for _ in self._threads:
            self._work.put(None)
        deadline = time.monotonic() + grace_s
        for ended in self._ended:
            ended.wait(max(0.0, deadline - time.monotonic()))
        if not self.ended():
            before_kill()
            for runner in self._runners:
                runner.kill()
            for ended in self._ended:
                ended.wait(5.0)  # a killed job's slot notices within a poll; a thread job may not end
        for runner, ended in zip(self._runners, self._ended, strict=True):
            if ended.is_set():
                runner.close()
        self._ahead.shutdown(wait=True)
        self.worker._hand_back_waiting()  # fetched ahead for a slot that was killed
        self.acks.close()

    def ended(self) -> bool:
        """True once every slot's thread has ended (a thread job past the grace may not)."""
        return all(ended.is_set() for ended in self._ended)

    def _slot(self, runner: Runner, ended: threading.Event) -> None:
        try:
            self._serve(runner)
        finally:
            ended.set()

    def _serve(self, runner: Runner) -> None:
        while (leases := self._work.get()) is not None:
            try:
                self._run_shares(runner, leases)
            except Exception:
                # A bug, not a job's failure: the slot lives on. Jobs it held and had not
                # begun went back; one it ran and could not record runs again once its
                # lease expires.
                log.exception("a worker slot failed")
            finally:
                with self._idle:
                    self._busy -= 1
                    self._free += 1
                    self._idle.notify_all()

    def _run_shares(self, runner: Runner, leases: list[Lease]) -> None:
        """Run shares, each leased by the slot as the one before runs or ends, until none is left."""
        following: Future[list[Lease]] | None = None
        try:
            while leases:
                following = self._fetch_ahead(leases)
                # No share follows, and the last fetch left the queue empty (or this share is not
                # full): its last job is likely the slot's last for a while (see last_alone).
                alone = following is None and (len(leases) < self.worker.prefetch or self.worker._left_empty)
                runner.last_alone(leases[-1] if alone else None)
                try:
                    last = self._run_share(runner, leases)
                except JobProcessError as exc:
                    # Its jobs went back; so does the share leased ahead, before the pause.
                    self.worker._hand_back_unstarted(following.result() if following else [])
                    self.worker._pause_slot(exc)
                    return
                drained = len(leases) < self.worker.prefetch or self.worker._left_empty
                leases = self._next_share(following, last, drained=drained)
                following = None
        except BaseException:
            self.worker._hand_back_unstarted(leases)  # those not begun
            if following is not None:
                self.worker._hand_back_unstarted(following.result())
            raise

    def _fetch_ahead(self, leases: list[Lease]) -> Future[list[Lease]] | None:
        """Lease the slot's next share in the background while it runs ``leases``, if that is
        a full share (the queue may hold more): it is there when the share ends, instead of
        a round trip later. With ``prefetch`` 1 a slot holds only the job it runs."""
        prefetch = self.worker.prefetch
        if prefetch == 1 or len(leases) < prefetch or self.worker._stopping.is_set():
            return None
        return self._ahead.submit(self.worker._fetch_ahead)

    def _next_share(
        self, following: Future[list[Lease]] | None, last: list[Ended], *, drained: bool
    ) -> list[Lease]:
        """The slot's next share: the one fetched ahead, else one leased in the round trip that
        records ``last`` (which a share fetched ahead leaves to the acknowledger); ``drained``
        when the share that ended was not full (see :meth:`Worker._refill`)."""
        if following is not None and (leases := following.result()):
            if not self.worker._stopping.is_set():
                self.acks.submit_all(last)
                return leases
            self.worker._hand_back_unstarted(leases)  # fetched as the worker began to stop
        return self.worker._refill(last, self.acks, drained=drained)

    def _run_share(self, runner: Runner, leases: list[Lease]) -> list[Ended]:
        """Run a share of leases in turn; return the outcome of the last, which the slot records itself.

        Each other outcome goes to the acknowledger as it comes. A process runner
        sends the job process its next jobs while one runs (``ahead``), so that the
        child never waits for the worker between jobs. If the job process cannot
        start, the jobs not run yet go back to the queue.
        """
        last: list[Ended] = []
        ahead = _SendAhead(self, runner, leases)
        for n, lease in enumerate(leases, start=1):
            begun = ahead.reached(n - 1)
            try:
                ended = self._run_one(runner, lease, begun, ahead)
            except JobProcessError as exc:
                for unsent in ahead.early.values():  # sent to a child that died, then none started
                    self.worker._unbegin(unsent)
                self.worker._cannot_start(leases[n - 1 :], exc)
                raise
            if isinstance(ended, Ended) and n == len(leases):
                last.append(ended)
            elif ended is not None:
                self.acks.submit(ended)
        return last

    def _run_one(
        self, runner: Runner, lease: Lease, begun: Started | None, ahead: Ahead
    ) -> Ended | Job | None:
        """Run one job of a share; ``begun`` when ``ahead`` began it already, None if it
        may not run (its lease was lost or the worker is stopping) or went wrong."""
        started: Started | Ended
        if begun is None:
            if not self.worker._start(lease):
                return None
            started = self.worker.begin(lease)
            if isinstance(started, Ended):
                return started  # its plugin cannot run here
        elif self.worker._stopping.is_set() and not runner.holds(lease):
            # Begun early, but its job process was stopped before it could run it.
            self.worker._unbegin(begun)
            return None
        else:
            started = begun
        try:
            return self.worker.execute(runner, started, ahead)
        except JobProcessError:
            raise  # not this job's fault: see _run_share
        except DtqError as exc:
            log.error("job %s: could not settle its attempt: %s", lease.job.id, exc)
        except Exception:
            # Never let a slot die silently: the job's lease expires and it runs again.
            log.exception("job %s: unexpected error in the worker", lease.job.id)
        return None


class _SendAhead:
    """The :data:`Ahead` of a share: begins, in order, the jobs its process runner sends
    the child before their turn, each once, and again after the child was replaced."""

    def __init__(self, pool: _Pool, runner: Runner, leases: list[Lease]) -> None:
        self.pool, self.runner, self.leases = pool, runner, leases
        self.early: dict[int, Started] = {}  # begun (and sent) while one before them ran
        self._current = 0  # the index of the job the slot runs
        self._following = 1  # the index of the next job to send the child
        self._child = runner.generation  # the child the jobs ahead were sent to

    def reached(self, n: int) -> Started | None:
        """The slot runs ``leases[n]`` now: the job as begun ahead, if it was."""
        self._current, self._following = n, max(self._following, n + 1)
        return self.early.pop(n, None)

    def __call__(self) -> Lease | None:
        if self.runner.generation != self._child:
            # A new child: the jobs sent ahead died with the old one; send them again, in order.
            self._child, self._following = self.runner.generation, self._current + 1
        worker = self.pool.worker
        while (n := self._following) < len(self.leases):
            self._following += 1
            if n in self.early:
                return self.leases[n]  # begun before, for the child that was replaced
            if not worker._start(self.leases[n]):
                continue  # its lease was lost, or the worker is stopping (it went back)
            begun = worker.begin(self.leases[n])
            if isinstance(begun, Ended):
                self.pool.acks.submit(begun)  # its plugin cannot run here: recorded now, not held
                continue
            self.early[n] = begun
            return self.leases[n]
        return None


#: An acknowledger records at once this many outcomes; fewer wait up to _ACK_LINGER_S for more.
#: Only outcomes of a busy slot wait (the last of a share not full, after which the queue may be
#: idle, is recorded with the slot's next fetch), so the wait delays when a result shows, never the
#: next job, and never a lone job's; it lets a process-mode
#: slot's outcomes, one every few hundred µs, share a round trip: with 10 ms and 32, about 3.0
#: Redis commands per job instead of 4.6 with 2 ms and 16 (measured, prefetch 64).
_ACK_BATCH = 32
_ACK_LINGER_S = 0.01


class _Acknowledger:
    """Records outcomes from a thread of its own, in batches: what ended while the
    previous round trip was out goes in the next one (group commit).

    A batch the engine cannot take now is kept and tried again with backoff; at
    shutdown the tries are bounded, and the jobs of a batch still unrecorded
    run again once their leases expire (nothing is lost, an attempt is repeated).
    """

    _SHUTDOWN_TRIES = 5

    def __init__(self, worker: Worker, *, keep_finished: bool) -> None:
        self.worker = worker
        self.keep_finished = keep_finished
        self.finished: list[Job] = []
        self._pending: list[Ended | Job] = []
        self._in_flight = False
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="dtq-acks", daemon=True)
        self._thread.start()

    def submit(self, ended: Ended | Job) -> None:
        """Queue an outcome to record (a Job is one settled already, kept for a burst)."""
        self.submit_all([ended])

    def submit_all(self, ended: Sequence[Ended | Job]) -> None:
        """Queue outcomes to record."""
        if not ended:
            return
        with self._changed:
            first = not self._pending
            self._pending.extend(ended)
            # The thread waits for a first outcome, then for a batch (or the linger
            # time): waking it for every outcome in between would cost a thread
            # switch per job, for a look at a batch still too small.
            if first or len(self._pending) >= _ACK_BATCH:
                self._changed.notify_all()

    def finish(self, jobs: list[Job]) -> None:
        """Jobs whose outcome a slot recorded itself (kept for a burst)."""
        if jobs and self.keep_finished:
            with self._changed:
                self.finished += jobs

    def wait_until_empty(self, timeout_s: float) -> bool:
        """Wait until every submitted outcome is recorded (or given up); True if so."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._in_flight, timeout_s)

    def close(self) -> None:
        """Record what is pending, then stop the thread."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closing)
                if not self._pending:
                    return
                # A moment's wait for company: outcomes that come one at a time
                # (a child process per job) then share a round trip and the
                # script's fixed costs instead of paying them each.
                self._changed.wait_for(
                    lambda: len(self._pending) >= _ACK_BATCH or self._closing, _ACK_LINGER_S
                )
                batch, self._pending = self._pending, []
                self._in_flight = True
            jobs: list[Job] = []
            try:
                jobs = self._record(batch)
            except BaseException:  # a bug: this thread must live on, or every later outcome waits forever
                log.exception(
                    "could not record %d outcome(s); their jobs run again when their leases expire",
                    len(batch),
                )
            finally:
                with self._changed:
                    self._in_flight = False
                    if self.keep_finished:
                        self.finished += jobs
                    self._changed.notify_all()

    def _record(self, batch: list[Ended | Job]) -> list[Job]:
        ended = [e for e in batch if isinstance(e, Ended) and e.recorded is None]
        # Recorded by their job processes: reported now, never held up by the engine's troubles.
        recorded = [e for e in batch if isinstance(e, Ended) and e.recorded is not None]
        settled = [e for e in batch if isinstance(e, Job)]
        if recorded:
            settled += self.worker.record(recorded, finished=self.keep_finished)  # asks no engine
        return settled + self._store(ended) if ended else settled

    def _store(self, ended: list[Ended]) -> list[Job]:
        """Record ``ended``: retried while the engine is away; split up when it refuses them.

        A refusal that is no passing trouble (an outcome the engine cannot store,
        such as a result over the server's size limit, or a bug) must not hold
        up the others: each is then recorded on its own, and one still refused
        is recorded as a failure that says why. If even that is refused, its job
        runs again once its lease expires.
        """
        failures = 0
        while True:
            try:
                return self.worker.record(ended, finished=self.keep_finished)
            except EngineUnavailable as exc:
                failures += 1
                if self._closing and failures >= self._SHUTDOWN_TRIES:
                    log.error(
                        "%d outcome(s) not recorded (%s); those jobs run again when their leases expire",
                        len(ended),
                        exc,
                    )
                    return []
                pause = _backoff_s(failures)
                log.warning("could not record %d outcome(s): %s; retrying in %.1f s", len(ended), exc, pause)
                time.sleep(pause)
            except Exception as exc:
                if len(ended) > 1:
                    return [job for one in ended for job in self._store([one])]
                refused = _refused(ended[0], exc, self.worker.failure_ttl_s)
                job = ended[0].completion.lease.job
                if refused is None:
                    log.error(
                        "job %s: its outcome was refused too (%s); it runs again when its lease expires",
                        job.id,
                        exc,
                    )
                    return []
                log.error(
                    "job %s: its outcome was refused (%s); recording the attempt as failed", job.id, exc
                )
                ended = [refused]


#: The error type of an outcome recorded in place of one the engine refused.
_REFUSED = "OutcomeRefused"


def _refused(ended: Ended, exc: Exception, ttl_s: float) -> Ended | None:
    """A failed outcome in place of ``ended``'s, which the engine refused with ``exc``,
    kept ``ttl_s`` as failures are (not a success's retention: the failed index is
    trimmed by it); None if ``ended`` is one such already."""
    completion = ended.completion
    if completion.outcome.error is not None and completion.outcome.error.type == _REFUSED:
        return None
    message = (
        f"the attempt ended {completion.outcome.status.value}, but its outcome could not be "
        f"recorded ({type(exc).__name__}: {exc})"
    )
    outcome = Outcome(JobStatus.FAILED, error=ErrorInfo(type=_REFUSED, message=message))
    return attrs.evolve(ended, completion=attrs.evolve(completion, outcome=outcome, ttl_s=ttl_s))


class _Waker:
    """Ends the dispatcher's idle wait once the worker is asked to stop (:meth:`Engine.wake`),
    and carries out a stop asked for by a signal.

    Without it an idle worker would stop only when its wait timed out (up to
    ``poll_s``). A thread of its own, told by a byte down a socket pair,
    because the request may come from a signal handler, which must neither
    talk to the engine nor take a lock (setting an Event takes one; so does
    logging): either could wait forever on a lock held by the code it
    interrupted. A send takes none, and a send on a closed socket raises
    rather than writing to a descriptor since reused.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._done = False
        self._signal: int | None = None  # the signal that asked for the stop, if one did
        self._told, self._tell = socket.socketpair()
        self._tell.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="dtq-waker", daemon=True)

    def __enter__(self) -> _Waker:
        worker = self.worker
        worker._waker = self
        self._thread.start()
        if worker._signalled is not None:  # a signal came before the handler could find this waker
            worker._stopping.set()  # here, not in a handler: safe, and before any dispatch
            self.ask_stop(worker._signalled)  # for the log line
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done = True  # the dispatcher has returned: nothing to wake
        self.poke()
        try:
            # Not long: a wake-up stuck on an unreachable engine must not hold up the stop.
            self._thread.join(_WAKER_JOIN_S)
        finally:
            self._tell.close()
            if not self._thread.is_alive():
                self._told.close()

    def poke(self) -> None:
        """Have the thread wake the dispatcher (or, once done, end); safe in a signal handler."""
        with contextlib.suppress(OSError):  # closed, or full of pokes already
            self._tell.send(b"!")

    def ask_stop(self, signum: int) -> None:
        """Have the thread stop the worker, as :meth:`Worker.stop` does; safe in a signal handler."""
        self._signal = signum
        self.poke()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            self._told.recv(1)
        worker, signum = self.worker, self._signal
        if signum is not None:  # the stop first: a log handler may be slow
            worker._stopping.set()
            worker._end_wait_for_slot()
        if not self._done:
            try:
                worker.engine.wake(worker.worker_id)
            except DtqError as exc:  # the wait then ends at its timeout, as it would have
                log.debug("could not end the idle wait early: %s", exc)
            except Exception:
                log.exception("could not end the idle wait early (an engine's bug)")
        if signum is not None:
            name = signal.Signals(signum).name
            log.info("received %s: finishing the jobs in hand, then stopping", name)


class _Heartbeat:
    """Renews the leases of the jobs in hand and keeps the worker registered.

    It runs in a thread of its own, so a plugin that keeps the main thread busy
    cannot starve it; attempts whose job was asked to cancel, or whose lease
    was lost, are told to stop.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dtq-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.worker.heartbeat_s):
            self._beat()

    def _beat(self) -> None:
        worker = self.worker
        try:
            worker.engine.heartbeat(
                worker.worker_id, worker.describe(), ttl_s=max(3 * worker.heartbeat_s, 5.0)
            )
            worker._renew()
        except DtqError as exc:
            log.warning("heartbeat failed: %s", exc)
