"""Where a job's plugin runs: in a thread of the worker, or in a child process.

Process mode (the default) isolates jobs from the worker: a job that crashes
or leaks takes down only its child, and a job over its time limit or
cancelled that does not stop by itself (``caller.check_cancelled()``) within
``_STOP_GRACE_S`` is stopped by killing the child. Thread mode is lighter, but
a running job can only stop by itself.

Worker and child talk over a socket pair in JSON messages, never pickle (see
:mod:`dtq_core.channel`):

* child to worker, once, when it has started: ``{"op": "ready"}``;
* worker to child: ``{"op": "run", "job": <Job.to_dict() without its None fields>,
  "token": <the lease's fencing token>}`` (with ``"record": true`` for a job no
  other is expected to follow: see :meth:`ProcessRunner.last_alone`), and replies;
* child to worker: ``{"op": "progress", ...}``, ``{"op": "poll"}``,
  ``{"op": "append", "job": ...}`` (each answered), then ``{"op": "done",
  "attempt": <Attempt.to_dict()>}``, with ``"recorded": <Recorded>`` when the
  child recorded the outcome itself (see :class:`ChildRecorder`).

The worker sends the slot's next jobs while one runs, so the child starts the
next as soon as it sends ``done`` instead of waiting a round trip for it: a job
process holds at most its running job and the next ``_AHEAD``. Jobs run in the
order sent, and each job's messages come before its ``done``, so both sides
always know which job a message is about.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import inspect
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from dtq_core.caller import Caller, Control, LocalCaller, checked_progress
from dtq_core.channel import Channel
from dtq_core.engine import Lease, Outcome, Recorded, open_engine
from dtq_core.errors import (
    DtqError,
    DuplicateJob,
    EngineError,
    EngineUnavailable,
    InvalidJob,
    JobProcessError,
    PayloadTooLarge,
    PluginError,
    PluginNotAllowed,
    UnknownPlugin,
    ValidationError,
)
from dtq_core.job import ErrorInfo, Job, JobStatus, exception_message, json_encoder
from dtq_core.plugin import Plugin, PluginRegistry
from dtq_core.retry import Attempt, Ending, timeout_for

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from dtq_core.engine import Engine
    from dtq_core.queue import Queue

#: Begins the slot's next job that may run, while one runs, and returns its lease; None
#: when none is left (see ``Worker.begin``). Only a process runner calls it.
Ahead = Callable[[], "Lease | None"]

#: How often a waiting worker looks at a child's deadline and cancel flag (s).
_POLL_S = 0.05
#: How long a job that must stop (cancelled, past its time limit) has to end by itself,
#: seeing ``caller.cancelled``, before its process is killed (s).
_STOP_GRACE_S = 0.25
#: Longest wait for a new child to say it is ready (s): the interpreter starts, and
#: spawn imports the main module again (plugins load later, as jobs need them).
_START_TIMEOUT_S = 20.0
#: Jobs a child is sent beyond the one it runs, topped up as each one starts. One hides the
#: worker's round trip between jobs; more also the worker's own stalls (its other threads,
#: the GIL), so that the child seldom runs dry and sleeps. Measured with benchmarks/pipe.py
#: (no-op jobs): 8 ran about 10% faster than 2 and 16; topping up only once fewer than 2
#: were left, 8 at a time in one write, ran about 40% slower (the child ran dry in between).
_AHEAD = 8


#: A result as ``json.dumps(value, allow_nan=False)`` writes it (see :func:`json_encoder`).
_encode_result = json_encoder(allow_nan=False)


def call_plugin(plugin: Plugin, job: Job, caller: Caller) -> Attempt:
    """Run ``plugin.process`` (plain or ``async``) and classify how it ended."""
    process: Callable[..., Any] = plugin.process
    try:
        value = process(job, caller) if _wants_caller(type(plugin)) else process(job)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
    except (Exception, SystemExit) as exc:
        # SystemExit too (sys.exit, argparse on bad arguments): in a thread it would end
        # the slot's thread without a word, in a job process the process; either way the
        # job's own failure is the honest outcome.
        return Attempt.from_exception(exc)
    try:
        return Attempt(Ending.OK, result_json=_encode_result(value))
    except (TypeError, ValueError, RecursionError) as exc:
        message = (
            f"plugin {job.plugin!r} returned a value JSON cannot carry ({exc}); return dicts, "
            "lists, strings, numbers, booleans or None"
        )
        return Attempt(Ending.PERMANENT, error=ErrorInfo(type="ResultNotJSON", message=message))


async def _awaited(value: Any) -> Any:
    return await value


_WANTS_CALLER: dict[type[Plugin], bool] = {}


def _wants_caller(cls: type[Plugin]) -> bool:
    if cls not in _WANTS_CALLER:
        parameters = inspect.signature(cls.process).parameters
        _WANTS_CALLER[cls] = len(parameters) >= 3  # self, job, caller
    return _WANTS_CALLER[cls]


def unrunnable(exc: PluginError) -> Attempt:
    """The ending of a job whose plugin cannot run on this worker."""
    return Attempt(Ending.UNRUNNABLE, error=ErrorInfo.from_exception(exc))


def timed_out(limit_s: float) -> Attempt:
    """The ending of an attempt stopped at its time limit."""
    return Attempt(
        Ending.TIMEOUT,
        error=ErrorInfo(type="JobTimeout", message=f"the attempt ran past its time limit of {limit_s:g} s"),
    )


def stopped_by_cancel() -> Attempt:
    """The ending of an attempt stopped because its job was cancelled."""
    return Attempt(Ending.CANCELLED, error=ErrorInfo(type="Cancelled", message="the job was cancelled"))


class ThreadRunner:
    """Runs plugins in the calling thread of the worker's process."""

    generation = 0  # never replaced: nothing is sent ahead (see ProcessRunner.generation)
    recorded = None  # the worker records every outcome (see ProcessRunner.recorded)

    def last_alone(self, lease: Lease | None) -> None:
        """Nothing to do: the worker records every outcome (see ProcessRunner.last_alone)."""

    def __init__(self, registry: PluginRegistry, engine: Engine, queue: Queue) -> None:
        self.registry = registry
        self.engine = engine
        self.queue = queue

    def run(
        self, control: Control, limit_s: float | None, plugin: Plugin, ahead: Ahead | None = None
    ) -> Attempt | None:
        """Run the job; the result is discarded if it finished past its time limit.

        ``ahead`` is not called: a thread runs one job at a time, nothing to overlap.
        """
        caller = LocalCaller(control, self.engine, self.queue)
        return _settled(call_plugin(plugin, control.lease.job, caller), control, limit_s)

    def holds(self, lease: Lease) -> bool:
        """Never: nothing is sent ahead to a thread."""
        return False

    def kill(self) -> None:
        """A thread cannot be stopped from outside: its late completion is fenced off."""

    def close(self) -> None:
        """Nothing to release."""


