"""Periodic jobs: one job per cron tick, however many workers check the schedule."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from dtq_core import InvalidJob, JobStatus, Periodic, PluginNotAllowed, Queue, UnknownPlugin, Worker
from dtq_core.periodic import PeriodicScheduler

START = datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)
EVERY_5 = Periodic("report", "*/5 * * * *", "test_only", {"action": "echo"})


def test_ticks_become_jobs_with_the_tick_in_the_id(dtq_queue: Queue) -> None:
    scheduler = PeriodicScheduler([EVERY_5], dtq_queue, since=START)
    jobs = scheduler.run_due(now=datetime(2026, 1, 1, 0, 12, tzinfo=timezone.utc))
    assert [job.id for job in jobs] == [
        "periodic:report@2026-01-01T00:05:00Z",
        "periodic:report@2026-01-01T00:10:00Z",
    ]
    assert scheduler.run_due(now=datetime(2026, 1, 1, 0, 14, tzinfo=timezone.utc)) == []


def test_each_tick_is_enqueued_once_however_many_workers_race(
    dtq_queue: Queue,
) -> None:
    schedulers = [PeriodicScheduler([EVERY_5], dtq_queue, since=START) for _ in range(6)]
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
    [counts] = dtq_queue.stats().queues
    assert counts.waiting == 12  # 00:05 ... 01:00


def test_worker_enqueues_the_current_tick_and_runs_it(
    dtq_queue: Queue, dtq_make_worker: Callable[..., Worker]
) -> None:
    every_minute = Periodic("minutely", "* * * * *", "test_only", {"action": "echo"})
    workers = [dtq_make_worker(mode="thread", periodic=[every_minute]) for _ in range(3)]
    done = [job for worker in workers for job in worker.get_jobs()]
    # The tick of the last minute (two, if a minute turned while the workers
    # started), each once for three workers.
    assert 1 <= len(done) <= 2
    assert len({job.id for job in done}) == len(done)
    for job in done:
        assert job.id.startswith("periodic:minutely@") and job.status is JobStatus.SUCCEEDED
        stored = dtq_queue.get(job.id)
        assert stored is not None and stored.attempts == 1


def test_bad_schedules_are_refused_at_start(dtq_queue: Queue, dtq_url: str, dtq_namespace: str) -> None:
    with pytest.raises(InvalidJob, match="bad cron expression"):
        Periodic("x", "61 * * * *", "test_only")
    with pytest.raises(InvalidJob, match="must be unique"):
        PeriodicScheduler([EVERY_5, EVERY_5], dtq_queue)
    with pytest.raises(InvalidJob, match="must be a dict"):
        Periodic("y", "* * * * *", "test_only", "no")  # type: ignore[arg-type]
    with (
        Queue(["test_only"], dtq_url, namespace=dtq_namespace) as allow_listed,
        pytest.raises(PluginNotAllowed, match="not on the allow-list"),
    ):
        PeriodicScheduler([Periodic("z", "* * * * *", "elsewhere")], allow_listed)
    with pytest.raises(UnknownPlugin, match="no plugin named 'elsewhere'"):
        PeriodicScheduler([Periodic("z", "* * * * *", "elsewhere")], dtq_queue)


def test_a_refused_tick_holds_up_neither_later_ticks_nor_other_schedules(dtq_queue: Queue) -> None:
    """A schedule changed across a restart: its tick's id is taken by the job the worker
    before stored with the old data. That tick was retried at every check, and no job of
    any schedule was enqueued again."""
    other = Periodic("other", "*/5 * * * *", "test_only", {"action": "echo", "n": 2})
    taken = "periodic:report@2026-01-01T00:05:00Z"
    dtq_queue.append({"id": taken, "job": {"plugin": "test_only", "data": {"action": "echo", "old": True}}})
    scheduler = PeriodicScheduler([EVERY_5, other], dtq_queue, since=START)
    jobs = scheduler.run_due(now=datetime(2026, 1, 1, 0, 12, tzinfo=timezone.utc))
    assert [job.id for job in jobs] == [
        "periodic:other@2026-01-01T00:05:00Z",
        "periodic:other@2026-01-01T00:10:00Z",
        "periodic:report@2026-01-01T00:10:00Z",
    ]
    later = scheduler.run_due(now=datetime(2026, 1, 1, 0, 15, 30, tzinfo=timezone.utc))
    assert [job.id for job in later] == [
        "periodic:other@2026-01-01T00:15:00Z",
        "periodic:report@2026-01-01T00:15:00Z",
    ]


def test_a_scheduler_back_after_a_long_outage_enqueues_only_the_ticks_it_may_catch_up(
    dtq_queue: Queue,
) -> None:
    every_minute = Periodic("minutely", "* * * * *", "test_only", {"action": "echo"})
    scheduler = PeriodicScheduler([every_minute], dtq_queue, catch_up_s=60)
    six_hours_on = datetime.now(timezone.utc) + timedelta(hours=6)
    assert len(scheduler.run_due(now=six_hours_on)) == 1  # not the 360 it missed


def test_a_check_that_comes_late_still_enqueues_every_tick_since_the_last(dtq_queue: Queue) -> None:
    """A busy worker may check some seconds after a tick: with a short catch-up (a short
    retention) that tick was let go, and no worker enqueued it."""
    every_minute = Periodic("minutely", "* * * * *", "test_only", {"action": "echo"})
    scheduler = PeriodicScheduler([every_minute], dtq_queue, catch_up_s=1)
    checked = datetime.now(timezone.utc)
    scheduler.run_due(now=checked)
    late = scheduler.run_due(now=checked + timedelta(seconds=65))  # one or two ticks fell in those 65 s
    assert len(late) >= 1


def test_schedules_with_options_the_queue_would_refuse_are_refused_at_start(dtq_queue: Queue) -> None:
    late = Periodic("late", "* * * * *", "test_only", {"action": "echo"}, {"delay_s": -5})
    with pytest.raises(InvalidJob, match="delay_s must be a number of seconds from 0 up"):
        PeriodicScheduler([late], dtq_queue)


def test_a_worker_catches_up_no_further_back_than_its_records_last(
    dtq_make_worker: Callable[..., Worker],
) -> None:
    """A tick's job is kept from a second enqueue only while its record lives."""
    every_minute = Periodic("minutely", "* * * * *", "test_only", {"action": "echo"})
    worker = dtq_make_worker(mode="thread", periodic=[every_minute], result_ttl_s=5)
    assert worker.scheduler is not None and worker.scheduler.catch_up_s == 5
