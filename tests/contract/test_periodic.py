"""Periodic jobs: one job per cron tick, however many workers check the schedule."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from dtq_core import InvalidJob, JobStatus, Periodic, Queue, Worker
from dtq_core.periodic import PeriodicScheduler

START = datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)
EVERY_5 = Periodic("report", "*/5 * * * *", "test_only", {"action": "echo"})


def test_ticks_become_jobs_with_the_tick_in_the_id(queue: Queue) -> None:
    scheduler = PeriodicScheduler([EVERY_5], queue, since=START)
    jobs = scheduler.run_due(now=datetime(2026, 1, 1, 0, 12, tzinfo=timezone.utc))
    assert [job.id for job in jobs] == [
        "periodic:report@2026-01-01T00:05:00Z",
        "periodic:report@2026-01-01T00:10:00Z",
    ]
    assert scheduler.run_due(now=datetime(2026, 1, 1, 0, 14, tzinfo=timezone.utc)) == []


def test_each_tick_is_enqueued_once_however_many_workers_race(
    queue: Queue,
) -> None:
    schedulers = [PeriodicScheduler([EVERY_5], queue, since=START) for _ in range(6)]
    now = datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc)
    barrier = threading.Barrier(len(schedulers))

    def race(scheduler: PeriodicScheduler) -> None:
        barrier.wait()
        scheduler.run_due(now=now)

    threads = [threading.Thread(target=race, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [counts] = queue.stats().queues
    assert counts.waiting == 12  # 00:05 ... 01:00


def test_worker_enqueues_the_current_tick_and_runs_it(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    every_minute = Periodic("minutely", "* * * * *", "test_only", {"action": "echo"})
    workers = [make_worker(mode="thread", periodic=[every_minute]) for _ in range(3)]
    done = [job for worker in workers for job in worker.get_jobs()]
    # The tick of the last minute (two, if a minute turned while the workers
    # started), each once for three workers.
    assert 1 <= len(done) <= 2
    assert len({job.id for job in done}) == len(done)
    for job in done:
        assert job.id.startswith("periodic:minutely@") and job.status is JobStatus.SUCCEEDED
        stored = queue.get(job.id)
        assert stored is not None and stored.attempts == 1


def test_bad_schedules_are_refused_at_start(queue: Queue) -> None:
    with pytest.raises(InvalidJob, match="bad cron expression"):
        Periodic("x", "61 * * * *", "test_only")
    with pytest.raises(InvalidJob, match="must be unique"):
        PeriodicScheduler([EVERY_5, EVERY_5], queue)
    with pytest.raises(InvalidJob, match="must be a dict"):
        Periodic("y", "* * * * *", "test_only", "no")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="not on the allow-list"):
        PeriodicScheduler([Periodic("z", "* * * * *", "elsewhere")], queue)
