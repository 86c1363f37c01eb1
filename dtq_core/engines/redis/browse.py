"""Reading a Redis namespace for people: pages of live jobs, and deleting one final job.

Nothing here is on a worker's path. A page of live jobs is read in two round
trips: the ids from the queue's sorted set (``ZRANGE``), then their records in
one pipeline. A job that moved on between the two (taken, finished, promoted)
is left out of the page, so a page of queued jobs holds only queued ones.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from dtq_core.engine import check_browsable
from dtq_core.engines.redis.connect import Client
from dtq_core.engines.redis.keys import Keys
from dtq_core.errors import MalformedRecord
from dtq_core.job import Job, JobStatus
from dtq_core.record import job_from_state

#: The sorted set that holds a plugin's jobs of each browsable status (see :mod:`.keys`).
_SETS: dict[JobStatus, Callable[[Keys, str], str]] = {
    JobStatus.QUEUED: Keys.ready,
    JobStatus.SCHEDULED: Keys.scheduled,
    JobStatus.RUNNING: Keys.active,
}


def browse(client: Client, keys: Keys, status: JobStatus, plugin: str, offset: int, limit: int) -> list[Job]:
    """A page of ``plugin``'s jobs with ``status``, in the order of their sorted set.

    Queued ids are ordered by priority then arrival, scheduled ones by due
    time, running ones by lease deadline. Records that are gone, have moved
    on, or are malformed are left out.

    Raises:
        ValueError: ``status`` is not browsable, or the page bounds are negative.
    """
    check_browsable(status, offset, limit)
    if limit == 0:
        return []
    ids = [str(i) for i in client.zrange(_SETS[status](keys, plugin), offset, offset + limit - 1)]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.jobs, job_id)
        pipe.hget(keys.state, job_id)
        pipe.lrange(keys.errors(job_id), 0, -1)
    replies = pipe.execute()
    jobs = (_live_job(job_id, *replies[3 * n : 3 * n + 3]) for n, job_id in enumerate(ids))
    return [job for job in jobs if job is not None and job.status is status]


def _live_job(job_id: str, payload: str | None, state: str | None, errors: list[str]) -> Job | None:
    if payload is None or state is None:
        return None
    try:
        return job_from_state(job_id, payload, state, None, None, errors)
    except MalformedRecord:
        return None  # a worker that takes it buries it as dead, with the reason


def delete_final(client: Client, keys: Keys, job_id: str) -> bool:
    """Delete one final job's record, its attempt errors and its index entries, in one transaction.

    A succeeded job's record is a field of ``succeeded`` (deleted at once: it
    never becomes live again); a failed, dead or cancelled one has a ``done``
    record, and the transaction runs only if that
    record is unchanged since it was seen (``WATCH``), so a job requeued
    meanwhile is left alone. Returns whether something was deleted.
    """
    done = keys.done(job_id)
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(done)
            if not pipe.exists(done):
                return _delete_succeeded(client, keys, job_id)
            pipe.multi()
            pipe.delete(done, keys.errors(job_id))
            for status in (JobStatus.DEAD, JobStatus.FAILED):
                pipe.zrem(keys.index(status.value), job_id)
            pipe.execute()
        except redis.WatchError:
            return False
    return True


def _delete_succeeded(client: Client, keys: Keys, job_id: str) -> bool:
    """Delete a succeeded job's record (one field of ``succeeded``), and its attempt errors with it."""
    if not client.hdel(keys.succeeded, job_id):
        return False  # not final (or gone): a live job's errors stay
    with client.pipeline(transaction=True) as pipe:
        pipe.zrem(keys.expiry, job_id)
        pipe.delete(keys.errors(job_id))
        pipe.execute()
    return True
