"""A bulk append on Redis: settings sent once per call, and events sharing stream entries.

``append.lua`` takes the settings (priority, options, schedule) its jobs share
once, and records the events of many jobs of a kind in one stream entry; the
reader makes an event per job of them again. These tests look at what Redis
holds, which the engine contract (tests/contract) cannot see.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from dtqtest import RedisServer

from dtq_core import Event, InvalidJob, JobStatus, Queue
from dtq_core.engines.redis.keys import Keys

ECHO = {"action": "echo"}


@pytest.fixture
def queue(redis_server: RedisServer, namespace: str) -> Iterator[Queue]:
    with Queue(["test_only"], redis_server.url, namespace=namespace) as made:
        yield made


def test_a_bulk_append_records_a_hundred_jobs_events_per_stream_entry(
    redis_server: RedisServer, namespace: str, queue: Queue
) -> None:
    jobs = queue.enqueue_many("test_only", [ECHO] * 250)
    stream = Keys("dtq", namespace).events
    assert redis_server.client.xlen(stream) == 3  # 100, 100 and 50
    events = queue.events(limit=1000)
    assert [e.job_id for e in events] == [job.id for job in jobs]
    assert {(e.type.value, e.plugin, e.attempt, e.worker) for e in events} == {
        ("appended", "test_only", 0, None)
    }
    # The ids of the events of one entry: its id, then their place in it.
    [first_entry, *_] = redis_server.client.xrange(stream)
    assert [e.id for e in events[:2]] == [f"{first_entry[0]}.0", f"{first_entry[0]}.1"]


def test_an_event_id_whose_entry_was_trimmed_reads_on_from_the_oldest_kept(
    redis_server: RedisServer, namespace: str, queue: Queue
) -> None:
    queue.enqueue_many("test_only", [ECHO] * 150)
    inside = queue.events(limit=120)[-1].id  # in the second entry
    later = queue.enqueue("test_only", ECHO)
    stream = Keys("dtq", namespace).events
    redis_server.client.xtrim(stream, maxlen=1, approximate=False)  # only the single job's entry is left
    assert [e.job_id for e in queue.events(after=inside)] == [later.id]


def test_jobs_of_one_call_with_different_settings_each_get_their_own(queue: Queue) -> None:
    """A call's jobs name one of its settings when they do not all share one."""
    eta = datetime.now(timezone.utc) + timedelta(hours=2)
    appended = queue.append_many(
        [
            {"job": {"plugin": "test_only", "data": ECHO}},
            {"job": {"plugin": "test_only", "data": ECHO}, "options": {"priority": 5, "max_retries": 2}},
            {"job": {"plugin": "test_only", "data": ECHO}, "options": {"delay_s": 30}},
            {"job": {"plugin": "test_only", "data": ECHO}, "options": {"priority": -3}},
            {"job": {"plugin": "test_only", "data": ECHO}, "options": {"eta": eta.isoformat()}},
            {"job": {"plugin": "test_only", "data": ECHO}, "options": {"priority": 5, "max_retries": 2}},
            {"job": {"plugin": "test_only", "data": ECHO}, "options": {"timeout_s": 1.5}},
        ]
    )
    stored = [queue.get(job.id) for job in appended]
    assert all(job is not None for job in stored)
    got = [(j.status, j.priority, j.max_retries, j.timeout_s) for j in stored if j is not None]
    assert got == [
        (JobStatus.QUEUED, 0, None, None),
        (JobStatus.QUEUED, 5, 2, None),
        (JobStatus.SCHEDULED, 0, None, None),
        (JobStatus.QUEUED, -3, None, None),
        (JobStatus.SCHEDULED, 0, None, None),
        (JobStatus.QUEUED, 5, 2, None),
        (JobStatus.QUEUED, 0, None, 1.5),
    ]
    due = [j.eta for j in stored if j is not None and j.status is JobStatus.SCHEDULED]
    assert due[1] is not None and abs((due[1] - eta).total_seconds()) < 0.01
    assert due[0] is not None and timedelta(seconds=25) < due[0] - datetime.now(timezone.utc)
    # Taken by priority, then in order of arrival.
    leases = queue.engine.fetch(["test_only"], count=10, lease_s=30, worker_id="w").leases
    ids = [job.id for job in appended]
    assert [lease.job.id for lease in leases] == [ids[1], ids[5], ids[0], ids[6], ids[3]]
    scheduled = [e for e in queue.events() if e.type.value == "scheduled"]
    assert [e.job_id for e in scheduled] == [ids[2], ids[4]]
    assert scheduled[0].delay_ms == 30_000 and scheduled[1].delay_ms is not None


