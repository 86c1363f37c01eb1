"""Enqueueing: the shortcuts enqueue and enqueue_many take check exactly what append checks."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from typing import Any

import pytest

from dtq_core import InvalidJob, JobStatus, Queue, ValidationError
from dtq_core.job import check_data, job_payload, parse_job_payload


@pytest.fixture
def queue(tmp_path: Any) -> Iterator[Queue]:
    with Queue(["test_only"], f"memory://{tmp_path.name}") as q:
        yield q


def test_data_is_copied_and_tuples_become_lists() -> None:
    given: dict[str, Any] = {"list": [1, {"t": (2, 3)}]}
    data = check_data(given)
    assert data == {"list": [1, {"t": [2, 3]}]}
    given["list"].append(4)
    assert data == {"list": [1, {"t": [2, 3]}]}  # the caller's later changes do not reach the job


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"a": [{"b": {True: 1}}]}, "data['a'][0]['b'] has a non-string key True"),
        ({"a": {1: "x", "b": 2}}, "data['a'] has a non-string key 1"),  # json would refuse to sort them
        ({"a": {1: {2, 3}}}, "non-string key 1"),  # named before the value JSON cannot carry
        ({"a": [1, {2}]}, "must be JSON-serialisable"),
        ({"a": float("inf")}, "must be JSON-serialisable"),
        ({"a": "\ud800"}, "not valid Unicode"),
    ],
)
def test_data_json_cannot_carry_exactly_is_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidJob, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_data(data)


def test_data_that_contains_itself_is_refused() -> None:
    data: dict[str, Any] = {}
    data["me"] = data
    with pytest.raises(InvalidJob, match="contains itself"):
        check_data(data)


def test_enqueue_checks_as_append_does(queue: Queue) -> None:
    job = queue.enqueue("test_only", {"action": "echo"}, id=7, priority=3, delay_s=60, timeout_s=2)
    assert (job.id, job.priority, job.timeout_s, job.status) == ("7", 3, 2.0, JobStatus.SCHEDULED)
    for plugin, data, options, message in [
        ("a b", {}, {}, "not a valid entry-point name"),
        ("test_only", [], {}, "must be a dict"),
        ("test_only", {"action": "echo"}, {"priority": 5000}, "priority must be an integer"),
        ("test_only", {"action": "echo"}, {"delay_s": -1}, "delay_s must be a number"),
        ("test_only", {"action": "echo"}, {"id": ""}, "printable characters"),
    ]:
        with pytest.raises(InvalidJob, match=message):
            queue.enqueue(plugin, data, **options)
        with pytest.raises(InvalidJob, match=message):
            job_id = options.pop("id", None)
            delay_s = options.pop("delay_s", None)
            raw = {"id": job_id, "job": {"plugin": plugin, "data": data}, "options": options}
            queue.append({**raw, "options": {**options, **({} if delay_s is None else {"delay_s": delay_s})}})


def test_enqueue_many_names_the_first_bad_job_and_appends_nothing(queue: Queue) -> None:
    datas: list[Any] = [{"action": "echo"}, {"action": "echo", "n": 1}, {"action": "echo", "s": {1}}]
    with pytest.raises(InvalidJob, match="job 2 of the batch: job data must be JSON-serialisable"):
        queue.enqueue_many("test_only", datas)
    with pytest.raises(ValidationError, match="job 1 of the batch"):
        queue.enqueue_many("test_only", [{"action": "echo"}, {"action": "no such action"}])
    with pytest.raises(InvalidJob, match="job 0 of the batch: priority"):
        queue.enqueue_many("test_only", datas, priority=10_000)
    assert queue.enqueue_many("test_only", [], priority=10_000) == []  # no job, nothing to refuse
    assert queue.stats().queues == [] or all(q.waiting == 0 for q in queue.stats().queues)


def test_enqueue_many_gives_each_job_the_options_and_its_own_id(queue: Queue) -> None:
    given = {"action": "echo", "t": (1, 2)}
    jobs = queue.enqueue_many("test_only", (given for _ in range(600)), priority=2, max_retries=1)
    assert len({job.id for job in jobs}) == 600
    assert all(len(job.id) == 32 and job.priority == 2 and job.max_retries == 1 for job in jobs)
    assert jobs[-1].data == {"action": "echo", "t": [1, 2]} and jobs[-1].data is not jobs[0].data
    stored = queue.get(jobs[-1].id)
    assert stored is not None and (stored.data, stored.priority, stored.max_retries) == (jobs[-1].data, 2, 1)
    assert parse_job_payload({"id": jobs[5].id, "job": {"plugin": "test_only", "data": given}})[0].data == (
        jobs[5].data
    )


def test_enum_options_and_plugin_names_become_plain_values() -> None:
    class Plugin(str, enum.Enum):
        TEST = "test_only"

    class Level(enum.IntEnum):
        HIGH = 5

    job, payload = job_payload(
        Plugin.TEST, {"x": 1}, None, {"priority": Level.HIGH, "max_retries": Level.HIGH}
    )
    assert (type(job.plugin), type(job.priority), type(job.max_retries)) == (str, int, int)
    assert (job.plugin, job.priority, job.max_retries) == ("test_only", 5, 5)
    assert payload == '{"data":{"x":1},"plugin":"test_only"}'


@pytest.mark.parametrize("bad", [math.nan, -1.0])
def test_waits_that_are_no_number_of_seconds_are_refused(bad: float) -> None:
    # result(timeout=nan) waited forever (no time is past a NaN deadline);
    # events(block_s=nan) raised ValueError from deep in the engine.
    with Queue(["test_only"], "memory://waits") as queue:
        queue.enqueue("test_only", {"action": "echo"}, id="w")
        with pytest.raises(InvalidJob, match="timeout must be a number of seconds from 0 up"):
            queue.result("w", timeout=bad)
        with pytest.raises(InvalidJob, match="block_s must be a number of seconds from 0 up"):
            queue.events(block_s=bad)
        with pytest.raises(InvalidJob, match="block_s must be a number of seconds from 0 up"):
            queue.events(block_s=math.inf)  # result(timeout=inf) waits as long as it takes, as None
