"""The consumer side: take jobs, hand each to its plugin, record the outcome.

A worker only takes jobs from the queues of plugins it has installed and
allows. Every job it takes is leased, not removed; a heartbeat thread renews the
leases of the jobs in hand, so a long job is never given to a second worker
while its worker lives, and a dead worker's jobs come back once their lease
runs out (any live worker requeues them).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import Any

import attrs

from dtq_core.config import (
    DEFAULT_FAILURE_TTL_S,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_LOST_LEASES,
    DEFAULT_PREFIX,
    DEFAULT_RESULT_TTL_S,
    mask_url,
    namespace_from_env,
)
from dtq_core.engine import Engine, Lease, Outcome, resolve_engine
from dtq_core.errors import DtqError, EngineUnavailable, PluginError
from dtq_core.job import ErrorInfo, Job, JobStatus
from dtq_core.plugin import PluginRegistry

log = logging.getLogger("dtq.worker")

#: Longest pause between attempts to reach an engine that is down (seconds).
_MAX_BACKOFF_S = 5.0


class Worker:
    """Processes jobs of the plugins it serves.

    Args:
        plugins: the plugins to serve (the allow-list). Every one must load, or
            the worker refuses to start. ``None`` serves every installed plugin
            that loads; the others are reported and their jobs stay queued.
        url: engine URL; default ``$DTQ_URL``, then ``redis://localhost:6379/0``.
        engine: an engine instance or subclass instead of the URL's.
        namespace, prefix: must match the producers'.
        lease_s: how long a job stays leased without renewal; renewed every
            third of it, so a dead worker's jobs come back within about this.
        max_lost_leases: deliveries whose worker died before the job is dead.
        result_ttl_s: how long a succeeded job's record is kept.
        failure_ttl_s: how long a failed or dead job's record is kept.
        poll_s: longest idle wait before the worker looks for expired leases.
        worker_id: how this worker names itself in leases (host:pid:random).
        engine_options: further engine attributes to override.
    """

    def __init__(
        self,
        plugins: Iterable[str] | None = None,
        url: str | None = None,
        *,
        engine: Engine | type[Engine] | None = None,
        namespace: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        lease_s: float = DEFAULT_LEASE_S,
        max_lost_leases: int = DEFAULT_MAX_LOST_LEASES,
        result_ttl_s: float = DEFAULT_RESULT_TTL_S,
        failure_ttl_s: float = DEFAULT_FAILURE_TTL_S,
        poll_s: float = 1.0,
        worker_id: str | None = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.registry = PluginRegistry(plugins)
        self.plugins = self._loadable_plugins()
        self.engine = resolve_engine(
            engine, url, prefix=prefix, namespace=namespace_from_env(namespace), **dict(engine_options or {})
        )
        self.lease_s = lease_s
        self.max_lost_leases = max_lost_leases
        self.result_ttl_s = result_ttl_s
        self.failure_ttl_s = failure_ttl_s
        self.poll_s = poll_s
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._in_hand: dict[str, Lease] = {}
        self._in_hand_lock = threading.Lock()
        self._stopping = threading.Event()
        self._next_recovery = 0.0

    # --- public ------------------------------------------------------------------

    def get_jobs(self) -> list[Job]:
        """Process every job available now, then return them in their final state.

        The original design's name for a burst: expired leases are recovered
        first, so jobs of dead workers are included.
        """
        done: list[Job] = []
        with _Heartbeat(self):
            self._recover()
            while not self._stopping.is_set():
                leases = self._fetch()
                if not leases:
                    break
                done.extend(self._run(lease) for lease in leases)
        return done

    def work(self, *, burst: bool = False) -> None:
        """Process jobs until SIGTERM or SIGINT (or, with ``burst``, until none is left).

        On the first signal the worker finishes the job in hand and returns; a
        second signal stops it at once (the job's lease then expires and it is
        delivered again). A lost connection is retried with backoff, forever.
        """
        restore = self._install_signal_handlers()
        log.info(
            "worker %s serving %s on %s", self.worker_id, ", ".join(self.plugins), _engine_name(self.engine)
        )
        try:
            with _Heartbeat(self):
                self._loop(burst)
        finally:
            restore()
        log.info("worker %s stopped", self.worker_id)

    def stop(self) -> None:
        """Ask the worker to stop after the job in hand (thread-safe)."""
        self._stopping.set()

    def in_hand(self) -> list[Lease]:
        """The leases of the jobs this worker is running now."""
        with self._in_hand_lock:
            return list(self._in_hand.values())

    # --- the loop ----------------------------------------------------------------

    def _loop(self, burst: bool) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._step(burst):
                    return
                failures = 0
            except EngineUnavailable as exc:
                if burst:
                    raise
                failures += 1
                pause = min(_MAX_BACKOFF_S, 0.1 * 2**failures)
                log.warning("%s; retrying in %.1f s", exc, pause)
                self._stopping.wait(pause)

    def _step(self, burst: bool) -> bool:
        """One turn of the loop; False when a burst has run out of jobs."""
        if time.monotonic() >= self._next_recovery:
            self._recover()
        leases = self._fetch()
        if leases:
            for lease in leases:
                self._run(lease)
            return True
        if burst:
            return False
        self.engine.wait_for_jobs(self.plugins, self.poll_s)
        return True

    def _fetch(self) -> list[Lease]:
        leases = self.engine.fetch(self.plugins, count=1, lease_s=self.lease_s, worker_id=self.worker_id)
        # Rotate so that one busy plugin cannot starve the others.
        self.plugins = self.plugins[1:] + self.plugins[:1]
        return leases

    def _recover(self) -> None:
        for plugin in self.plugins:
            count = self.engine.recover(
                plugin, max_lost_leases=self.max_lost_leases, ttl_s=self.failure_ttl_s
            )
            if count:
                log.warning("recovered %d job(s) of %s whose worker stopped renewing", count, plugin)
        self._next_recovery = time.monotonic() + max(0.05, self.lease_s / 4)

    # --- one job -----------------------------------------------------------------

    def _run(self, lease: Lease) -> Job:
        job = lease.job
        with self._in_hand_lock:
            self._in_hand[job.id] = lease
        started = time.monotonic()
        try:
            outcome = self._process(job)
            ttl = self.result_ttl_s if outcome.status is JobStatus.SUCCEEDED else self.failure_ttl_s
            stored = self.engine.complete(lease, outcome, ttl_s=ttl)
        finally:
            with self._in_hand_lock:
                self._in_hand.pop(job.id, None)
        self._log_outcome(job, outcome, stored, time.monotonic() - started)
        result = None if outcome.result_json is None else json.loads(outcome.result_json)
        return attrs.evolve(job, status=outcome.status, result=result, error=outcome.error)

    def _process(self, job: Job) -> Outcome:
        try:
            value = self.registry.get(job.plugin).process(job)
        except Exception as exc:
            return Outcome(JobStatus.FAILED, error=ErrorInfo.from_exception(exc))
        try:
            return Outcome(JobStatus.SUCCEEDED, result_json=json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            error = ErrorInfo(
                type="ResultNotJSON",
                message=(
                    f"plugin {job.plugin!r} returned a value JSON cannot carry ({exc}); return "
                    "dicts, lists, strings, numbers, booleans or None"
                ),
            )
            return Outcome(JobStatus.FAILED, error=error)

    def _log_outcome(self, job: Job, outcome: Outcome, stored: bool, duration_s: float) -> None:
        if not stored:
            log.warning(
                "job %s (%s) attempt %d: lease lost before completion; outcome discarded, "
                "the job's current owner decides",
                job.id,
                job.plugin,
                job.attempts,
            )
            return
        error = "" if outcome.error is None else f": {outcome.error.type}: {outcome.error.message}"
        level = logging.INFO if outcome.status is JobStatus.SUCCEEDED else logging.WARNING
        log.log(
            level,
            "job %s (%s) attempt %d %s in %.3f s%s",
            job.id,
            job.plugin,
            job.attempts,
            outcome.status.value,
            duration_s,
            error,
        )

    # --- set-up ------------------------------------------------------------------

    def _loadable_plugins(self) -> list[str]:
        names = self.registry.names()
        if self.registry.allow is not None:
            for name in names:
                self.registry.get(name)  # an explicitly named plugin must load: fail fast
            return names
        loadable = []
        for name in names:
            try:
                self.registry.get(name)
            except PluginError as exc:
                log.error("not serving %s: %s", name, exc)
            else:
                loadable.append(name)
        if not loadable:
            raise PluginError(
                "no installed plugin loads, so there is nothing to serve; install one "
                "(pip install dtq-plugin-...) and check it with `dtq plugins`",
                plugin="",
            )
        return loadable

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(signum: int, _frame: FrameType | None) -> None:
            if self._stopping.is_set():
                raise SystemExit(128 + signum)
            log.info("received %s: finishing the job in hand, then stopping", signal.Signals(signum).name)
            self._stopping.set()

        for sig in previous:
            signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


class _Heartbeat:
    """Renews the leases of the jobs in hand from a thread of its own.

    A plugin that keeps the main thread busy cannot starve it: pure-Python code
    yields the interpreter lock every few milliseconds.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.interval_s = worker.lease_s / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dtq-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            leases = self.worker.in_hand()
            if not leases:
                continue
            try:
                lost = self.worker.engine.renew(leases, self.worker.lease_s)
            except DtqError as exc:
                log.warning("could not renew leases: %s", exc)
                continue
            for job_id in lost:
                log.warning("job %s: lease lost; another worker may run it", job_id)


def _engine_name(engine: Engine) -> str:
    return mask_url(str(getattr(engine, "url", type(engine).__name__)))
