"""The producer side: append jobs, read them back, wait for results."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from dtq_core.config import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PREFIX,
    MAX_PRIORITY,
    namespace_from_env,
)
from dtq_core.engine import AppendOutcome, Engine, resolve_engine
from dtq_core.errors import (
    DuplicateJob,
    InvalidJob,
    JobFailed,
    JobNotFound,
    PayloadTooLarge,
    ResultTimeout,
)
from dtq_core.job import (
    Job,
    JobStatus,
    check_data,
    check_plugin_name,
    encode_payload,
    normalise_id,
    parse_job,
)
from dtq_core.plugin import PluginRegistry

#: How long one wait for a result may block before checking again (seconds).
_WAIT_SLICE_S = 30.0


class Queue:
    """Appends jobs for workers anywhere and reads their outcome.

    Args:
        plugins: the allow-list. A job naming any other plugin is refused. A name
            on the list need not be installed here: the job is then queued
            without local validation, for workers that have the plugin. ``None``
            allows every plugin installed here (and only those).
        url: engine URL; default ``$DTQ_URL``, then ``redis://localhost:6379/0``.
        engine: an :class:`~dtq_core.Engine` instance or subclass to use instead
            of the one the URL's scheme names.
        namespace: scopes job ids and queues; workers must use the same one.
            Default ``$DTQ_NAMESPACE``, then ``default``.
        prefix: first part of every storage key.
        max_payload_bytes: largest encoded job accepted.
        engine_options: further engine attributes to override.
    """

    def __init__(
        self,
        plugins: Iterable[str] | None = None,
        url: str | None = None,
        *,
        engine: Engine | type[Engine] | None = None,
        namespace: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.registry = PluginRegistry(plugins)
        self.engine = resolve_engine(
            engine, url, prefix=prefix, namespace=namespace_from_env(namespace), **dict(engine_options or {})
        )
        self.max_payload_bytes = max_payload_bytes

    def append(self, job: Mapping[str, Any]) -> Job:
        """Queue a job given in the wire format ``{"id", "job": {"plugin", "data"}}``.

        Appending an id that already exists never creates a second job: with the
        same plugin and data it returns the existing job as it is now (so a retried
        append is safe); with different ones it raises :class:`DuplicateJob`.

        Raises:
            InvalidJob: the dict is malformed or the data is not JSON.
            ValidationError: the plugin's ``validate`` refused the job.
            PayloadTooLarge: the encoded job exceeds ``max_payload_bytes``.
            PluginNotAllowed, UnknownPlugin, PluginLoadError, DuplicatePlugin:
                the plugin cannot be used.
            DuplicateJob: the id exists with different contents.
            EngineUnavailable: the engine cannot be reached.
        """
        return self._append(parse_job(job))

    def enqueue(
        self,
        plugin: str,
        data: Mapping[str, Any],
        *,
        id: str | int | None = None,  # noqa: A002 - the wire format's own name
        priority: int = 0,
    ) -> Job:
        """Queue a job from keyword arguments; see :meth:`append` for behaviour and errors.

        ``priority``: an integer in [-4095, 4095]; higher runs first, first in
        first out among equals.
        """
        job = Job(id=normalise_id(id), plugin=check_plugin_name(plugin), data=check_data(data))
        return self._append(attrs.evolve(job, priority=_check_priority(priority)))

    def get(self, job_id: str | int) -> Job | None:
        """The job's current record, or None if no such job exists (or it expired)."""
        return self.engine.get(normalise_id(job_id))

    def result(self, job_id: str | int, timeout: float | None = None) -> Any:
        """Wait until the job is final and return its result.

        Blocks on a notification from the engine rather than polling.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes.

        Raises:
            JobNotFound: no such job.
            JobFailed: the job failed or is dead (``exc.job`` has the error).
            ResultTimeout: it did not finish in time.
        """
        key = normalise_id(job_id)
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        job = self.engine.get(key)
        while job is not None and not job.status.is_final and time.monotonic() < deadline:
            job = self.engine.wait_for_final(key, min(_WAIT_SLICE_S, deadline - time.monotonic()))
        if job is None:
            raise JobNotFound(f"no job with id {key!r} (never appended, or its record expired)")
        if job.status is JobStatus.SUCCEEDED:
            return job.result
        if job.status.is_final:
            raise JobFailed(_failure_message(job), job=job)
        raise ResultTimeout(f"job {key!r} is still {job.status.value} after {timeout} s")

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _append(self, job: Job) -> Job:
        self.registry.check_allowed(job.plugin)
        self._validate(job)
        payload = encode_payload(job)
        size = len(payload.encode("utf-8"))
        if size > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"job {job.id!r} encodes to {size} bytes, over the limit of "
                f"{self.max_payload_bytes} (max_payload_bytes); keep large inputs elsewhere "
                "(a file, a database, object storage) and put their location in data"
            )
        outcome = self.engine.append(job, payload)
        if outcome is AppendOutcome.CONFLICT:
            raise DuplicateJob(
                f"a job with id {job.id!r} already exists with a different plugin or data; "
                "use another id, or omit it to get a generated one",
                job_id=job.id,
            )
        if outcome is AppendOutcome.EXISTS:
            return self.engine.get(job.id) or job
        return job

    def _validate(self, job: Job) -> None:
        # A name on the allow-list that is not installed here is queued as is:
        # the workers that have the plugin validate nothing more, by design.
        if self.registry.allow is not None and not self.registry.is_installed(job.plugin):
            return
        self.registry.get(job.plugin).validate(job)


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise InvalidJob(
            f"priority must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY}, got {priority!r}"
        )
    return priority


def _failure_message(job: Job) -> str:
    reason = "no error recorded" if job.error is None else f"{job.error.type}: {job.error.message}"
    return f"job {job.id!r} ({job.plugin}) ended {job.status.value} after {job.attempts} attempt(s): {reason}"
