"""The caller: what a running plugin can reach of the queue that runs it.

The original design gives each plugin a ``caller``. A plugin that declares
``process(self, job, caller)`` receives one per job; ``process(self, job)``
keeps working unchanged.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from dtq_core.errors import Cancelled
from dtq_core.job import is_utf8

if TYPE_CHECKING:
    from dtq_core.engine import Engine, Lease
    from dtq_core.job import Job
    from dtq_core.queue import Queue


class Caller(abc.ABC):
    """A running job's handle on dtq: progress, cancellation, follow-up jobs."""

    def __init__(self, job: Job) -> None:
        self.job = job

    @abc.abstractmethod
    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Report how far the job has got (``fraction`` from 0 to 1) and a short message.

        ``Queue.get`` and ``dtq status`` show both while the job runs.
        """

    @property
    @abc.abstractmethod
    def cancelled(self) -> bool:
        """True once the job's cancellation was requested or its time limit passed."""

    @abc.abstractmethod
    def append(self, job: Mapping[str, Any]) -> Job:
        """Append a follow-up job (the wire format, as :meth:`dtq_core.Queue.append`)."""

    def enqueue(self, plugin: str, data: Mapping[str, Any], **options: Any) -> Job:
        """Append a follow-up job from keywords (as :meth:`dtq_core.Queue.enqueue`)."""
        job_id = options.pop("id", None)
        return self.append({"id": job_id, "job": {"plugin": plugin, "data": dict(data)}, "options": options})

    def check_cancelled(self) -> None:
        """Raise :class:`dtq_core.Cancelled` if the job should stop; call it between steps."""
        if self.cancelled:
            raise Cancelled(f"job {self.job.id!r} was cancelled or ran out of time")


def checked_progress(fraction: object, message: object) -> tuple[float | None, str | None]:
    """:meth:`Caller.progress`'s arguments as the engine stores them.

    Raises:
        TypeError, ValueError: ``fraction`` is not a number, or ``message`` not text that
            UTF-8 can carry (a lone surrogate would spoil the job's stored record).
    """
    if fraction is not None:
        wrong = TypeError(f"caller.progress(fraction=...) takes a number from 0 to 1, got {fraction!r}")
        if isinstance(fraction, (bool, str, bytes)):  # float() would take "0.5" and True
            raise wrong
        try:
            fraction = float(fraction)  # type: ignore[arg-type]  # any number: Decimal, numpy's
        except (TypeError, ValueError, OverflowError):
            raise wrong from None
        if not math.isfinite(fraction):  # JSON has no NaN: the job's record could not be read back
            raise ValueError(f"caller.progress(fraction=...) must be a finite number, got {fraction!r}")
    if message is not None:
        if not isinstance(message, str):
            raise TypeError(f"caller.progress(message=...) takes text or None, got {type(message).__name__}")
        if not is_utf8(message):
            raise ValueError(
                "caller.progress(message=...) holds text that is not valid Unicode (a lone surrogate "
                "such as '\\ud800'), which the job's record cannot carry"
            )
    return fraction, message


class Flag:
    """A switch any thread may turn on and read: a ``threading.Event`` for what is never
    waited on. An Event builds a Condition and its lock, a few µs for every job run."""

    __slots__ = ("_on",)

    def __init__(self) -> None:
        self._on = False

    def set(self) -> None:
        """Turn it on (for good): one attribute write, atomic under the GIL."""
        self._on = True

    def is_set(self) -> bool:
        """Whether it was turned on."""
        return self._on


@attrs.define
class Control:
    """What the worker and a running job share: its lease, deadline and cancel flag."""

    lease: Lease
    deadline: float | None = None  # time.monotonic() value
    cancel: Flag = attrs.field(factory=Flag)

    @property
    def should_stop(self) -> bool:
        """Cancellation requested, or past the deadline."""
        return self.cancel.is_set() or (self.deadline is not None and time.monotonic() > self.deadline)


class LocalCaller(Caller):
    """The caller of a job running in the worker's own process (thread mode)."""

    def __init__(self, control: Control, engine: Engine, queue: Queue) -> None:
        super().__init__(control.lease.job)
        self._control = control
        self._engine = engine
        self._queue = queue

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Record progress in the engine (under the job's lease)."""
        fraction, message = checked_progress(fraction, message)
        _held, cancel = self._engine.progress(self._control.lease, fraction, message)
        if cancel:
            self._control.cancel.set()

    @property
    def cancelled(self) -> bool:
        """Whether the worker was told to cancel, or the time limit passed."""
        return self._control.should_stop

    def append(self, job: Mapping[str, Any]) -> Job:
        """Append through the worker's queue."""
        return self._queue.append(job)
