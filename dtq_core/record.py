"""A job's stored record, read back strictly: garbage in storage is reported, never run.

Engines store the payload :func:`~dtq_core.job.encode_payload` made and a state
object of bookkeeping fields (status, attempts, lost, priority, seq,
created/started/finished/due in ms, worker, token, cancel, progress, message
and the per-job options). Something other than dtq can write into the same
storage: a script, an operator with a client, a bug elsewhere, a bad disk. So
what is read back is checked field by field before it becomes a
:class:`~dtq_core.job.Job`, and a record that dtq could not have written raises
:class:`~dtq_core.errors.MalformedRecord` saying what is wrong. A worker's
engine then buries the job as dead with that reason (see
:func:`malformed_error`) instead of handing garbage to a plugin, crashing, or
dropping it without a trace. Unknown state fields are ignored, so that a newer
dtq may add some during a rolling upgrade.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dtq_core.errors import InvalidJob, MalformedRecord
from dtq_core.job import (
    MAX_PRIORITY,
    MAX_RETRIES,
    MAX_SECONDS,
    ErrorInfo,
    Job,
    JobStatus,
    check_plugin_name,
    from_ms,
    is_utf8,
)

#: The error type of a job buried because its record is malformed.
MALFORMED = "MalformedRecord"
#: The latest time a stored record may hold (ms since the epoch): the end of year 9999.
MAX_TIME_MS = 253_402_300_799_999
#: Arrival numbers stay below 2^52, so queue scores stay exact doubles.
MAX_SEQ = 2**52
_PAYLOAD_KEYS = frozenset({"plugin", "data"})
#: A status by its value, and the values a state may hold: a look-up, where JobStatus(value)
#: runs Enum's whole call.
_STATUS_OF = {status.value: status for status in JobStatus}
_TIMES = ("created", "started", "finished", "due")
#: Everything decoding text or building a Job from it can raise on garbage.
_DECODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError)


class _Unreadable(ValueError):
    """One part of a record is wrong; the message says which and how."""


def malformed_error(reason: str) -> ErrorInfo:
    """The error recorded on a job buried because its record is malformed."""
    return ErrorInfo(type=MALFORMED, message=f"malformed record: {reason}")


def job_from_state(
    job_id: str,
    payload: str | None,
    state: Mapping[str, Any] | str | None,
    result_json: str | None = None,
    error_json: str | None = None,
    errors: Sequence[str] = (),
) -> Job:
    """Rebuild a :class:`Job` from what engines store, checking every field.

    ``payload`` is the canonical ``{"data", "plugin"}`` JSON; ``state`` the
    job's bookkeeping (a mapping, or its JSON) with the keys the bundled
    engines use; errors are JSON strings. None stands for a missing part.

    Raises:
        MalformedRecord: a part is missing, is not JSON, or holds what dtq
            never writes; ``reason`` says which.
    """
    try:
        return _job(job_id, payload, state, result_json, error_json, errors)
    except _DECODE_ERRORS as exc:
        reason = str(exc) if isinstance(exc, _Unreadable) else f"unreadable ({type(exc).__name__}: {exc})"
        raise MalformedRecord(job_id, reason) from exc


def leased_job(job_id: str, queue_plugin: str, payload: str | None, state: Mapping[str, Any] | str) -> Job:
    """The job a worker took from ``queue_plugin``'s queue, checked as :func:`job_from_state` does.

    Raises:
        MalformedRecord: the record is malformed, or names another plugin than
            the queue it was in (so it is never run as the queue's plugin).
    """
    job = job_from_state(job_id, payload, state)
    if job.plugin != queue_plugin:
        reason = f"the payload names plugin {job.plugin!r} but the job was in the queue of {queue_plugin!r}"
        raise MalformedRecord(job_id, reason)
    return job


def _job(
    job_id: str,
    payload: str | None,
    state: Mapping[str, Any] | str | None,
    result_json: str | None,
    error_json: str | None,
    errors: Sequence[str],
) -> Job:
    plugin, data = read_payload(payload)
    fields = read_state(state)
    return Job(
        id=job_id,
        plugin=plugin,
        data=data,
        status=_STATUS_OF[fields.get("status", "queued")],
        result=None if result_json is None else _loads(result_json, "result"),
        error=None if error_json is None else _error(error_json),
        errors=tuple(_error(e) for e in errors),
        attempts=_whole(fields, "attempts", 0, 2**52) or 0,
        lost_leases=_whole(fields, "lost", 0, 2**52) or 0,
        priority=_whole(fields, "priority", -MAX_PRIORITY, MAX_PRIORITY) or 0,
        max_retries=_whole(fields, "max_retries", 0, MAX_RETRIES),
        retry_backoff_s=_seconds(fields, "retry_backoff_s"),
        timeout_s=_seconds(fields, "timeout_s"),
        progress=_number(fields, "progress"),
        message=_text(fields, "message"),
        cancel_requested=bool(fields.get("cancel")),
        worker=_text(fields, "worker"),
        created_at=from_ms(fields.get("created")),
        started_at=from_ms(fields.get("started")),
        finished_at=from_ms(fields.get("finished")),
        eta=from_ms(fields.get("due")),
    )


def read_payload(payload: str | None) -> tuple[str, dict[str, Any]]:
    """The plugin name and data of a stored payload.

    Raises:
        ValueError: with the reason, when it is not ``{"data": {...}, "plugin": NAME}``.
    """
    if payload is None:
        raise _Unreadable("no payload (a state without a payload)")
    body = _loads(payload, "payload")
    if not isinstance(body, dict):
        raise _Unreadable(f"the payload is a JSON {_kind(body)}, not an object {{data, plugin}}")
    if body.keys() != _PAYLOAD_KEYS:
        raise _Unreadable(f"the payload's fields are {_names(body)}, not data and plugin")
    try:
        plugin = check_plugin_name(body["plugin"])
    except InvalidJob:
        raise _Unreadable(f"the payload's plugin is {_show(body['plugin'])}, not a plugin name") from None
    if not isinstance(body["data"], dict):
        raise _Unreadable(f"the payload's data is a JSON {_kind(body['data'])}, not an object")
    return plugin, body["data"]


def read_state(state: Mapping[str, Any] | str | None) -> Mapping[str, Any]:
    """A stored state, its status and times checked (the other fields are checked as they are read).

    Raises:
        ValueError: with the reason, when it is missing, not an object, or
            holds a status or time dtq never writes.
    """
    if state is None:
        raise _Unreadable("no state (a payload without a state)")
    fields = _loads(state, "state") if isinstance(state, str) else state
    if not isinstance(fields, Mapping):
        raise _Unreadable(f"the state is a JSON {_kind(fields)}, not an object")
    status = fields.get("status", "queued")
    if not isinstance(status, str) or status not in _STATUS_OF:
        raise _Unreadable(
            f"the state's status is {_show(status)}, not one of {', '.join(sorted(_STATUS_OF))}"
        )
    _whole(fields, "seq", 0, MAX_SEQ)
    for name in _TIMES:
        if fields.get(name) != "":
            _whole(fields, name, 0, MAX_TIME_MS)
    return fields


def _loads(text: object, what: str) -> Any:
    if not isinstance(text, str):  # a SQLite column holds whatever type was written
        raise _Unreadable(f"the {what} is {type(text).__name__}, not JSON text")
    if not is_utf8(text):
        raise _Unreadable(f"the {what} is not valid UTF-8 text")
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise _Unreadable(f"the {what} is JSON nested too deeply to read") from None
    except ValueError as exc:
        raise _Unreadable(f"the {what} is not valid JSON ({exc})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large for a JSON number")
    return value


# Built once: json.loads given hooks builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def _error(text: str) -> ErrorInfo:
    raw = _loads(text, "error")
    if not isinstance(raw, dict):
        raise _Unreadable(f"an error is a JSON {_kind(raw)}, not an object")
    return ErrorInfo.from_dict(raw)


def _whole(fields: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    """The field as an int (None when absent), if it is a whole number from ``low`` to ``high``."""
    value = fields.get(name)
    if type(value) is int and low <= value <= high:  # nearly always: a worker reads nine per job
        return value
    if value is None:
        return None
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    # Lua's cjson writes large whole numbers as floats (1e+15): integral floats are fine.
    if not (math.isfinite(number) and number == int(number) and low <= number <= high):
        span = f"from {low} up" if high >= MAX_SEQ else f"from {low} to {high}"
        raise _Unreadable(f"the state's {name} is {_show(value)}, not a whole number {span}")
    return int(number)


def _seconds(fields: Mapping[str, Any], name: str) -> float | None:
    value = _number(fields, name)
    if value is not None and not 0 <= value <= MAX_SECONDS:
        raise _Unreadable(f"the state's {name} is {_show(value)}, not a number of seconds")
    return value


def _number(fields: Mapping[str, Any], name: str) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Unreadable(f"the state's {name} is {_show(value)}, not a number")
    return float(value)


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise _Unreadable(f"the state's {name} is {_show(value)}, not text")
    return value


def _kind(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    if isinstance(value, bool):
        return "boolean"
    kinds = {dict: "object", list: "array", str: "string", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _names(body: Mapping[str, Any]) -> str:
    return ", ".join(_show(key) for key in sorted(body, key=str)) or "none"


def _show(value: Any) -> str:
    """``repr(value)``, cut short: a message must stay readable whatever the garbage."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
