"""The job value: wire format, validation of appended dicts, JSON round trips."""

from __future__ import annotations

import enum
import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtq_core import ErrorInfo, InvalidJob, Job, JobStatus, Plugin
from dtq_core.caller import Control, LocalCaller
from dtq_core.engine import Lease
from dtq_core.job import (
    MAX_ID_LENGTH,
    dumps,
    encode_payload,
    json_encoder,
    parse_job,
    parse_job_payload,
    schedule_of,
)
from dtq_core.retry import Attempt, Ending
from dtq_core.runner import call_plugin

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


# --- JSON encoding made once -----------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


class _Colour(str, enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 7


@pytest.mark.parametrize(
    "options",
    [
        {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False, "allow_nan": False},
        {"allow_nan": False},
    ],
    ids=["canonical", "result"],
)
@settings(max_examples=300, deadline=None)
@given(value=_JSON)
def test_an_encoder_made_once_writes_what_json_writes(options: dict[str, Any], value: object) -> None:
    assert json_encoder(**options)(value) == json.JSONEncoder(**options).encode(value)


def test_an_encoder_made_once_writes_enum_members_and_tuples_as_json_does() -> None:
    value = {"colour": _Colour.RED, "level": _Level.HIGH, "pair": (1, "é"), "flag": True}
    assert dumps(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (math.nan, ValueError),
        ({"x": math.inf}, ValueError),
        ({"x": {1, 2}}, TypeError),
        ({"x": b"bytes"}, TypeError),
        ({1: "non-string key", "a": 1}, TypeError),  # sort_keys cannot order 1 and "a"
    ],
)
def test_an_encoder_made_once_refuses_what_json_cannot_carry(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        dumps(value)


def test_a_value_that_contains_itself_is_refused_as_json_refuses_it() -> None:
    looped: list[object] = [1]
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps({"x": looped})
    assert dumps({"x": [1]}) == '{"x":[1]}'


def test_an_error_half_way_leaves_nothing_that_spoils_the_next_value() -> None:
    # The encoder marks the containers it is inside of; an error must not leave them
    # marked, or the same dict, mended, would be refused as containing itself.
    inner: list[object] = [1, {2, 3}]
    value = {"a": inner}
    with pytest.raises(TypeError):
        dumps(value)
    inner[1] = 2
    assert dumps(value) == '{"a":[1,2]}'


def test_each_thread_encodes_with_an_encoder_of_its_own() -> None:
    # Several threads at once, each value deep enough that their encodings overlap.
    values = [{"n": n, "deep": [[[[n] * 50] * 4] * 4]} for n in range(8)]
    expected = [json.dumps(v, sort_keys=True, separators=(",", ":")) for v in values]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(20):
            assert list(pool.map(dumps, values)) == expected


class _Returns(Plugin):
    def __init__(self, value: object) -> None:
        self.value = value

    def process(self, job: Job) -> object:
        return self.value


def _run(plugin: Plugin) -> Attempt:
    job = Job.from_dict({"id": "j", "job": {"plugin": "returns", "data": {}}})
    caller = LocalCaller(Control(Lease(job, "token"), deadline=None), None, None)  # type: ignore[arg-type]
    return call_plugin(plugin, job, caller)


def _looped() -> list[object]:
    looped: list[object] = []
    looped.append(looped)
    return looped


@pytest.mark.parametrize(
    "value", [math.nan, {1, 2}, object(), _looped()], ids=["nan", "set", "object", "loop"]
)
def test_a_result_json_cannot_carry_fails_the_job_for_good_and_says_why(value: object) -> None:
    attempt = _run(_Returns(value))
    assert attempt.ending is Ending.PERMANENT and attempt.error is not None
    assert attempt.error.type == "ResultNotJSON"
    assert "returned a value JSON cannot carry" in attempt.error.message


def test_a_result_is_written_as_json_dumps_writes_it() -> None:
    value = {"b": [1, 2.5, None], "a": "é"}
    attempt = _run(_Returns(value))
    assert attempt.result_json == json.dumps(value)