def test_an_entry_of_many_events_names_its_first_job_for_readers_from_before(
    redis_server: RedisServer, namespace: str, queue: Queue
) -> None:
    jobs = queue.enqueue_many("test_only", [ECHO] * 120)
    entries = redis_server.client.xrange(Keys("dtq", namespace).events)
    # A reader that knows only 'job' sees one event per entry, and does not fail.
    assert [fields["job"] for _id, fields in entries] == [jobs[0].id, jobs[100].id]
    assert entries[1][1]["jobs"].split("\n") == [job.id for job in jobs[100:]]


def test_a_page_of_events_reads_not_much_more_than_it_returns(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for one entry per event wanted, a page of 150 read 15,000 events of full entries."""
    queue.enqueue_many("test_only", [ECHO] * 5000)
    for n in range(20):
        queue.enqueue("test_only", ECHO, id=f"alone-{n}")
    engine = queue.engine
    read: list[int] = []
    xread = engine.client.xread

    def counted(*args: Any, **kwargs: Any) -> Any:
        reply = xread(*args, **kwargs)
        read.append(sum(len(f.get("jobs", "").split("\n")) for _s, es in reply for _i, f in es))
        return reply

    monkeypatch.setattr(engine.client, "xread", counted)
    every: list[Event] = []
    after = None
    while page := queue.events(after=after, limit=150):
        every += page
        after = page[-1].id
    assert len(every) == 5020 and len({e.id for e in every}) == 5020
    assert sum(read) <= 2 * 5020  # each event read about once
    assert len(read) <= 2 * (5020 // 150 + 1) + 2  # and a page in one or two round trips


@pytest.mark.parametrize("after", ["1700000000000.3", "1700000000000-0.x", "1700000000000-0.1234567"])
def test_an_event_id_within_an_entry_must_name_the_entry_whole(queue: Queue, after: str) -> None:
    with pytest.raises(ValueError, match="not an event id of the Redis engine"):
        queue.events(after=after)


def _watching(seen: list[bool], count: int) -> Iterator[dict[str, Any]]:
    """``count`` echo datas, noting whether the cycle collector is on as each is taken."""
    for n in range(count):
        seen.append(gc.isenabled())
        yield {"action": "echo", "n": n}


@pytest.mark.parametrize("call", ["enqueue_many", "append_many"])
def test_a_bulk_call_pauses_the_cycle_collector_and_restores_it_as_it_was(call: str, queue: Queue) -> None:
    def bulk(datas: Iterator[dict[str, Any]]) -> list[Any]:
        if call == "enqueue_many":
            return queue.enqueue_many("test_only", datas)
        return queue.append_many({"job": {"plugin": "test_only", "data": data}} for data in datas)

    seen: list[bool] = []
    assert len(bulk(_watching(seen, 5))) == 5
    assert seen == [False] * 5 and gc.isenabled()
    with pytest.raises(InvalidJob):  # the call fails: the collector is on again all the same
        bulk(iter([{"action": "echo"}, {"not json": {1, 2}}]))
    assert gc.isenabled()
    gc.disable()  # an application that runs with it off keeps it off
    try:
        assert len(bulk(_watching(seen, 1))) == 1
        assert not gc.isenabled()
    finally:
        gc.enable()
