"""The Redis engine: every state change is one Lua script (see ``lua/``).

The data model is documented in :mod:`dtq_core.engines.redis.keys`; each script
opens with its KEYS/ARGV contract.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from dtq_core.config import DEFAULT_NAMESPACE, DEFAULT_PREFIX, mask_url
from dtq_core.engine import AppendOutcome, Engine, Lease, Outcome
from dtq_core.engines.redis.keys import Keys
from dtq_core.errors import EngineError, EngineUnavailable
from dtq_core.job import ErrorInfo, Job, JobStatus, from_ms

_SCRIPTS = ("append", "fetch", "complete", "renew", "expired", "recover")


class RedisEngine(Engine):
    """Jobs stored in one Redis database (or one Cluster slot per namespace).

    Args:
        client: a redis-py client created with ``decode_responses=True``.
        url: the URL it was made from, shown (password masked) in errors.
        prefix: first part of every key.
        namespace: the hash tag that scopes job ids and queues.
        signal_cap: the most wake-up hints kept per plugin.
        block_s: the longest single blocking call; kept below the socket
            timeout so a silent server is noticed.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        url: str = "redis://",
        prefix: str = DEFAULT_PREFIX,
        namespace: str = DEFAULT_NAMESPACE,
        signal_cap: int = 1000,
        block_s: float = 5.0,
    ) -> None:
        self.client = client
        self.url = url
        self.keys = Keys(prefix=prefix, namespace=namespace)
        self.signal_cap = signal_cap
        self.block_s = block_s
        self._scripts = {name: client.register_script(_lua(name)) for name in _SCRIPTS}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        retries: int = 3,
        **options: Any,
    ) -> RedisEngine:
        """Connect to ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        The client retries a failed command ``retries`` times with jittered
        exponential backoff (up to about a second between tries), so a Redis
        restart is ridden out instead of surfacing as an error; workers add their
        own backoff on top. ``options`` go to :class:`RedisEngine`.
        """
        try:
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                socket_keepalive=True,
                health_check_interval=15,
                retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            )
        except ValueError as exc:
            raise EngineError(f"bad Redis URL {mask_url(url)!r}: {exc}") from exc
        block_s = max(0.5, min(5.0, socket_timeout_s - 1.0))
        return cls(client, url=url, block_s=block_s, **options)

    # --- producer side ---------------------------------------------------------

    def append(self, job: Job, payload: str) -> AppendOutcome:
        """Queue ``job`` atomically unless its id exists (see ``append.lua``)."""
        k = self.keys
        keys = [k.jobs, k.state, k.ready(job.plugin), k.signal(job.plugin), k.seq, k.done(job.id)]
        args: list[str | int] = [job.id, payload, job.priority, self.signal_cap]
        with self._talking():
            created, same = self._scripts["append"](keys, args)
        if int(created):
            return AppendOutcome.CREATED
        return AppendOutcome.EXISTS if int(same) else AppendOutcome.CONFLICT

    def get(self, job_id: str) -> Job | None:
        """The job's record, read in one transaction (live or final)."""
        k = self.keys
        with self._talking():
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(k.jobs, job_id)
            pipe.hget(k.state, job_id)
            pipe.hgetall(k.done(job_id))
            payload, state, done = pipe.execute()
        if payload is not None and state is not None:
            return _job(job_id, payload, state)
        if done:
            return _job(job_id, done["payload"], done["state"], done.get("result"), done.get("error"))
        return None

    def wait_for_final(self, job_id: str, timeout_s: float) -> Job | None:
        """Subscribe to the job's channel, then block until it is final or time runs out."""
        deadline = time.monotonic() + timeout_s
        with self._talking():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                # Subscribe before reading so a completion between the read and
                # the wait cannot be missed.
                pubsub.subscribe(self.keys.finished_channel(job_id))
                job = self.get(job_id)
                while (job is None or not job.status.is_final) and time.monotonic() < deadline:
                    remaining = min(self.block_s, deadline - time.monotonic())
                    if pubsub.get_message(timeout=max(remaining, 0.0)) is not None:
                        job = self.get(job_id)
                return self.get(job_id) if job is None or not job.status.is_final else job
            finally:
                pubsub.close()

    # --- worker side -----------------------------------------------------------

    def fetch(self, plugins: Sequence[str], *, count: int, lease_s: float, worker_id: str) -> list[Lease]:
        """Pop and lease up to ``count`` jobs in one script call (see ``fetch.lua``)."""
        k = self.keys
        keys = [k.jobs, k.state]
        for plugin in plugins:
            keys += [k.ready(plugin), k.active(plugin)]
        with self._talking():
            flat = self._scripts["fetch"](keys, [count, int(lease_s * 1000), worker_id])
        return [
            Lease(_job(flat[i], flat[i + 1], flat[i + 2]), token=flat[i + 3]) for i in range(0, len(flat), 4)
        ]

    def wait_for_jobs(self, plugins: Sequence[str], timeout_s: float) -> None:
        """Block on the plugins' signal lists (BLPOP), at most ``block_s`` at a time."""
        keys = [self.keys.signal(p) for p in plugins]
        with self._talking():
            self.client.blpop(keys, timeout=max(0.01, min(timeout_s, self.block_s)))

    def complete(self, lease: Lease, outcome: Outcome, *, ttl_s: float) -> bool:
        """Record the outcome under the lease's fencing token (see ``complete.lua``)."""
        job = lease.job
        k = self.keys
        keys = [k.jobs, k.state, k.active(job.plugin), k.done(job.id)]
        error = "" if outcome.error is None else json.dumps(outcome.error.to_dict())
        args: list[str | int] = [
            job.id,
            lease.token,
            outcome.status.value,
            outcome.result_json or "",
            error,
            max(1, int(ttl_s)),
            k.finished_channel(job.id),
        ]
        with self._talking():
            return bool(self._scripts["complete"](keys, args))

    def renew(self, leases: Sequence[Lease], lease_s: float) -> list[str]:
        """Extend the leases, one script call per plugin, all in one round trip."""
        by_plugin: dict[str, list[str]] = {}
        for lease in leases:
            by_plugin.setdefault(lease.job.plugin, []).extend([lease.job.id, lease.token])
        if not by_plugin:
            return []
        with self._talking():
            pipe = self.client.pipeline(transaction=False)
            for plugin, pairs in by_plugin.items():
                keys = [self.keys.state, self.keys.active(plugin)]
                self._scripts["renew"](keys, [int(lease_s * 1000), *pairs], client=pipe)
            replies = pipe.execute()
        return [job_id for lost in replies for job_id in lost]

    def recover(self, plugin: str, *, max_lost_leases: int, ttl_s: float, limit: int = 100) -> int:
        """Requeue or bury each job of ``plugin`` whose lease expired."""
        k = self.keys
        with self._talking():
            expired = self._scripts["expired"]([k.active(plugin)], [limit])
            if not expired:
                return 0
            pipe = self.client.pipeline(transaction=False)
            for job_id in expired:
                self._recover_one(pipe, plugin, job_id, max_lost_leases, ttl_s)
            return sum(1 for reply in pipe.execute() if int(reply))

    def _recover_one(self, pipe: Any, plugin: str, job_id: str, max_lost: int, ttl_s: float) -> None:
        k = self.keys
        keys = [k.jobs, k.state, k.active(plugin), k.ready(plugin), k.signal(plugin), k.done(job_id)]
        error = ErrorInfo(
            type="LeaseLost",
            message=(
                f"the job lost its lease {max_lost} times: each worker that took it stopped "
                "renewing (killed, out of memory, or hung), so it is dead instead of taking "
                "more workers down; inspect it before requeueing"
            ),
        )
        args: list[str | int] = [
            job_id,
            max_lost,
            max(1, int(ttl_s)),
            json.dumps(error.to_dict()),
            k.finished_channel(job_id),
            self.signal_cap,
        ]
        self._scripts["recover"](keys, args, client=pipe)

    # --- plumbing --------------------------------------------------------------

    def ping(self) -> None:
        """Raise :class:`EngineUnavailable` unless Redis answers PING."""
        with self._talking():
            self.client.ping()

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise EngineUnavailable(
                f"cannot reach Redis at {mask_url(self.url)}: {str(exc).rstrip('.')}. Is "
                "redis-server running there? Set the URL with --url or DTQ_URL"
            ) from exc
        except redis.RedisError as exc:
            raise EngineError(f"Redis at {mask_url(self.url)} answered with an error: {exc}") from exc


def _lua(name: str) -> str:
    return importlib.resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


def _job(
    job_id: str,
    payload: str,
    state_json: str,
    result_json: str | None = None,
    error_json: str | None = None,
) -> Job:
    body = json.loads(payload)
    state: Mapping[str, Any] = json.loads(state_json)
    return Job(
        id=job_id,
        plugin=body["plugin"],
        data=body["data"],
        status=JobStatus(state.get("status", "queued")),
        result=None if result_json is None else json.loads(result_json),
        error=None if error_json is None else ErrorInfo.from_dict(json.loads(error_json)),
        attempts=int(state.get("attempts", 0)),
        lost_leases=int(state.get("lost", 0)),
        priority=int(state.get("priority", 0)),
        worker=state.get("worker"),
        created_at=from_ms(state.get("created")),
        started_at=from_ms(state.get("started")),
        finished_at=from_ms(state.get("finished")),
    )
