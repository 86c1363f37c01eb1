"""What happens after an attempt: the retry policy, as pure functions.

An attempt ends as an :class:`Attempt` (plain data, so it can cross from a job
process to its worker as JSON). :func:`decide` turns it into the
:class:`~dtq_core.engine.Outcome` the engine records: success, a retry after a
backoff, or a final failure.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from dtq_core.engine import Outcome
from dtq_core.errors import Cancelled, InvalidJob, Permanent, Retry
from dtq_core.job import ErrorInfo, Job, JobStatus, optional_seconds

if TYPE_CHECKING:
    from dtq_core.plugin import Plugin


class Ending(str, enum.Enum):
    """How an attempt ended."""

    OK = "ok"
    ERROR = "error"
    RETRY = "retry"  # the plugin raised Retry
    PERMANENT = "permanent"  # the plugin raised Permanent
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    UNRUNNABLE = "unrunnable"  # the plugin cannot run here (missing, broken)


@attrs.frozen
class Attempt:
    """The end of one attempt, as plain data."""

    ending: Ending
    result_json: str | None = None
    error: ErrorInfo | None = None
    retry_after_s: float | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> Attempt:
        """Classify an exception raised by a plugin."""
        info = ErrorInfo.from_exception(exc)
        if isinstance(exc, Retry):
            try:
                after = optional_seconds("Retry(after=...)", exc.after)
            except InvalidJob as bad:
                # The plugin's own mistake: an attempt that failed, and says why. Taken
                # as given, an infinite or textual wait broke the recording of outcomes.
                return cls(Ending.ERROR, error=attrs.evolve(info, message=f"{info.message} [{bad}]"))
            return cls(Ending.RETRY, error=info, retry_after_s=after)
        if isinstance(exc, Permanent):
            return cls(Ending.PERMANENT, error=info)
        if isinstance(exc, Cancelled):
            return cls(Ending.CANCELLED, error=info)
        return cls(Ending.ERROR, error=info)

    def to_dict(self) -> dict[str, Any]:
        """JSON shape, for the trip from a job process to its worker."""
        return {
            "ending": self.ending.value,
            "result_json": self.result_json,
            "error": None if self.error is None else self.error.to_dict(),
            "retry_after_s": self.retry_after_s,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Attempt:
        """Inverse of :meth:`to_dict`."""
        error = raw.get("error")
        return cls(
            Ending(raw["ending"]),
            result_json=raw.get("result_json"),
            error=None if error is None else ErrorInfo.from_dict(error),
            retry_after_s=raw.get("retry_after_s"),
        )


@attrs.frozen
class RetryPolicy:
    """How often and how soon a failed job runs again.

    Args:
        max_retries: attempts after the first; 0 never retries.
        backoff_s: the delay before the first retry; it doubles each time.
        backoff_max_s: the cap on the doubled delay.
    """

    max_retries: int = 0
    backoff_s: float = 1.0
    backoff_max_s: float = 600.0

    def delay_s(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The backoff after failed attempt number ``attempt`` (1-based).

        Exponential with "equal jitter": between half and all of
        ``min(backoff_max_s, backoff_s * 2 ** (attempt - 1))``, so workers that
        failed together do not retry together, and the wait never collapses to 0.
        """
        ceiling = min(self.backoff_max_s, self.backoff_s * 2.0 ** max(0, attempt - 1))
        return ceiling / 2 + rand() * ceiling / 2


def policy_for(plugin: Plugin, job: Job) -> RetryPolicy:
    """The job's retry policy: its own options, else its plugin's defaults."""
    return RetryPolicy(
        max_retries=plugin.max_retries if job.max_retries is None else job.max_retries,
        backoff_s=plugin.retry_backoff_s if job.retry_backoff_s is None else job.retry_backoff_s,
        backoff_max_s=plugin.retry_backoff_max_s,
    )


def timeout_for(plugin: Plugin, job: Job) -> float | None:
    """The job's time limit in seconds: its own, else its plugin's, else None."""
    return plugin.timeout_s if job.timeout_s is None else job.timeout_s


def decide(policy: RetryPolicy, job: Job, attempt: Attempt) -> Outcome:
    """The outcome to record for ``attempt``, the job's ``job.attempts``-th delivery."""
    if attempt.ending is Ending.OK:
        return Outcome(JobStatus.SUCCEEDED, result_json=attempt.result_json)
    if attempt.ending in _NO_RETRY:
        return Outcome(_NO_RETRY[attempt.ending], error=attempt.error)
    if job.attempts <= policy.max_retries:
        after = attempt.retry_after_s
        delay = policy.delay_s(job.attempts) if after is None else after
        return Outcome(JobStatus.SCHEDULED, error=attempt.error, retry_in_s=delay)
    if policy.max_retries > 0 or attempt.ending is Ending.RETRY:
        return Outcome(JobStatus.DEAD, error=_exhausted(attempt.error, job, policy))
    return Outcome(JobStatus.FAILED, error=attempt.error)


_NO_RETRY = {
    Ending.CANCELLED: JobStatus.CANCELLED,
    Ending.UNRUNNABLE: JobStatus.DEAD,  # the plugin cannot run here: retrying cannot help
    Ending.PERMANENT: JobStatus.FAILED,
}


def _exhausted(error: ErrorInfo | None, job: Job, policy: RetryPolicy) -> ErrorInfo:
    base = error or ErrorInfo(type="RetriesExhausted", message="")
    note = f"retries exhausted after {job.attempts} attempt(s) (max_retries={policy.max_retries})"
    return attrs.evolve(base, message=f"{base.message} [{note}]" if base.message else note)
