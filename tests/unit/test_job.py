"""The job value: wire format, validation of appended dicts, JSON round trips."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from dtq_core import ErrorInfo, InvalidJob, Job, JobStatus
from dtq_core.job import MAX_ID_LENGTH, encode_payload, parse_job, parse_job_payload, schedule_of

SEED = {
    "id": "test_job_one",
    "job": {"plugin": "test_only", "data": {"text": "To be processed!", "action": "duplicate_text"}},
}


def test_seed_job_parses_into_a_queued_job() -> None:
    job = parse_job(SEED)
    assert (job.id, job.plugin, job.status, job.attempts) == (
        "test_job_one",
        "test_only",
        JobStatus.QUEUED,
        0,
    )
    assert job.data == {"text": "To be processed!", "action": "duplicate_text"}


def test_to_dict_has_the_original_shape_and_the_bookkeeping() -> None:
    record = parse_job(SEED).to_dict()
    assert record["id"] == "test_job_one"
    assert record["job"] == SEED["job"]
    for field in ("status", "result", "error", "attempts", "created_at", "started_at", "finished_at"):
        assert field in record
    assert record["status"] == "queued"
    json.dumps(record)  # plain JSON all the way down


def test_from_dict_inverts_to_dict() -> None:
    error = ErrorInfo.from_exception(ValueError("boom"))
    job = Job(id="x", plugin="p", data={"a": [1, 2]}, status=JobStatus.FAILED, error=error, attempts=2)
    assert Job.from_dict(job.to_dict()) == job


def test_error_info_keeps_type_message_and_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        info = ErrorInfo.from_exception(exc)
    assert info.type == "KeyError"
    assert "missing" in info.message
    assert "Traceback" in info.traceback and "test_error_info_keeps" in info.traceback


def test_missing_id_is_generated_and_integer_ids_become_strings() -> None:
    generated = parse_job({"job": SEED["job"]})
    assert len(generated.id) == 32
    assert parse_job({"id": 21876931, "job": SEED["job"]}).id == "21876931"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not a dict", "a job must be a dict"),
        ({"id": "x"}, "needs a 'job' dict"),
        ({"id": "x", "job": ["test_only"]}, "needs a 'job' dict"),
        ({"id": "x", "jbo": {}, "job": SEED["job"]}, "unknown key(s) 'jbo'"),
        ({"id": "x", "job": {"plugin": "test_only", "data": {}, "extra": 1}}, "unknown key(s) 'extra'"),
        ({"id": "x", "job": {"data": {}}}, "must name its plugin"),
        ({"id": "x", "job": {"plugin": 7, "data": {}}}, "must name its plugin"),
        ({"id": "x", "job": {"plugin": "a b", "data": {}}}, "not a valid entry-point name"),
        ({"id": "x", "job": {"plugin": "test_only"}}, "must be a dict (a JSON object)"),
        ({"id": "x", "job": {"plugin": "test_only", "data": "text"}}, "must be a dict (a JSON object)"),
        ({"id": "x", "job": {"plugin": "test_only", "data": {"s": {1, 2}}}}, "must be JSON-serialisable"),
        ({"id": "x", "job": {"plugin": "test_only", "data": {"n": math.nan}}}, "must be JSON-serialisable"),
        ({"id": "x", "job": {"plugin": "test_only", "data": {"d": {1: "a"}}}}, "non-string key 1"),
        ({"id": True, "job": SEED["job"]}, "must be a string or an integer"),
        ({"id": 1.5, "job": SEED["job"]}, "must be a string or an integer"),
        ({"id": "", "job": SEED["job"]}, "1 to 256 printable characters"),
        ({"id": "x" * (MAX_ID_LENGTH + 1), "job": SEED["job"]}, "1 to 256 printable characters"),
        ({"id": "a\nb", "job": SEED["job"]}, "printable characters"),
    ],
)
def test_malformed_jobs_are_refused_with_a_message_that_says_why(raw: Any, message: str) -> None:
    with pytest.raises(InvalidJob) as caught:
        parse_job(raw)
    assert message in str(caught.value)


def test_payload_encoding_is_canonical() -> None:
    one = parse_job({"id": "a", "job": {"plugin": "p", "data": {"x": 1, "y": [1, {"b": 2, "a": 1}]}}})
    two = parse_job({"id": "a", "job": {"data": {"y": [1, {"a": 1, "b": 2}], "x": 1}, "plugin": "p"}})
    assert encode_payload(one) == encode_payload(two)
    assert json.loads(encode_payload(one)) == {"plugin": "p", "data": one.data}


def test_final_statuses() -> None:
    final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED}
    assert {s for s in JobStatus if s.is_final} == final


@pytest.mark.parametrize("seconds", [10**400, -(10**400), float("inf"), float("nan"), -1, True, "5"])
def test_a_delay_or_time_limit_out_of_range_is_refused_as_invalid(seconds: object) -> None:
    # An int beyond any float once escaped as OverflowError instead of InvalidJob.
    with pytest.raises(InvalidJob, match="delay_s must be a number of seconds"):
        schedule_of({"delay_s": seconds})
    raw = {"job": {"plugin": "p", "data": {}}, "options": {"timeout_s": seconds}}
    with pytest.raises(InvalidJob, match="timeout_s must be a number of seconds"):
        parse_job(raw)


@pytest.mark.parametrize(
    "data",
    [{}, {"b": 1, "a": [1, 2.5, None, True]}, {"text": "é ☃ \u2028", "nested": {"z": (1, 2), "y": {}}}],
)
def test_the_payload_made_while_parsing_equals_the_canonical_encoding(data: dict[str, Any]) -> None:
    job, payload = parse_job_payload({"id": "x", "job": {"plugin": "p.q-1", "data": data}})
    assert (
        payload
        == encode_payload(job)
        == json.dumps(
            {"plugin": "p.q-1", "data": job.data}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    )
