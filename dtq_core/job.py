"""Jobs as values: the wire format, its validation, and JSON encoding.

A job is what an application appends::

    {"id": "test_job_one",
     "job": {"plugin": "test_only", "data": {"text": "To be processed!"}}}

:class:`Job` models it together with what dtq records about it (status,
attempts, result or error, timestamps). A ``Job`` never holds a connection and
never changes: engines return new values. JSON is the only encoding, both on the
wire and in storage; nothing is ever pickled.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import threading
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from json import encoder as json_encoding
from typing import Any

import attrs

from dtq_core.config import in_bounds
from dtq_core.errors import InvalidJob

MAX_ID_LENGTH = 256
MAX_PRIORITY = 4095
#: The most retries a job may ask for.
MAX_RETRIES = 1_000_000
#: The longest delay, backoff or time limit (about a century): longer ones are
#: mistakes, and would overflow the clocks and timers that must hold them.
MAX_SECONDS = 100 * 365.25 * 24 * 3600
#: ETAs must fall before this: stored times must stay within what a datetime holds.
LATEST_ETA = datetime(9999, 1, 1, tzinfo=timezone.utc)
_TOP_LEVEL_KEYS = frozenset({"id", "job", "options"})
_JOB_KEYS = frozenset({"plugin", "data"})
_OPTION_KEYS = frozenset({"priority", "max_retries", "retry_backoff_s", "timeout_s", "delay_s", "eta"})
_DECODER = json.JSONDecoder()


def json_encoder(**options: Any) -> Callable[[Any], str]:
    """``json.JSONEncoder(**options).encode``, the same text, its encoder made once per thread.

    ``JSONEncoder.encode`` builds a new C encoder on every call (and
    ``json.dumps`` with any option a new ``JSONEncoder`` too), which costs more
    than encoding a job's small data: 1.5 µs and 3 µs against 0.4-0.5 µs
    here. Each thread gets its own, since an encoder keeps the containers it
    is inside of (its check for a value that contains itself) while it runs.
    """
    python = json.JSONEncoder(**options)
    make: Any = getattr(json_encoding, "c_make_encoder", None)  # untyped: the C accelerator's
    if make is None or python.indent is not None:  # no C accelerator (PyPy), or indenting
        return python.encode
    ascii_only = python.ensure_ascii
    strings = json_encoding.encode_basestring_ascii if ascii_only else json_encoding.encode_basestring

    def made(markers: dict[int, Any]) -> Any:
        return make(
            markers,
            python.default,
            strings,
            None,
            python.key_separator,
            python.item_separator,
            python.sort_keys,
            python.skipkeys,
            python.allow_nan,
        )

    try:
        made({})
    except TypeError:  # a Python whose accelerator takes other arguments (3.11-3.13 take these)
        return python.encode
    local = threading.local()

    def encode(value: Any) -> str:
        try:
            markers, encoder = local.pair
        except AttributeError:
            markers = {}
            encoder = made(markers)
            local.pair = (markers, encoder)
        try:
            return "".join(encoder(value, 0))
        except BaseException:
            # An error leaves the containers it was inside of marked: a later value
            # holding one of them would look as if it contained itself.
            markers.clear()
            raise

    return encode


#: :func:`dumps`: canonical JSON (sorted keys, no spaces, no NaN).
_encode_canonical = json_encoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class JobStatus(str, enum.Enum):
    """Where a job is in its life. ``succeeded``, ``failed`` and ``dead`` are final."""

    #: Waiting for a delay, an ETA or a retry's backoff.
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    #: Failed with no retry left to try (none configured, or a permanent error).
    FAILED = "failed"
    #: dtq gave up: retries exhausted, too many lost leases, or unrunnable.
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True once the job will not run again by itself."""
        return self in _FINAL

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED})


def exception_message(exc: BaseException) -> str:
    """``str(exc)``, or what stands in for it when the exception's class fails to give one."""
    try:
        return str(exc)
    except Exception as failed:  # the plugin's exception class is at fault: still, its job fails
        return f"<str() of the exception failed: {type(failed).__qualname__}>"


