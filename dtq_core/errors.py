"""The one exception hierarchy of dtq.

Every error dtq raises on purpose derives from :class:`DtqError`, so callers can
catch everything dtq-specific with one ``except``. Each message says what is
wrong and how to fix it; the CLI prints it as it is, without a traceback.

Transport errors (redis-py, sqlite3, ...) are translated at the engine boundary
with ``raise ... from exc`` so the original cause stays on ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dtq_core.engine import Lease


class DtqError(Exception):
    """Base class of every error raised by dtq."""


# --- bad input -----------------------------------------------------------------


class ConfigError(DtqError, ValueError):
    """A setting has a bad value, or a config file cannot be read; the message names where it came from."""


class InvalidJob(DtqError, ValueError):
    """A job (dict, id, data or options) is malformed; nothing was queued."""


class ValidationError(InvalidJob):
    """A plugin's ``validate`` refused a job; raise it with a message that says why."""


class PayloadTooLarge(InvalidJob):
    """A job's encoded payload is larger than the queue's ``max_payload_bytes``."""


class DuplicateJob(DtqError):
    """A job with this id already exists with a different plugin or data."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


# --- plugins -------------------------------------------------------------------


class PluginError(DtqError):
    """A plugin cannot be used: unknown, not allowed, broken or ambiguous."""

    def __init__(self, message: str, *, plugin: str) -> None:
        super().__init__(message)
        self.plugin = plugin


class UnknownPlugin(PluginError):
    """No installed distribution registers a plugin under this name."""


class PluginNotAllowed(PluginError):
    """The plugin is not on the allow-list of this queue or worker."""


class PluginLoadError(PluginError):
    """The plugin's entry point exists but importing or creating it failed."""


class PluginIncompatible(PluginLoadError):
    """The plugin targets a plugin-API version this dtq-core does not support."""


class DuplicatePlugin(PluginError):
    """Two or more distributions register the same plugin name."""


# --- engines -------------------------------------------------------------------


class EngineError(DtqError):
    """The storage engine failed or cannot be configured."""


class EngineUnavailable(EngineError):
    """The storage engine cannot be reached (server down, wrong URL, network)."""


class NotReplicated(EngineUnavailable):
    """Writes were made, but fewer replicas than ``wait_replicas`` confirmed them in time.

    ``leased``: the leases a fetch took in the same round trip
    (:meth:`~dtq_core.Engine.complete_and_fetch`): they are good, and the caller
    holds them (to run, or to hand back), as if the call had returned them.
    """

    def __init__(self, message: str, *, leased: Sequence[Lease] = ()) -> None:
        super().__init__(message)
        self.leased = list(leased)


class UnknownEngine(EngineError):
    """No engine is registered for a URL scheme."""


class NotSupported(EngineError):
    """The engine does not implement an optional operation (browsing live jobs, deleting one job)."""


class MalformedRecord(EngineError):
    """A stored job record is not one dtq could have written (garbage put into storage, or corruption).

    ``reason`` says what is wrong. A worker that takes such a job never runs
    it: the job ends dead with the error ``malformed record: <reason>``.
    """

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(
            f"job {job_id!r} has a malformed record: {reason}; dtq did not write it so (something else "
            "wrote into dtq's storage, or it is corrupted). A worker that takes such a job buries it as "
            "dead; one that has ended can be deleted (Queue.delete, or the dashboard's delete button)"
        )
        self.job_id = job_id
        self.reason = reason


# --- jobs at run time ----------------------------------------------------------


class JobNotFound(DtqError, LookupError):
    """No job with this id exists (never appended, or its record expired)."""


class JobFailed(DtqError):
    """The job ended without a result (failed or dead); ``job`` holds its record."""

    def __init__(self, message: str, *, job: object) -> None:
        super().__init__(message)
        self.job = job


class ResultTimeout(DtqError, TimeoutError):
    """The job did not finish within the time the caller was willing to wait."""


class JobProcessError(DtqError):
    """A process-mode worker could not start the child process that runs jobs.

    No job is at fault: the worker hands the jobs it holds back to their queue
    and tries again later (a burst stops with this error). ``in_a_row`` counts
    the failed starts of that slot since its last good one.
    """

    def __init__(self, message: str, *, in_a_row: int = 1) -> None:
        super().__init__(message)
        self.in_a_row = in_a_row


# --- signals a plugin raises to steer its job (not errors, not DtqError) -------


class JobSignal(Exception):
    """Base of the exceptions a plugin raises to tell the worker what to do next."""


class Retry(JobSignal):
    """Ask for another attempt, ``after`` seconds from now (default: the backoff).

    Counts against the job's ``max_retries``; when none is left the job is dead.
    """

    def __init__(self, reason: str = "the plugin asked for a retry", *, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class Permanent(JobSignal):
    """Fail the job now, without retrying: another attempt cannot help.

    Raise it with the reason (``raise Permanent("no such user") from exc``).
    """


class Cancelled(JobSignal):
    """Raised by ``caller.check_cancelled()`` when the job's cancellation was requested."""
