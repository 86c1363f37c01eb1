"""What the dashboard shows, read from a :class:`~dtq_core.Queue`; no HTTP here.

Every reader takes the queue and returns plain values the templates and the
JSON API render; the same calls back ``dtq stats``, ``dtq workers``, ``dtq
dead list`` and ``dtq plugins``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import attrs

from dtq_core.engine import BROWSABLE, FINISHED, Event, MinuteCounts, Stats
from dtq_core.job import Job, JobStatus
from dtq_core.plugin import PluginStatus
from dtq_core.queue import Queue
from dtq_core.worker import WorkerRow as WorkerRow  # noqa: PLC0414  # what the workers page shows
from dtq_core.worker import worker_rows as worker_rows  # noqa: PLC0414

#: Jobs on one page of the jobs list.
PAGE_SIZE = 50
#: How deep the jobs list of all queues together goes: each page reads that many jobs
#: of every queue (one queue's list is read a page at a time, as deep as it goes).
MERGED_DEPTH = 5000
#: The statuses the jobs list shows: live ones by queue, then the kept dead and failed ones.
LISTED = (*BROWSABLE, JobStatus.DEAD, JobStatus.FAILED)
#: Dead or failed jobs of one queue are looked for among this many of the newest.
FINAL_SCAN = 500
#: The most events looked at for one job's timeline. The default events_max keeps 10,000
#: stream entries on Redis: about as many events where jobs are processed as they come,
#: up to 100 times that while a bulk-appended backlog waits (an entry holds a bulk
#: append's 100); a timeline looks at the oldest 100,000 of those.
_EVENTS_LOOKED_AT = 100_000
#: Outcomes that count as failures on the chart.
FAILURES = ("failed", "dead")


@attrs.frozen
class Overview:
    """The overview page: each queue's counts, the live workers, and the chart's points."""

    stats: Stats
    workers: int
    chart: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The ``/api/overview`` shape: ``dtq stats --json`` plus ``workers`` and ``chart``."""
        return {**self.stats.to_dict(), "workers": self.workers, "chart": self.chart}


def overview(queue: Queue, minutes: int = 60) -> Overview:
    """The namespace at a glance, with its outcomes per minute over the last ``minutes``."""
    return Overview(queue.stats(), len(queue.workers()), chart_points(queue.history(minutes)))


def chart_points(history: Sequence[MinuteCounts]) -> list[dict[str, Any]]:
    """Per minute, oldest first: jobs finished (any final status) and jobs that failed or died."""
    return [
        {
            "minute": minute.start.isoformat(),
            "finished": _total(minute, FINISHED),
            "failures": _total(minute, FAILURES),
        }
        for minute in history
    ]


def _total(minute: MinuteCounts, statuses: Sequence[str]) -> int:
    return sum(minute.count(plugin, status) for plugin in minute.counts for status in statuses)


@attrs.frozen
class JobPage:
    """One page of the jobs list; ``note`` says when the list is partial."""

    status: JobStatus
    plugin: str | None
    jobs: list[Job]
    offset: int
    limit: int
    has_more: bool
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``/api/jobs`` shape."""
        return {
            "status": self.status.value,
            "queue": self.plugin,
            "offset": self.offset,
            "limit": self.limit,
            "has_more": self.has_more,
            "note": self.note,
            "jobs": [job.to_dict() for job in self.jobs],
        }


def job_page(
    queue: Queue, status: JobStatus, plugin: str | None, offset: int = 0, limit: int = PAGE_SIZE
) -> JobPage:
    """A page of jobs with ``status``, of one queue or (``plugin`` None) of all.

    Raises:
        ValueError: ``status`` is not one of :data:`LISTED`.
        NotSupported: the engine cannot list live jobs.
    """
    if status not in LISTED:
        raise ValueError(f"the jobs list shows {', '.join(s.value for s in LISTED)} jobs, not {status.value}")
    if status in BROWSABLE:
        found = _live(queue, status, plugin, offset, limit + 1)
        note = None
    else:
        found, note = _final(queue, status, plugin, offset, limit + 1)
    return JobPage(status, plugin, found[:limit], offset, limit, len(found) > limit, note)


def _live(queue: Queue, status: JobStatus, plugin: str | None, offset: int, count: int) -> list[Job]:
    if plugin is not None:
        return queue.browse(status, plugin, offset=offset, limit=count)
    # Every queue's first offset + count jobs are read to merge them: deeper pages of all
    # queues at once would have any visitor make the server read every job. The last
    # page reads no further than the depth, so it offers no page past it.
    count = min(count, MERGED_DEPTH - offset)
    if count <= 0:
        raise ValueError(
            f"the list of all queues together goes {MERGED_DEPTH} jobs deep; pick a queue "
            "(queue=...) to page further"
        )
    plugins = [q.plugin for q in queue.stats().queues]
    pages = [queue.browse(status, name, offset=0, limit=offset + count) for name in plugins]
    # Each queue's page is in its own order already: merged by the same order, a deep queue
    # cannot hide the others' first jobs (a priority job of another queue, one due sooner).
    merged = heapq.merge(*pages, key=_ORDER[status])
    return list(itertools.islice(merged, offset, offset + count))


_LATEST = datetime.max.replace(tzinfo=timezone.utc)

#: How the jobs list of all queues orders each browsable status, as :meth:`Queue.browse` does
#: within a queue: queued by priority, then arrival; scheduled by due time; running by start
#: (its lease deadline is not on the job: with the same lease, the same order).
_ORDER: dict[JobStatus, Callable[[Job], Any]] = {
    JobStatus.QUEUED: lambda job: (-job.priority, job.created_at or _LATEST),
    JobStatus.SCHEDULED: lambda job: job.eta or _LATEST,
    JobStatus.RUNNING: lambda job: job.started_at or _LATEST,
}


def _final(
    queue: Queue, status: JobStatus, plugin: str | None, offset: int, count: int
) -> tuple[list[Job], str | None]:
    listing = queue.dead if status is JobStatus.DEAD else queue.failed
    if plugin is None:
        return listing(limit=count, offset=offset), None
    newest = [job for job in listing(limit=FINAL_SCAN) if job.plugin == plugin]
    note = f"{status.value} jobs of one queue are looked for among the {FINAL_SCAN} newest"
    return newest[offset : offset + count], note


def timeline(queue: Queue, job_id: str) -> list[Event]:
    """The job's events that the engine still keeps, oldest first."""
    return list(queue.kept_events(lambda event: event.job_id == job_id, most=_EVENTS_LOOKED_AT))


@attrs.frozen
class PluginRow:
    """An installed (or allow-listed) plugin, and how many live workers serve it."""

    status: PluginStatus
    served_by: int

    def to_dict(self) -> dict[str, Any]:
        """The ``/api/plugins`` shape: ``dtq plugins --json`` plus ``served_by``."""
        return {**self.status.to_dict(), "served_by": self.served_by}


_REGISTRY_LOCK = threading.Lock()


def plugin_rows(queue: Queue) -> list[PluginRow]:
    """Every installed plugin with its distribution, version and load status (as ``dtq plugins``)."""
    with _REGISTRY_LOCK:  # the registry loads plugins as it checks them: one request at a time
        statuses = queue.registry.statuses()
    served: dict[str, int] = {}
    for worker in worker_rows(queue.workers()):
        for name in worker.plugins:
            served[name] = served.get(name, 0) + 1
    return [PluginRow(row, served.get(row.name, 0)) for row in statuses]