@attrs.frozen
class ErrorInfo:
    """Why an attempt failed: exception type, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture ``exc`` (with its traceback) as plain strings."""
        formatted = "".join(traceback.format_exception(exc))  # safe: it stands in for a str() that fails
        return cls(type=type(exc).__qualname__, message=exception_message(exc), traceback=formatted)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ErrorInfo:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            type=str(raw.get("type", "")),
            message=str(raw.get("message", "")),
            traceback=str(raw.get("traceback", "")),
        )

    def to_dict(self) -> dict[str, str]:
        """The JSON shape: ``{"type", "message", "traceback"}``."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


# Not slotted: a frozen slotted class sets each of its 21 fields through
# object.__setattr__, which made a Job cost twice as much to build (1.5 µs), a
# fifth of a bulk append's work per job on the client; a frozen class with a
# __dict__ writes the fields straight into it.
@attrs.frozen(slots=False)
class Job:
    """One job and everything dtq knows about it.

    ``id``, ``plugin`` and ``data`` are what the application appended, with
    its options (``priority``, ``max_retries``, ``retry_backoff_s``,
    ``timeout_s``; None means the plugin's default). The other fields are
    written by dtq as the job moves through its life: ``attempts`` counts
    deliveries to a worker (a worker killed mid-job still used one; a
    prefetched job handed back unstarted did not);
    ``lost_leases`` counts the deliveries whose worker stopped renewing its
    lease; ``errors`` holds each failed attempt's error, oldest first, and
    ``error`` the last one; ``eta`` is when a scheduled job is due.
    """

    id: str
    plugin: str
    data: dict[str, Any]
    status: JobStatus = JobStatus.QUEUED
    result: Any = None
    error: ErrorInfo | None = None
    errors: tuple[ErrorInfo, ...] = ()
    attempts: int = 0
    lost_leases: int = 0
    priority: int = 0
    max_retries: int | None = None
    retry_backoff_s: float | None = None
    timeout_s: float | None = None
    progress: float | None = None
    message: str | None = None
    cancel_requested: bool = False
    worker: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    eta: datetime | None = None

    def options(self) -> dict[str, Any]:
        """The per-job options that differ from the plugin's defaults."""
        chosen = {
            "priority": self.priority,
            "max_retries": self.max_retries,
            "retry_backoff_s": self.retry_backoff_s,
            "timeout_s": self.timeout_s,
        }
        return {key: value for key, value in chosen.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        """The job in the original design's shape plus dtq's bookkeeping.

        ``{"id", "job": {"plugin", "data"}, "status", "attempts", "result",
        "error", ...}`` with timestamps as ISO 8601 strings in UTC.
        """
        return {
            "id": self.id,
            "job": {"plugin": self.plugin, "data": self.data},
            "status": self.status.value,
            "result": self.result,
            "error": None if self.error is None else self.error.to_dict(),
            "errors": [error.to_dict() for error in self.errors],
            "attempts": self.attempts,
            "lost_leases": self.lost_leases,
            "priority": self.priority,
            "max_retries": self.max_retries,
            "retry_backoff_s": self.retry_backoff_s,
            "timeout_s": self.timeout_s,
            "progress": self.progress,
            "message": self.message,
            "cancel_requested": self.cancel_requested,
            "worker": self.worker,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "eta": _iso(self.eta),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, check: bool = True) -> Job:
        """Rebuild a job from :meth:`to_dict` output (the inverse, field by field).

        Its id, plugin and data are checked as an appended job's are, unless
        ``check`` is false: for a job that dtq checked already (a job process
        given its job by its worker), in half the time.
        """
        if check:
            appended = parse_job({"id": raw["id"], "job": raw["job"]})
            job_id, plugin, data = appended.id, appended.plugin, appended.data
        else:
            job_id, plugin, data = raw["id"], raw["job"]["plugin"], raw["job"]["data"]
        error = raw.get("error")
        return cls(
            id=job_id,
            plugin=plugin,
            data=data,
            status=JobStatus(raw.get("status", "queued")),
            result=raw.get("result"),
            error=None if error is None else ErrorInfo.from_dict(error),
            errors=tuple(ErrorInfo.from_dict(e) for e in raw.get("errors") or ()),
            attempts=int(raw.get("attempts", 0)),
            lost_leases=int(raw.get("lost_leases", 0)),
            priority=int(raw.get("priority", 0)),
            max_retries=raw.get("max_retries"),
            retry_backoff_s=raw.get("retry_backoff_s"),
            timeout_s=raw.get("timeout_s"),
            progress=raw.get("progress"),
            message=raw.get("message"),
            cancel_requested=bool(raw.get("cancel_requested", False)),
            worker=raw.get("worker"),
            created_at=_parse_iso(raw.get("created_at")),
            started_at=_parse_iso(raw.get("started_at")),
            finished_at=_parse_iso(raw.get("finished_at")),
            eta=_parse_iso(raw.get("eta")),
        )


def new_job_id() -> str:
    """A fresh random job id (32 hex characters)."""
    return os.urandom(16).hex()


def new_job_ids(count: int) -> list[str]:
    """``count`` fresh random job ids, as :func:`new_job_id` makes them (from one read of randomness)."""
    pool = os.urandom(16 * count).hex()
    return [pool[start : start + 32] for start in range(0, 32 * count, 32)]


def parse_job(raw: object) -> Job:
    """Validate an appended job dict and return it as a queued :class:`Job`; see :func:`parse_job_payload`."""
    return parse_job_payload(raw)[0]


def parse_job_payload(raw: object) -> tuple[Job, str]:
    """Validate an appended job dict; return it as a queued :class:`Job`, and its payload.

    The payload is :func:`encode_payload` of the job, made from the encoding the
    check of its data made already (a bulk append encodes each job once).

    Accepts ``{"id": ..., "job": {"plugin": ..., "data": {...}}}``; ``id`` may be
    omitted (one is generated) and may be a string or an integer.

    Raises:
        InvalidJob: the shape, id, plugin name or data is wrong; the message says
            which part and what is expected.
    """
    if not isinstance(raw, Mapping):
        raise InvalidJob(
            f"a job must be a dict like {{'id': ..., 'job': {{'plugin': ..., 'data': {{...}}}}}}, "
            f"got {type(raw).__name__}"
        )
    _reject_unknown_keys(raw, _TOP_LEVEL_KEYS, "job")
    body = raw.get("job")
    if not isinstance(body, Mapping):
        raise InvalidJob(
            "a job needs a 'job' dict holding 'plugin' and 'data', "
            f"got {'nothing' if body is None else type(body).__name__}"
        )
    _reject_unknown_keys(body, _JOB_KEYS, "job['job']")
    options = raw.get("options") or {}
    if not isinstance(options, Mapping):
        raise InvalidJob(f"job['options'] must be a dict, got {type(options).__name__}")
    _reject_unknown_keys(options, _OPTION_KEYS, "job['options']")
    return job_payload(
        body.get("plugin"),
        body.get("data"),
        raw.get("id"),
        {k: v for k, v in options.items() if k not in ("delay_s", "eta")},
    )


def job_payload(plugin: object, data: object, job_id: object, options: Mapping[str, Any]) -> tuple[Job, str]:
    """A queued :class:`Job` from its parts, checked in the order :func:`parse_job_payload`
    checks them (plugin name, data, id, options), and its payload.

    ``options`` are the :func:`checked_options` keywords given.

    Raises:
        InvalidJob: a part is wrong; the message says which and what is expected.
    """
    name = check_plugin_name(plugin)
    checked, data_json = _checked_data(data)
    job = Job(
        id=normalise_id(job_id),
        plugin=name,
        data=checked,
        **checked_options(**options),
    )
    return job, _payload(name, data_json)


def job_like(first: Job, data: object, job_id: str) -> tuple[Job, str]:
    """A queued job with ``first``'s plugin and options (checked already), and its payload.

    ``job_id`` is taken as it is (a generated one); only ``data`` is checked.

    Raises:
        InvalidJob: the data is wrong, as :func:`parse_job_payload` says it.
    """
    checked, data_json = _checked_data(data)
    job = Job(
        id=job_id,
        plugin=first.plugin,
        data=checked,
        priority=first.priority,
        max_retries=first.max_retries,
        retry_backoff_s=first.retry_backoff_s,
        timeout_s=first.timeout_s,
    )
    return job, _payload(first.plugin, data_json)


def checked_options(
    *,
    priority: object = 0,
    max_retries: object = None,
    retry_backoff_s: object = None,
    timeout_s: object = None,
) -> dict[str, Any]:
    """A job's options, checked: the :class:`Job` fields they set.

    Raises:
        InvalidJob: an option has the wrong type or is out of range.
    """
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise InvalidJob(
            f"priority must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY}, got {priority!r}"
        )
    return {
        # Plain int: a subclass (an IntEnum) would reach the engine as its repr.
        "priority": int(priority),
        "max_retries": _optional_count("max_retries", max_retries),
        "retry_backoff_s": optional_seconds("retry_backoff_s", retry_backoff_s),
        "timeout_s": optional_seconds("timeout_s", timeout_s),
    }


def schedule_of(options: Mapping[str, Any]) -> tuple[float, datetime | None]:
    """The ``delay_s`` and ``eta`` of an appended job's options, checked.

    Raises:
        InvalidJob: the delay is negative or not a number, or the ETA is not an
            aware datetime (or ISO 8601 string with a UTC offset).
    """
    return checked_schedule(options.get("delay_s"), options.get("eta"))


def checked_schedule(delay_s: object, eta: object) -> tuple[float, datetime | None]:
    """:func:`schedule_of` given the two options themselves (None for absent)."""
    delay = optional_seconds("delay_s", delay_s) or 0.0
    if isinstance(eta, str):
        try:
            eta = datetime.fromisoformat(eta)
        except ValueError as exc:
            raise InvalidJob(f"eta must be an ISO 8601 time, got {eta!r}") from exc
    return delay, None if eta is None else _check_eta(eta)


def _check_eta(eta: object) -> datetime:
    if not isinstance(eta, datetime) or eta.utcoffset() is None:
        raise InvalidJob(
            f"eta must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)), got {eta!r}"
        )
    try:
        too_late = eta.astimezone(timezone.utc) >= LATEST_ETA
    except OverflowError:  # past the end of year 9999 once in UTC
        too_late = True
    if too_late:
        raise InvalidJob(f"eta must be before {LATEST_ETA.isoformat()}, got {eta.isoformat()}")
    return eta


def _optional_count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise InvalidJob(f"{name} must be a whole number from 0 up, at most {MAX_RETRIES}, got {value!r}")
    return int(value)


def optional_seconds(name: str, value: object) -> float | None:
    """``value`` as seconds: None, or a finite number from 0 to :data:`MAX_SECONDS`.

    Raises:
        InvalidJob: it is something else; the message names ``name``.
    """
    if value is None:
        return None
    if not in_bounds(value, 0, MAX_SECONDS):
        raise InvalidJob(
            f"{name} must be a number of seconds from 0 up, at most {MAX_SECONDS:.0f}, got {value!r}"
        )
    return float(value)


def normalise_id(value: object) -> str:
    """Return the job id as a string, generating one when ``value`` is None.

    Raises:
        InvalidJob: the id is not a non-empty string or an integer, or is too long.
    """
    if value is None:
        return new_job_id()
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidJob(f"a job id must be a string or an integer, got {type(value).__name__}")
    if isinstance(value, int) and abs(value) >= 10**MAX_ID_LENGTH:
        raise InvalidJob(f"a job id must be 1 to {MAX_ID_LENGTH} printable characters, got a longer integer")
    text = str(value)
    if not text or len(text) > MAX_ID_LENGTH or not text.isprintable():
        raise InvalidJob(f"a job id must be 1 to {MAX_ID_LENGTH} printable characters, got {text[:40]!r}")
    return text


def check_plugin_name(value: object) -> str:
    """Return ``value`` if it is a usable plugin name.

    Raises:
        InvalidJob: the name is missing, not a string, or has characters that an
            entry-point name cannot have.
    """
    if not isinstance(value, str) or not value:
        raise InvalidJob(
            f"a job must name its plugin: job['job']['plugin'] must be a non-empty string, got {value!r}"
        )
    if not _is_entry_point_name(value):
        raise InvalidJob(
            f"plugin name {value!r} is not a valid entry-point name (no spaces, '=', '[' or ']')"
        )
    return str.__str__(value)  # plain text: a str subclass (a str Enum) would format as something else


@functools.lru_cache(maxsize=256)
def _is_entry_point_name(value: str) -> bool:
    # Remembered: a producer names the same few plugins over and over.
    return value.isprintable() and not any(ch.isspace() or ch in "=[]" for ch in value)


def check_data(value: object) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object whose round trip is lossless.

    Raises:
        InvalidJob: data is not a dict, has non-string keys, or holds values JSON
            cannot carry (sets, objects, NaN, ...).
    """
    return _checked_data(value)[0]


def _checked_data(value: object) -> tuple[dict[str, Any], str]:
    """:func:`check_data`, and the data's canonical JSON.

    The data is encoded and decoded back; when the copy equals the original,
    nothing was lost and no slower look is needed. Otherwise (a tuple, which
    becomes a list, or a non-string key, which JSON would turn into a string)
    the keys are looked at one by one. The copy is returned, never the caller's
    dicts: a job does not change when the caller's data does.
    """
    if type(value) is not dict and not isinstance(value, Mapping):  # the first: far cheaper
        raise InvalidJob(
            "job['job']['data'] must be a dict (a JSON object) holding everything the "
            f"plugin needs, got {'nothing' if value is None else type(value).__name__}"
        )
    try:
        text = dumps(value)
        # A fresh dict (the text is a JSON object's): the copy the job keeps, with no other made.
        decoded: dict[str, Any] = _DECODER.raw_decode(text)[0]  # ours: no whitespace around it
        lossless = decoded == value
    except (TypeError, ValueError, RecursionError) as exc:
        _check_keys(value)  # a non-string key is the reason to name first
        raise _unencodable(exc) from exc
    if not lossless:
        _check_keys(value)
    if not is_utf8(text):
        raise InvalidJob(
            "job data holds text that is not valid Unicode (a lone surrogate such as '\\ud800'), "
            "which JSON text in UTF-8 cannot carry"
        )
    return decoded, text


def _check_keys(value: object) -> None:
    try:
        _check_keys_are_strings(value, "data")
    except RecursionError as exc:
        raise _unencodable(exc) from exc


def _unencodable(exc: BaseException) -> InvalidJob:
    if isinstance(exc, RecursionError):
        return InvalidJob("job data is nested too deeply, or contains itself: JSON cannot carry it")
    return InvalidJob(
        f"job data must be JSON-serialisable (dicts, lists, strings, numbers, booleans, null): {exc}"
    )


def is_utf8(text: str) -> bool:
    """True if ``text`` encodes to UTF-8: it holds no lone surrogate."""
    if text.isascii():  # most text, and far cheaper to tell than to encode
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps(value: Any) -> str:
    """Encode ``value`` as compact, canonical JSON (sorted keys, no NaN).

    Raises:
        TypeError, ValueError: ``value`` holds what JSON cannot carry, or contains itself.
        RecursionError: it is nested too deeply.
    """
    return _encode_canonical(value)


def encode_payload(job: Job) -> str:
    """The stored form of what the application appended: ``{"data", "plugin"}``.

    Canonical, so two appends of the same job encode to the same string (which is
    how a repeated append is told apart from a conflicting one).
    """
    return _payload(job.plugin, dumps(job.data))


def _payload(plugin: str, data_json: str) -> str:
    # Exactly dumps({"plugin": plugin, "data": data}): sorted keys, so "data" comes first.
    return '{"data":' + data_json + _payload_end(plugin)


@functools.lru_cache(maxsize=256)
def _payload_end(plugin: str) -> str:
    # Remembered: a producer names the same few plugins over and over.
    return ',"plugin":' + dumps(plugin) + "}"


def from_ms(value: object) -> datetime | None:
    """Milliseconds since the epoch (as stored by engines) to an aware UTC datetime."""
    if value is None or value == "":
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)  # type: ignore[call-overload]


def _reject_unknown_keys(raw: Mapping[Any, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(key) for key in raw if key not in allowed)
    if unknown:
        raise InvalidJob(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _check_keys_are_strings(value: object, path: str) -> None:
    # json.dumps would silently turn {1: "a"} into {"1": "a"}: the worker would
    # see different data than was appended, so refuse instead.
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJob(f"{path} has a non-string key {key!r}; JSON object keys must be strings")
            _check_keys_are_strings(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_keys_are_strings(item, f"{path}[{index}]")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse_iso(text: object) -> datetime | None:
    return None if not text else datetime.fromisoformat(str(text))
