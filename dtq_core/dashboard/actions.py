"""The dashboard's actions: each steers jobs through :class:`~dtq_core.Queue` and says what it did.

An action takes the queue and the submitted form and returns a message for
the operator, or raises a :class:`~dtq_core.DtqError` (shown as the reason it
did nothing). Authentication and CSRF are checked before one runs (see
:mod:`.app`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from dtq_core.errors import InvalidJob
from dtq_core.job import JobStatus, normalise_id
from dtq_core.queue import Queue

Action = Callable[[Queue, Mapping[str, str]], str]
#: The statuses whose jobs the bulk actions take.
BULK = (JobStatus.DEAD, JobStatus.FAILED)


def requeue(queue: Queue, form: Mapping[str, str]) -> str:
    """Queue a dead, failed or cancelled job again (``id``)."""
    job = queue.requeue(_job_id(form))
    return f"job {job.id} requeued"


def cancel(queue: Queue, form: Mapping[str, str]) -> str:
    """Cancel a queued or scheduled job, or ask a running one to stop (``id``)."""
    job_id = _job_id(form)
    outcome = queue.cancel(job_id).value
    return f"job {job_id}: {outcome.replace('_', ' ')}"


def delete(queue: Queue, form: Mapping[str, str]) -> str:
    """Delete one final job's record (``id``)."""
    job_id = _job_id(form)
    queue.delete(job_id)
    return f"job {job_id} deleted"


def requeue_all(queue: Queue, form: Mapping[str, str]) -> str:
    """Requeue every dead (or, with ``status=failed``, failed) job."""
    status = _bulk_status(form)
    requeued, skipped = queue.requeue_all(status)
    message = f"requeued {len(requeued)} {status.value} job(s)"
    if skipped:
        first_id, reason = next(iter(skipped.items()))
        message += f"; skipped {len(skipped)} (such as {first_id}: {reason})"
    return message


def purge(queue: Queue, form: Mapping[str, str]) -> str:
    """Delete every dead (or, with ``status=failed``, failed) job."""
    status = _bulk_status(form)
    return f"deleted {queue.purge(status)} {status.value} job(s)"


#: Every action by the name in its URL (``POST /act/<name>``).
ACTIONS: dict[str, Action] = {
    "requeue": requeue,
    "cancel": cancel,
    "delete": delete,
    "requeue-all": requeue_all,
    "purge": purge,
}


def _job_id(form: Mapping[str, str]) -> str:
    """The form's ``id``, checked as any job id.

    Raises:
        InvalidJob: it is missing or not a job id.
    """
    if not form.get("id"):
        raise InvalidJob("name the job: the form has no id")
    return normalise_id(form["id"])


def _bulk_status(form: Mapping[str, str]) -> JobStatus:
    wanted = form.get("status", JobStatus.DEAD.value)
    for status in BULK:
        if status.value == wanted:
            return status
    raise InvalidJob(f"bulk actions take dead or failed jobs, not {wanted!r}")