class ProcessRunner:
    """Runs plugins in a child process of its own, started on first use and after a kill.

    With ``recorder`` (see :class:`ChildRecorder`), the child records the success
    of a job no other follows itself (see :meth:`last_alone`): :attr:`recorded`
    then says how the engine took it, and the worker must not record it again.
    """

    def __init__(
        self,
        registry: PluginRegistry,
        engine: Engine,
        queue: Queue,
        recorder: Mapping[str, Any] | None = None,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.queue = queue
        self.recorder = recorder
        #: How the engine took the outcome of the job :meth:`run` ran last, when its child
        #: recorded it; None when the worker is to record it.
        self.recorded: Recorded | None = None
        self._alone: tuple[str, str] | None = None  # see last_alone
        self._process: BaseProcess | None = None
        self._conn: Channel | None = None
        self._sent: deque[tuple[str, str]] = deque()  # sent ahead, not started: (job id, token)
        self._killed = False  # by kill() at shutdown, from another thread: no job runs any more
        #: Counts the children stopped: jobs sent ahead to one are sent again to the next.
        self.generation = 0
        self._failed_starts = 0  # in a row

    def last_alone(self, lease: Lease | None) -> None:
        """Name the job that no other is expected to follow (the last of a share after which
        the queue looked empty): its child may record its success (see :class:`ChildRecorder`).

        Only that one: a child that ran dry between jobs of a busy queue would
        record each of its jobs alone, a script call each, where the worker
        records them in batches (group commit).
        """
        self._alone = None if lease is None else _key(lease)

    def run(
        self, control: Control, limit_s: float | None, plugin: Plugin, ahead: Ahead | None = None
    ) -> Attempt | None:
        """Run the job in the child (which loads ``plugin`` itself); None when the child died.

        Once the child has the job, ``ahead`` begins the next ones (up to
        ``_AHEAD`` in the child), which are sent at once, in one write: the
        child starts the first when this one ends.
        """
        lease = control.lease
        self.recorded = None
        if self._killed:
            self.abort()
            return None  # the worker gave its jobs back and stopped this runner: start no child
        if self._sent and self._sent[0] != _key(lease):
            self.abort()  # the child holds a job its slot no longer runs (not expected)
        conn = self._ensure_child()
        try:
            if self._sent:
                self._sent.popleft()  # sent ahead while the previous job ran
            else:
                _send_jobs(conn, [lease], self._alone)
            _send_jobs(conn, self._begin_ahead(ahead), self._alone)
            return self._supervise(conn, control, limit_s)
        except (OSError, ValueError):
            self.abort()  # the pipe broke: the child is gone
            return self._recorded_before_death(control)
        except BaseException:
            # Anything else (the engine down while serving a request, a bug): the
            # child may still be busy with this job, so it must not get the next one.
            self.abort()
            raise

    def _begin_ahead(self, ahead: Ahead | None) -> list[Lease]:
        """The next jobs, begun by ``ahead``, to fill the child up to ``_AHEAD`` (counted as sent)."""
        following: list[Lease] = []
        while ahead is not None and len(self._sent) < _AHEAD and (lease := ahead()) is not None:
            following.append(lease)
            self._sent.append(_key(lease))
        return following

    def _supervise(self, conn: Channel, control: Control, limit_s: float | None) -> Attempt | None:
        kill_at: float | None = None
        while True:
            stop = _must_stop(control, limit_s)
            if stop is not None and kill_at is None:
                # The job sees caller.cancelled turn true: one that ends by itself (or had
                # ended) keeps its process, which may hold the next jobs already.
                kill_at = time.monotonic() + _STOP_GRACE_S
            if kill_at is not None and time.monotonic() >= kill_at:
                return self._last_word(conn, control, limit_s, stop)
            wait_s = _POLL_S if kill_at is None else min(_POLL_S, kill_at - time.monotonic())
            message = self._receive(conn, timeout_s=max(0.0, wait_s))
            if message is _DIED:
                self.abort()
                return self._recorded_before_death(control)
            if message is None:
                continue
            if message.get("op") == "done":
                return self._done(message, control, limit_s)
            conn.send([self._answer(control, message)])

    def _done(self, message: Mapping[str, Any], control: Control, limit_s: float | None) -> Attempt:
        """The attempt a ``done`` message reports; :attr:`recorded` set if the child recorded it."""
        recorded = message.get("recorded")
        if isinstance(recorded, int) and recorded in Recorded.__members__.values():
            self.recorded = Recorded(recorded)
        return _settled(Attempt.from_dict(message["attempt"]), control, limit_s)

    def _last_word(
        self, conn: Channel, control: Control, limit_s: float | None, stop: Attempt | None
    ) -> Attempt | None:
        """Past the grace: the outcome if the child sent it already, else kill the child.

        Requests still waiting go unanswered, so a job that keeps asking cannot put
        the kill off. What has arrived is read whole first: an outcome larger
        than one read still counts.
        """
        with contextlib.suppress(EOFError, OSError):
            conn.drain()
        while isinstance(message := self._receive(conn, timeout_s=0), dict):
            if message.get("op") == "done":
                return self._done(message, control, limit_s)
        self.abort()
        return self._recorded_before_death(control) or stop

    def _recorded_before_death(self, control: Control) -> Attempt | None:
        """The success of the job, if its child recorded it and then died (or was killed: past a
        grace period, cancelled) before it could say so; else None.

        Only the job named by :meth:`last_alone` may have been recorded: the
        engine is asked then. Otherwise the worker would report the success
        stored as cancelled, or as lost and handed back.
        """
        lease = control.lease
        if self.recorder is None or self._alone != _key(lease):
            return None
        job = recorded_success(self.engine, lease)
        if job is None:
            return None
        self.recorded = Recorded.STORED
        return Attempt(Ending.OK, result_json=_encode_result(job.result))

    def holds(self, lease: Lease) -> bool:
        """Whether a live child has this job, sent ahead, to run next."""
        process = self._process
        return (
            not self._killed
            and bool(self._sent)
            and self._sent[0] == _key(lease)
            and process is not None
            and process.is_alive()  # can still be True for a moment after kill()
        )

    def abort(self) -> None:
        """Kill the child and forget it (a new one starts for the next job); from the slot's thread.

        A job sent ahead goes with it: it is sent again to the next child.
        """
        if self._process is not None and self._process.pid is not None:  # None: it never started
            self._process.kill()
            self._process.join(5)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None
        self._sent.clear()
        self.generation += 1

    def kill(self) -> None:
        """Kill the child from another thread; the slot's thread notices and cleans up."""
        self._killed = True
        process = self._process
        if process is not None and process.pid is not None:
            process.kill()

    def close(self) -> None:
        """Stop the child (once the slot's thread is done with it)."""
        self.abort()

    def _receive(self, conn: Channel, *, timeout_s: float = _POLL_S) -> Any:
        """The child's next message; None if none came (whole) within ``timeout_s``.

        While it waits, what is still unsent goes as the child makes room.
        """
        process = self._process
        try:
            message = conn.take()
            if message is None:
                if not conn.poll(timeout_s):
                    return None if process is not None and process.is_alive() else _DIED
                message = conn.take()
            return message
        except (EOFError, OSError, ValueError):
            return _DIED

    def _ensure_child(self) -> Channel:
        if self._process is None or self._conn is None or not self._process.is_alive():
            self.abort()
            context = multiprocessing.get_context("spawn")
            parent, child = context.Pipe()
            allow = list(self.registry.allow) if self.registry.allow is not None else None
            args = (child, allow, os.getpid(), self.registry.config, self.recorder)
            self._process = context.Process(target=child_main, args=args, daemon=True)
            # Born with the stop signals blocked: one that comes while it starts (the
            # whole group signalled) waits until it ignores them (child_main), not killing it.
            unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                self._process.start()
            except Exception as exc:
                parent.close()
                self._process = None
                raise self._start_failed(_not_started(exc)) from exc
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
                child.close()
            self._conn = Channel(parent, blocking=False)
            self._await_ready(self._conn)
        return self._conn

    def _await_ready(self, conn: Channel) -> None:
        """Wait for a new child's ``ready``; if it dies or stays silent, kill it and raise JobProcessError."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            message = self._receive(conn)
            if isinstance(message, dict) and message.get("op") == "ready":
                self._failed_starts = 0
                return
            if message is None and time.monotonic() <= deadline:
                continue
            process = self._process
            code = None  # it died (not stopped by abort, below, for its silence): its exit code
            if message is not None and process is not None:
                process.join(5)  # its pipe closed as it exits: let it, for its exit code
                code = process.exitcode
            self.abort()
            if code is not None and code < 0:
                # Stopped from outside: it had no error of its own to write, and its code is not the cause.
                name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
                raise self._start_failed(
                    f"a job process was killed by {name} as it started (the kernel's out-of-memory "
                    "killer, or someone's kill); check the machine's memory and its log (dmesg)"
                )
            if message is None:
                problem = f"did not say it was ready within {_START_TIMEOUT_S:g} s"
            else:
                problem = (
                    f"failed as it started (exit code {code}); its error is in the worker's output above"
                )
            raise self._start_failed(
                f"a job process {problem}. A script that runs a process-mode Worker must keep its "
                'code under `if __name__ == "__main__":` (children are started with spawn, which '
                "imports the script again); mode='thread' starts none"
            )

    def _start_failed(self, message: str) -> JobProcessError:
        self._failed_starts += 1
        return JobProcessError(message, in_a_row=self._failed_starts)

    def _answer(self, control: Control, message: dict[str, Any]) -> dict[str, Any]:
        """The reply to a request of the running job: progress, poll or append.

        A request that fails (the engine away, a job refused) is answered with its
        error, which the job's call raises there, as in thread mode: the job's
        process is not to blame, and must not be stopped as if it had died.
        """
        op = message.get("op")
        if op not in ("progress", "poll", "append"):
            raise ValueError(f"a job process sent an unknown request {op!r}")  # run() kills it
        try:
            if op == "progress":
                return self._on_progress(control, message)
            if op == "append":
                return {"job": self.queue.append(message["job"]).to_dict()}
            return {"cancel": control.should_stop}
        except Exception as exc:  # a bug here too: the job fails with it, its process lives on
            return _failed_request(exc)

    def _on_progress(self, control: Control, message: dict[str, Any]) -> dict[str, Any]:
        fraction, text = checked_progress(message.get("fraction"), message.get("message"))
        _held, cancel = self.engine.progress(control.lease, fraction, text)
        if cancel:
            control.cancel.set()
        return {"cancel": control.should_stop}


_DIED = object()
#: What stops a worker, and must not stop its job processes (the worker stops them, after its grace).
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _must_stop(control: Control, limit_s: float | None) -> Attempt | None:
    """The ending of an attempt that must stop now (cancelled, or past its time limit), else None."""
    return stopped_by_cancel() if control.cancel.is_set() else _over_limit(control, limit_s)


def _over_limit(control: Control, limit_s: float | None) -> Attempt | None:
    """The ending of an attempt past its time limit, else None."""
    if limit_s is not None and control.deadline is not None and time.monotonic() > control.deadline:
        return timed_out(limit_s)
    return None


def _settled(attempt: Attempt, control: Control, limit_s: float | None) -> Attempt:
    """How an attempt that ended counts, in either mode: a cancelled job's failure is its
    cancellation (a success stands); past its time limit, its result is discarded."""
    if control.cancel.is_set() and attempt.ending is not Ending.OK:
        return stopped_by_cancel()
    return _over_limit(control, limit_s) or attempt


#: The errors a job's request may end with, raised in its process as its worker raised them
#: (so that ``except DuplicateJob`` works as in thread mode); others as their nearest base here,
#: or as the built-in exception they are (a plugin's validate may raise ValueError).
_REQUEST_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        DtqError,
        InvalidJob,
        ValidationError,
        PayloadTooLarge,
        DuplicateJob,
        PluginError,
        PluginNotAllowed,
        UnknownPlugin,
        EngineError,
        EngineUnavailable,
    )
}


def _failed_request(exc: Exception) -> dict[str, Any]:
    """The reply to a request the worker could not serve: the error, to raise in the job's process."""
    message = exception_message(exc)
    # Its own class if the job's process can make it, else the nearest base it can (a
    # JSONDecodeError as a ValueError), named in the message.
    base = next(cls for cls in type(exc).__mro__ if _rebuilt(cls))
    if base is not type(exc):
        message = f"{type(exc).__qualname__}: {message}"
    reply = {"error": message, "error_type": base.__name__}
    for detail in ("job_id", "plugin"):  # DuplicateJob's and PluginError's
        if isinstance(getattr(exc, detail, None), str):
            reply[detail] = getattr(exc, detail)
    return reply


def _rebuilt(cls: type) -> bool:
    """Whether the job's process makes errors of this class again: dtq's or Python's own."""
    return _REQUEST_ERRORS.get(cls.__name__) is cls or getattr(builtins, cls.__name__, None) is cls


def _request_error(reply: Mapping[str, Any]) -> Exception:
    """:func:`_failed_request`'s error, rebuilt in the job's process."""
    name, message = str(reply.get("error_type")), str(reply["error"])
    cls = _REQUEST_ERRORS.get(name) or getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = DtqError
    if issubclass(cls, DuplicateJob):
        return cls(message, job_id=str(reply.get("job_id", "")))
    if issubclass(cls, PluginError):
        return cls(message, plugin=str(reply.get("plugin", "")))
    try:
        return cls(message)
    except Exception:  # a built-in that takes other arguments (UnicodeDecodeError, say)
        return DtqError(f"{name}: {message}")


def _send_jobs(conn: Channel, leases: list[Lease], alone: tuple[str, str] | None) -> None:
    """Send ``leases`` to run; the one whose key is ``alone`` may be recorded by the child."""
    if leases:
        # A field left out is None (Job.from_dict's default for every field that may be
        # None): a leased job's message is about half as long, quicker to write and read.
        conn.send([_run_message(lease, _key(lease) == alone) for lease in leases])


def _run_message(lease: Lease, alone: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"op": "run", "job": _present(lease.job.to_dict()), "token": lease.token}
    if alone:
        message["record"] = True
    return message


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def _key(lease: Lease) -> tuple[str, str]:
    return (lease.job.id, lease.token)


def _not_started(exc: Exception) -> str:
    """Why a job process could not start, and what to do about it."""
    if isinstance(exc, RuntimeError) and "bootstrapping phase" in str(exc):
        # multiprocessing's spawn imports the main module again in the child.
        return (
            "could not start a job process: the script that runs the Worker is being imported again "
            "by its child (process mode starts children with multiprocessing's spawn). Put the "
            "script's code under `if __name__ == \"__main__\":`, or use mode='thread'"
        )
    return (
        f"could not start a job process ({type(exc).__name__}: {exc}); check the worker's limits "
        "(processes, memory, open files), or use mode='thread'"
    )


# --- the child process ---------------------------------------------------------


class ChildCaller(Caller):
    """The caller of a job running in a child process: asks its worker over the pipe."""

    def __init__(self, job: Job, conn: Channel, pending: deque[dict[str, Any]]) -> None:
        super().__init__(job)
        self._conn = conn
        self._pending = pending

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Send progress to the worker, which records it."""
        fraction, message = checked_progress(fraction, message)  # the job's own mistake: raised here
        self._ask({"op": "progress", "fraction": fraction, "message": message})

    @property
    def cancelled(self) -> bool:
        """Ask the worker whether the job should stop."""
        return bool(self._ask({"op": "poll"})["cancel"])

    def append(self, job: Mapping[str, Any]) -> Job:
        """Have the worker append a follow-up job."""
        return Job.from_dict(self._ask({"op": "append", "job": dict(job)})["job"])

    def _ask(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """The worker's reply; the error it answered with, raised.

        Raises:
            DtqError: the worker could not serve the request (see :func:`_failed_request`).
        """
        self._conn.send([message])
        while True:
            reply: dict[str, Any] = self._conn.receive()
            if reply.get("op") == "run":
                self._pending.append(reply)  # the next job, sent ahead: it runs after this one
                continue
            if "error" in reply:
                raise _request_error(reply)
            return reply


class ChildRecorder:
    """A job process's own engine, to record a success the moment it ends.

    A job's outcome otherwise goes back to the worker, which records it: for a
    lone job (none after it in the child) that is a wake-up of the worker and
    its work on the way from the job's end to the producer who waits for it,
    about a fifth of a lone job's latency in process mode (measured). Only a
    success, of a job with no time limit (which the worker's clock decides),
    with a result within ``max_result_bytes``: the worker decides every other
    ending (retries, timeouts, cancellations, oversize results).

    ``spec`` (made by the worker): ``url``, ``options`` (the engine's,
    with ``prefix`` and ``namespace``), ``result_ttl_s``, ``max_result_bytes``.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        self._engine: Engine | None = None

    def open(self) -> None:
        """Open the engine (once the worker was told the process is ready: a Cluster's engine
        asks its nodes as it opens, which must not hold up the start). On failure the worker
        records every outcome."""
        try:
            self._engine = open_engine(str(self.spec["url"]), **self.spec["options"])
        except Exception as exc:  # the worker opened it alike: a passing trouble (a Cluster away)
            log.warning("a job process could not open the engine (%s); its worker records the outcomes", exc)

    def record(self, job: Job, token: object, plugin: Plugin, attempt: Attempt) -> Recorded | None:
        """Record ``attempt`` if it is this kind of success; None when the worker is to record it."""
        result, engine = attempt.result_json, self._engine
        if (
            engine is None
            or attempt.ending is not Ending.OK
            or not isinstance(token, str)
            or timeout_for(plugin, job) is not None
            or bytes_over(result, int(self.spec["max_result_bytes"])) is not None
        ):
            return None
        outcome = Outcome(JobStatus.SUCCEEDED, result_json=result)
        try:
            return Recorded(int(engine.complete(Lease(job, token), outcome, ttl_s=self.spec["result_ttl_s"])))
        except DtqError:
            # Unreachable now, or refused: the worker records it (again, if it was stored and
            # the reply lost: a repeated completion is answered as the first).
            return None


def recorded_success(engine: Engine, lease: Lease) -> Job | None:
    """The job as stored, if this very delivery of it ended succeeded; else None (also when the
    engine cannot say now).

    A job process may have recorded it (:class:`ChildRecorder`) without its
    worker knowing yet. The delivery is told by its worker and attempt number:
    a delivery handed back unstarted never ran, so it cannot have succeeded.
    """
    try:
        job = engine.get(lease.job.id)
    except DtqError:
        return None
    if (
        job is not None
        and job.status is JobStatus.SUCCEEDED
        and job.worker == lease.job.worker
        and job.attempts == lease.job.attempts
    ):
        return job
    return None


def bytes_over(result: str | None, most_bytes: int) -> int | None:
    """A result JSON's size in bytes (UTF-8) when it is over ``most_bytes``; None when within."""
    # A character is at most four bytes: most results are told apart without encoding them.
    if result is None or len(result) * 4 <= most_bytes:
        return None
    size = len(result.encode("utf-8", "surrogatepass"))
    return size if size > most_bytes else None


def child_main(
    conn: Connection,
    allow: list[str] | None,
    worker_pid: int,
    config: dict[str, dict[str, Any]],
    recorder: Mapping[str, Any] | None = None,
) -> None:
    """Entry point of a job process: run jobs the worker sends until the pipe closes."""
    _die_with_parent(worker_pid)
    # The worker decides when jobs stop, after its grace period: a signal to the whole
    # process group (Ctrl-C; systemd's stop sends SIGTERM to every process of the service)
    # must not kill the job at once, and count as a lost lease.
    for stop in _STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked as it was started
    registry = PluginRegistry(allow, config=config)
    own = ChildRecorder(recorder) if recorder is not None else None
    channel = Channel(conn, blocking=True)
    pending: deque[dict[str, Any]] = deque()  # run messages read while a job asked something
    channel.send([{"op": "ready"}])
    if own is not None:
        own.open()
    while True:
        try:
            message = pending.popleft() if pending else channel.receive()
        except (EOFError, OSError):
            return
        channel.send([_ran(message, registry, channel, pending, own)])


def _ran(
    message: Mapping[str, Any],
    registry: PluginRegistry,
    channel: Channel,
    pending: deque[dict[str, Any]],
    own: ChildRecorder | None,
) -> dict[str, Any]:
    """Run the job of a ``run`` message in a job process; the ``done`` message to send."""
    job = Job.from_dict(message["job"], check=False)  # its worker checked it as it leased it
    done: dict[str, Any] = {"op": "done"}
    try:
        plugin = registry.get(job.plugin)
    except PluginError as exc:
        attempt = unrunnable(exc)
    else:
        attempt = call_plugin(plugin, job, ChildCaller(job, channel, pending))
        # Only a job the worker named, and with none come after it: see ProcessRunner.last_alone.
        if own is not None and message.get("record") and not pending and not channel.ready():
            recorded = own.record(job, message.get("token"), plugin, attempt)
            if recorded is not None:
                done["recorded"] = int(recorded)
    done["attempt"] = attempt.to_dict()
    return done


def _die_with_parent(worker_pid: int) -> None:
    # Linux: the kernel kills this process when its worker dies, so a job never
    # runs on unsupervised after a SIGKILL of the worker.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != worker_pid:  # the worker died before the line above took effect
        os._exit(1)


Runner = ThreadRunner | ProcessRunner
