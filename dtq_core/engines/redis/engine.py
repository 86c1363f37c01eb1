"""The Redis engine: every state change is one Lua script (see ``lua/``).

The data model is documented in :mod:`dtq_core.engines.redis.keys`; each script
opens with its KEYS/ARGV contract.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib.resources
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar, overload

import attrs
import redis
from redis.cluster import RedisCluster
from redis.sentinel import MasterNotFoundError

from dtq_core.config import DEFAULT_FAILURE_TTL_S, DEFAULT_NAMESPACE, DEFAULT_PREFIX, mask_url
from dtq_core.engine import (
    HISTORY_S,
    LOST_LEASE,
    MINUTE_MS,
    Appending,
    AppendOutcome,
    Batch,
    CancelOutcome,
    Completion,
    Engine,
    Event,
    EventType,
    Lease,
    MinuteCounts,
    OptionRange,
    Outcome,
    QueueStats,
    Recorded,
    ReleaseOutcome,
    Renewal,
    Stats,
    check_engine_options,
    check_indexed,
    dead_after_lost_leases,
    history_minutes,
    short_message,
)
from dtq_core.engines.redis import browse, wire
from dtq_core.engines.redis.connect import Client, cluster_trouble, connect, engine_options, login_refused
from dtq_core.engines.redis.keys import Keys
from dtq_core.errors import EngineError, EngineUnavailable, MalformedRecord, NotReplicated
from dtq_core.job import ErrorInfo, Job, JobStatus, encode_payload
from dtq_core.record import job_from_state, leased_job, malformed_error

log = logging.getLogger("dtq.engine")
T = TypeVar("T")

_SCRIPTS = (
    "append",
    "fetch",
    "complete",
    "renew",
    "expired",
    "release",
    "cancel",
    "progress",
    "requeue",
    "heartbeat",
    "bury",
    "sweep",
    "wait",
    "unwait",
    "prune",
)
#: A script's name, KEYS and ARGV.
_ScriptCall = tuple[str, list[str], list[str | int]]
#: A command and its arguments, as sent.
_Command = tuple[str | int | float, ...]
#: The script calls to send in place of a round trip's when they are sent again (a retry).
_Again = Callable[[], Sequence[_ScriptCall]]


class _ShortOfReplicas(NotReplicated):
    """:meth:`RedisEngine._run_scripts`'s NotReplicated, with the round trip's replies (the calls ran)."""

    def __init__(self, message: str, replies: list[Any]) -> None:
        super().__init__(message)
        self.replies = replies


@attrs.frozen
class _Burial:
    """A job to bury because its record is malformed (see ``bury.lua``)."""

    plugin: str
    job_id: str
    #: The lease's token, or '' for an id that a script set aside.
    token: str
    reason: str
    ttl_s: float = DEFAULT_FAILURE_TTL_S


#: Final statuses whose ids are kept in an index, for listing and requeueing.
_RELEASED = {
    0: ReleaseOutcome.NOT_HELD,
    1: ReleaseOutcome.REQUEUED,
    2: ReleaseOutcome.DEAD,
    3: ReleaseOutcome.CANCELLED,
}
_CANCELLED = {
    1: CancelOutcome.CANCELLED,
    2: CancelOutcome.REQUESTED,
    0: CancelOutcome.ALREADY_FINAL,
    -1: CancelOutcome.NOT_FOUND,
}
#: What release.lua answers for an id it set aside because its record is malformed.
_SET_ASIDE = 4
#: Decodings that give back every byte they read (strict fails instead of losing any).
_EXACT_DECODING = ("surrogateescape", "strict")
#: How long a worker's wake-up push waits for its wait (ms): then it is no one's.
_WAKE_KEPT_MS = 60_000
#: Strings per job in fetch.lua's reply: id, payload, state, token, plugin, reason.
_FETCHED = 6
#: Jobs per append.lua call of append_many (a call holds the server while it runs).
_APPEND_CHUNK = 500
#: Records per sweep.lua call, and calls per lease recovery at most.
_SWEEP_BATCH = 1000
_SWEEPS = 20
#: Completions per complete.lua call.
_COMPLETE_CHUNK = 500
#: append.lua's codes: one digit per job, all of a call's in one string.
_APPENDED = {"1": AppendOutcome.CREATED, "2": AppendOutcome.EXISTS, "0": AppendOutcome.CONFLICT}
#: A script's line that asks for a shared part of lua/lib/ (see _lua).
_INCLUDE = re.compile(r"^--#include (\w+)$", re.MULTILINE)
#: A stream entry id: ms-seq (or ms alone, which Redis reads as ms-0).
_STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
#: What a Redis Cluster answers while a slot has no master to serve it (CLUSTERDOWN,
#: MASTERDOWN, TRYAGAIN during a move; the client's own "slot not covered").
#: MASTERDOWN also comes from a replica cut off from its master (below).
_CLUSTER_IN_TRANSITION = (
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    # The client's own, once its redirections ran out: TRYAGAIN and ASK all the while a
    # namespace's slot moves ("TTL exhausted").
    redis.exceptions.ClusterError,
)


#: Refusals that pass once the server's trouble does, by their code, with what an
#: operator can do. A script is refused before its first write (a server out of
#: memory refuses a script's first write, then lets it finish), so none leaves
#: anything half done. redis-py raises OOM as OutOfMemoryError, its code cut off.
_PASSING_REFUSALS = {
    "OOM": "it is at its maxmemory with nothing it may evict: free memory or raise maxmemory (INFO memory)",
    "MISCONF": "it cannot save its snapshot and refuses writes until it can: check its disk and log",
    "BUSY": "a script has run past lua-time-limit: wait, or end it with SCRIPT KILL",
}


#: The options RedisEngine.from_url takes (the engine settings, DTQ_ENGINE__*): for each,
#: its type and its least value, and whether that least value itself is allowed. A
#: bad one was taken as given: a text signal_cap failed each append after its writes.
_OPTION_RANGES: dict[str, OptionRange] = {
    "socket_timeout_s": (float, 0, False, math.inf),
    "connect_timeout_s": (float, 0, False, math.inf),
    "retries": (int, 0, True, math.inf),
    "signal_cap": (int, 1, True, math.inf),
    "block_s": (float, 0, False, math.inf),
    "index_cap": (int, 0, True, math.inf),  # 0: no dead or failed index
    "errors_kept": (int, 1, True, math.inf),
    "wait_replicas": (int, 0, True, math.inf),
    "wait_timeout_s": (float, 0, False, math.inf),
    "events_max": (int, 0, True, math.inf),
    # 0: never poll for a reply. Past a few hundred µs polling only burns CPU, and a poll
    # longer than the socket timeout would outlast the wait that notices a stalled server.
    "reply_spin_us": (float, 0, True, 10_000),
}


def _is_stream_id(text: str) -> bool:
    """Whether ``text`` is a stream entry id Redis takes: ms-seq, each below 2^64."""
    return _STREAM_ID.fullmatch(text) is not None and all(int(part) < 2**64 for part in text.split("-"))


class RedisEngine(Engine):
    """Jobs stored in one Redis database (or one Cluster slot per namespace).

    Args:
        client: a redis-py client created with ``decode_responses=True`` and
            ``encoding_errors`` ``"surrogateescape"`` (as dtq makes them) or
            ``"strict"``: a decoding that loses bytes is refused, since a
            fetch's reply is cut by byte counts (:func:`.wire.unframe`).
        url: the URL it was made from, shown (password masked) in errors.
        prefix: first part of every key.
        namespace: the hash tag that scopes job ids and queues.
        signal_cap: the most wake-up hints kept per plugin.
        block_s: the longest single blocking call; kept below the socket
            timeout so a silent server is noticed.
        index_cap: the most ids kept in the dead and the failed index.
        errors_kept: the most attempt errors kept per job.
        wait_replicas: when above 0, an append or a completion is acknowledged
            only once that many replicas hold it (Redis ``WAIT``), so a failover
            to a replica cannot lose it; otherwise it raises
            :class:`EngineUnavailable` and may be retried with the same id.
        wait_timeout_s: the longest wait for those replicas.
        events_max: about how many entries the namespace's stream of lifecycle
            events keeps (``XTRIM MAXLEN ~``): an entry holds one event, or up to
            100 of a bulk append's; 0 records none and adds no commands.
        reply_spin_us: how long an append of one job polls for its reply
            before it sleeps until the reply comes (:class:`.wire.Spin`); 0
            never polls.
    """

    shared_by_processes = True  # one server, whichever process opens it

    def __init__(
        self,
        client: Client,
        *,
        url: str = "redis://",
        prefix: str = DEFAULT_PREFIX,
        namespace: str = DEFAULT_NAMESPACE,
        signal_cap: int = 1000,
        block_s: float = 5.0,
        index_cap: int = 10_000,
        errors_kept: int = 10,
        wait_replicas: int = 0,
        wait_timeout_s: float = 2.0,
        events_max: int = 10_000,
        reply_spin_us: float = 300.0,
    ) -> None:
        self.client = client
        self._cluster = isinstance(client, RedisCluster)  # asked per call, and costly to ask (a Protocol)
        self.url = url
        self.keys = Keys(prefix=prefix, namespace=namespace)
        self.signal_cap = signal_cap
        self.block_s = block_s
        self.index_cap = index_cap
        self.errors_kept = errors_kept
        self.wait_replicas = wait_replicas
        self.wait_timeout_s = wait_timeout_s
        self.events_max = events_max
        if wait_replicas and isinstance(client, RedisCluster):
            raise EngineError("wait_replicas is not supported on Redis Cluster; leave it at 0 there")
        socket_s = _socket_timeout_s(client)
        if socket_s is not None and block_s >= socket_s:
            raise EngineError(
                f"block_s ({block_s:g} s) must be shorter than the socket timeout ({socket_s:g} s), or "
                "every blocking wait would end in a timeout error; lower block_s or raise "
                "socket_timeout in the URL (?socket_timeout=...)"
            )
        self._scripts = {name: client.register_script(_lua(name)) for name in _SCRIPTS}
        self._wait_by_sha = False  # see _wait_pipelined
        self._wire = _wire(client, wire.Spin(reply_spin_us / 1e6))
        encoder = client.get_encoder()
        if encoder.encoding_errors not in _EXACT_DECODING:
            raise EngineError(
                f"the Redis client decodes replies with encoding_errors={encoder.encoding_errors!r}, "
                "which loses bytes that are not valid text, so dtq could not read a fetch's reply "
                "back exactly; make the client with encoding_errors='surrogateescape' (as "
                "RedisEngine.from_url does) or 'strict'"
            )
        self._decoding: tuple[str, str] = (encoder.encoding, encoder.encoding_errors)
        self._queue_keys: dict[str, list[str]] = {}
        # A one-job append's packed head and caps, per what they are made of (see _append_request).
        self._append_shared: dict[tuple[str, str, int, int, bool], tuple[bytes, bytes]] = {}

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
        """Connect to ``url``: one server, a Cluster or a Sentinel-watched master (see :mod:`.connect`).

        The client retries a failed command ``retries`` times with jittered
        exponential backoff (up to about a second between tries), so a Redis
        restart is ridden out instead of surfacing as an error; workers add their
        own backoff on top. ``options`` go to :class:`RedisEngine`.
        """
        given = {
            "socket_timeout_s": socket_timeout_s,
            "connect_timeout_s": connect_timeout_s,
            "retries": retries,
        }
        cls.check_options(url, {**given, **options})
        redis_url, from_query = engine_options(url)
        client = connect(
            redis_url, socket_timeout_s=socket_timeout_s, connect_timeout_s=connect_timeout_s, retries=retries
        )
        socket_s = _socket_timeout_s(client) or socket_timeout_s
        options.setdefault("block_s", max(0.5, min(5.0, socket_s - 1.0)))
        try:
            return cls(client, url=url, **{**from_query, **options})
        except EngineError:
            client.close()
            raise

    @classmethod
    def check_options(cls, url: str, options: Mapping[str, Any]) -> None:
        """Refuse an unknown or out-of-range option, given or in the URL's query (see ``from_url``)."""
        _redis_url, from_query = engine_options(url)
        check_engine_options("Redis", url, {**from_query, **options}, _OPTION_RANGES)

    # --- producer side ---------------------------------------------------------

    def append(
        self, job: Job, payload: str, *, delay_s: float = 0.0, eta: datetime | None = None
    ) -> AppendOutcome:
        """Queue or schedule ``job`` atomically unless its id exists (see ``append.lua``)."""
        return self._append_entry(Appending(job, payload, delay_s, eta))

    def append_entry(self, entry: Appending) -> AppendOutcome:
        """:meth:`append` of one entry; a fresh id's first call looks for no existing job."""
        if type(self).append is not RedisEngine.append:
            # A subclass's own append (logging, say) is what appends: Queue calls this one.
            return self.append(entry.job, entry.payload, delay_s=entry.delay_s, eta=entry.eta)
        return self._append_entry(entry)

    def _append_entry(self, entry: Appending) -> AppendOutcome:
        with self._talking():
            if self._wire is not None and not self.wait_replicas:
                # The producer's hot path: one packed request, straight down a kept connection;
                # sent again (its reply lost), it looks for the id, which the first may have stored.
                first = self._append_request(entry, look=not entry.fresh)
                reply = self._exchange_one(
                    first, spin=True, again=lambda: self._append_request(entry, look=True)
                )
                if not isinstance(reply, redis.exceptions.NoScriptError):
                    return _APPENDED[_raised([reply])[0]]
                # The server lost its scripts (a restart, SCRIPT FLUSH), so nothing ran: the
                # path below loads them and sends the call again.
            # Always looking: a client of its own (a cluster's, Sentinel's) may retry a call.
            keys, args = self._appending(entry.job.plugin, [entry], look=True)
            [code] = self._write("append", keys, args, f"job {entry.job.id!r} was stored on the master")
        return _APPENDED[code]

    def _append_request(self, entry: Appending, *, look: bool) -> bytes:
        """:meth:`_appending`'s call for one job, packed; the parts every one-job call of its
        plugin shares (the script, its queue keys, the caps) are packed once."""
        assert self._wire is not None  # see append
        plugin, sha = entry.job.plugin, self._scripts["append"].sha
        bulk = self._wire.packer.bulk
        # The caps are attributes a caller may change: keyed by them, a change is packed anew.
        made_of = (plugin, sha, self.signal_cap, self.events_max, look)
        shared = self._append_shared.get(made_of)
        if shared is None:
            keys = self._append_keys(plugin)
            caps = self._append_caps(plugin, look=look)
            # EVALSHA sha numkeys, keys (and the done key), ARGV: caps, one setting, id and payload
            parts = 3 + len(keys) + look + len(caps) + 1 + _SETTING_ARGS + 2
            shared = self._append_shared[made_of] = (
                b"*%d\r\n" % parts + bulk("EVALSHA", sha, len(keys) + look, *keys),
                bulk(*caps),
            )
        head, caps_packed = shared
        done = bulk(self.keys.done(entry.job.id)) if look else b""
        job = entry.job
        setting = _append_setting(entry, _state_members(job))
        return b"".join((head, done, caps_packed, bulk(1, *setting, job.id, entry.payload)))

    def append_many(self, entries: Sequence[Appending]) -> list[AppendOutcome]:
        """Append the entries with ``append.lua``: one call per plugin and chunk, one round trip per chunk.

        Calls are grouped by plugin (a call takes one plugin's queue keys) and
        name each id once (a repeat goes to a later call, which answers it as
        existing); the outcomes come back in the order of ``entries``.
        """
        groups = _append_groups(entries)
        batches = [[entries[i] for i in g] for g in groups]

        def calls(*, again: bool) -> Sequence[_ScriptCall]:
            # A call of fresh ids only looks for none of them, unless it is sent again.
            # Each is made as it is sent, while the server runs the one before.
            def call(i: int) -> _ScriptCall:
                b = batches[i]
                return (
                    "append",
                    *self._appending(b[0].job.plugin, b, look=again or not all(e.fresh for e in b)),
                )

            return _MadeWhenAsked(len(batches), call)

        with self._talking():
            replies = self._run_scripts(
                calls(again=False),
                wait_what="the jobs were stored on the master",
                again=functools.cache(lambda: calls(again=True)),
            )
        return _in_order(len(entries), groups, replies, _APPENDED.__getitem__)

    def _appending(
        self, plugin: str, entries: Sequence[Appending], *, look: bool
    ) -> tuple[list[str], list[str | int]]:
        """append.lua's KEYS and ARGV for entries of one plugin; ``look`` for existing ids.

        The entries' settings (priority, options, schedule) go once each: a bulk
        append's jobs mostly share one, and then each job sends only its id and payload.
        """
        keys = self._queue_keys.get(plugin) or self._queue_keys.setdefault(plugin, self._append_keys(plugin))
        if look:
            keys = keys + [self.keys.done(entry.job.id) for entry in entries]
        numbered, chosen = _settings(entries)
        args = self._append_caps(plugin, look=look)
        args.append(len(numbered))
        for setting in numbered:
            args += setting
        if len(numbered) == 1:
            for entry in entries:
                args += (entry.job.id, entry.payload)
        else:
            for entry, number in zip(entries, chosen, strict=True):
                args += (entry.job.id, entry.payload, number)
        return keys, args

    def _append_caps(self, plugin: str, *, look: bool) -> list[str | int]:
        """append.lua's ARGV before those of each job."""
        return [self.signal_cap, plugin, self.events_max, int(look)]

    def _append_keys(self, plugin: str) -> list[str]:
        """append.lua's KEYS for ``plugin``, before those of each job."""
        k = self.keys
        return [
            k.jobs,
            k.state,
            k.ready(plugin),
            k.scheduled(plugin),
            k.signal(plugin),
            k.seq,
            k.plugins,
            k.events,
            k.succeeded,
            k.expiry,
        ]

    def get(self, job_id: str) -> Job | None:
        """The job's record, read in one transaction (live or final).

        Raises:
            MalformedRecord: the record is not one dtq wrote (see :mod:`dtq_core.record`).
        """
        return self._read(job_id)

    def _read(self, job_id: str) -> Job | None:
        """:meth:`get`: every place the job's record can be, read in one transaction."""
        k = self.keys
        with self._talking():
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(k.jobs, job_id)
            pipe.hget(k.state, job_id)
            pipe.hgetall(k.done(job_id))
            pipe.lrange(k.errors(job_id), 0, -1)
            pipe.hget(k.succeeded, job_id)
            pipe.zscore(k.expiry, job_id)
            payload, state, done, errors, succeeded, expiry = pipe.execute()
        return _found(job_id, payload, state, done, errors, succeeded, expiry)

    def wait_for_final(self, job_id: str, timeout_s: float) -> Job | None:
        """Block until the job is final or time runs out; read it at least once.

        Each turn is one round trip: ``wait.lua`` registers this wait if the
        job is live (a token of its own, so any number of producers can wait on
        one job) and reads it otherwise, and a BLPOP on the wait's reply list
        follows in the same pipeline. The script that ends the job pushes the
        news there (a succeeded job's whole record), so nothing is polled and no
        end can slip between the look and the wait. A live job's record is not
        sent (a lone job's wait is the producer's second call, while the job
        runs: the read cost the server and the producer work on its path); it
        is read once at the end if the wait runs out.
        """
        if timeout_s <= 0:
            return self._read(job_id)  # no time to wait: a read, and nothing registered
        deadline = time.monotonic() + timeout_s
        token = os.urandom(8).hex()
        registered = False  # by an earlier turn, not dropped since
        in_turn = False  # a turn that raises may have registered before it failed
        try:
            while True:
                in_turn = True
                job, news = self._wait_turn(job_id, token, self._block_for(deadline - time.monotonic()))
                in_turn = False
                if job is None:
                    return None  # gone (deleted): an earlier turn's registration is dropped below
                if job is not _LIVE:
                    registered = False  # final: the script that ended it dropped the registration
                    return job
                if news is not None:  # it ended during the turn, and dropped the registration
                    registered = False
                    return _told(job_id, news) or self.get(job_id)
                registered = True
                if time.monotonic() >= deadline:
                    return self._read(job_id)  # a live job is read only when time runs out
        finally:
            if registered or in_turn:
                self._unwait(job_id, token)

    def _wait_turn(self, job_id: str, token: str, block_s: float) -> tuple[Job | _Live | None, str | None]:
        """One turn of :meth:`wait_for_final`: the job as read (:data:`_LIVE` when live: the wait
        registered, nothing read), and the news popped (None if none came)."""
        k = self.keys
        reply = k.reply(token)
        keys = [k.jobs, k.state, k.done(job_id), k.errors(job_id), k.succeeded, k.expiry, k.waiters, reply]
        args: list[str | int] = [job_id, token]
        with self._talking():
            if self._cluster:
                # A cluster's pipelines refuse scripts: two round trips there.
                read = self._scripts["wait"](keys, args)
                popped = self.client.blpop([reply], timeout=block_s)
            else:
                read, popped = self._wait_pipelined(keys, args, reply, block_s)
                if isinstance(read, redis.exceptions.NoScriptError):
                    # The server lost its scripts (SCRIPT FLUSH) on a connection that stayed up,
                    # and the BLPOP ran (maybe waiting in vain). The next turn sends the text.
                    self._wait_by_sha = False
                    job = self._read(job_id)
                    return (_LIVE if job is not None and not job.status.is_final else job), _news(popped)
        if not isinstance(read, list):
            return _LIVE, _news(popped)
        payload, state, done, errors, succeeded, expiry = read
        job = _found(job_id, payload, state, _pairs(done), errors, succeeded, expiry)
        return job, _news(popped)

    def _wait_pipelined(
        self, keys: list[str], args: list[str | int], reply: str, block_s: float
    ) -> list[Any]:
        """``wait.lua`` and the BLPOP on its reply list down one pipeline: their replies (the
        BLPOP's error raised; the script's NoScriptError given back, any other raised).

        By EVALSHA once the script is known to be on the server: EVAL makes the server
        hash the 2 kB text twice per call, about 70,000 instructions, a tenth of a lone
        job's server work (callgrind). The text goes instead on an engine's first wait,
        once the server was seen without its scripts, and whenever the pipeline is sent
        again on a new connection (the server may have restarted): a server without the
        script would refuse it and still run the BLPOP, which would block in vain.
        """
        evalsha = self._wait_by_sha
        by_text: list[_Command] = [("EVAL", _lua("wait"), len(keys), *keys, *args), ("BLPOP", reply, block_s)]
        first = (
            by_text if not evalsha else [("EVALSHA", self._scripts["wait"].sha, *by_text[0][2:]), by_text[1]]
        )
        read, popped = self._commands(2, first.__getitem__, resume=True, again=by_text.__getitem__)
        if isinstance(popped, Exception) or (
            isinstance(read, Exception) and not isinstance(read, redis.exceptions.NoScriptError)
        ):
            _raised([read, popped])
        if not isinstance(read, Exception):
            self._wait_by_sha = True  # run: the server has the script now (EVAL cached it)
        return [read, popped]

    def _unwait(self, job_id: str, token: str) -> None:
        """Drop a wait's registration and reply list (see ``unwait.lua``); best effort."""
        try:
            with self._talking():
                self._scripts["unwait"]([self.keys.waiters, self.keys.reply(token)], [job_id, token])
        except EngineError as exc:
            # Left behind, the token costs a push to a list that expires when the job ends.
            log.debug("could not drop the wait on job %s: %s", job_id, exc)

    # --- worker side -----------------------------------------------------------

    def fetch(self, plugins: Sequence[str], *, count: int, lease_s: float, worker_id: str) -> Batch:
        """Promote due jobs, pop and lease up to ``count`` in one script call (``fetch.lua``).

        Malformed records are buried as dead (``bury.lua``) instead of being
        returned: those the script set aside, and those that fail the checks
        of :func:`~dtq_core.record.leased_job`. When a call found only such
        records, the next is made at once, so garbage cannot hide real jobs.
        """
        _name, keys, args = self._fetching(plugins, count, lease_s, worker_id)
        while True:
            with self._talking():
                flat = self._scripts["fetch"](keys, args)
            batch = self._fetched(flat)
            if batch is not None:
                return batch

    def complete_and_fetch(
        self,
        completions: Sequence[Completion],
        plugins: Sequence[str],
        *,
        count: int,
        lease_s: float,
        worker_id: str,
        wait_s: float = 0.0,
    ) -> tuple[list[Recorded], Batch]:
        """``complete.lua`` for the completions, then ``fetch.lua``, in one pipelined round trip.

        With ``wait_s``, a ``BLPOP`` on the plugins' signal lists goes between
        them: the outcomes are recorded, and their waiting producers told, at
        once, and the server runs the fetch when a wake-up hint is there (a job
        appended or released since the last pop of one) or the wait ends. Redis
        ends a wait at its next cron tick, so up to 1/hz s (100 ms at the default
        hz of 10) for any ``wait_s`` below that. A fetch right after a job's end
        would otherwise make the server run it before it sends those producers
        their news.
        """
        groups = _completion_groups(completions)
        calls = [self._completion_call(completions, group) for group in groups]
        block = self._worker_wait(plugins, worker_id, wait_s) if wait_s > 0 else None
        with self._talking():
            try:
                *replies, flat = self._run_scripts(
                    [*calls, self._fetching(plugins, count, lease_s, worker_id)],
                    wait_what="the outcomes were stored" if calls else None,
                    block=block,
                )
            except _ShortOfReplicas as exc:
                # The fetch ran, and leased jobs: dropped here, they would wait out their
                # leases and come back as lost ones (dead after max_lost_leases).
                taken = self._fetched(exc.replies[-1])
                raise NotReplicated(str(exc), leased=taken.leases if taken else []) from exc
        batch = self._fetched(flat)
        if batch is None:  # only malformed records, now buried: look again
            batch = self.fetch(plugins, count=count, lease_s=lease_s, worker_id=worker_id)
        return _in_order(len(completions), groups, replies, Recorded), batch

    def _fetching(self, plugins: Sequence[str], count: int, lease_s: float, worker_id: str) -> _ScriptCall:
        k = self.keys
        keys = [k.jobs, k.state, k.events]
        for plugin in plugins:
            keys += [k.ready(plugin), k.active(plugin), k.scheduled(plugin), k.signal(plugin)]
        args: list[str | int] = [count, int(lease_s * 1000), worker_id, self.events_max, *plugins]
        return ("fetch", keys, args)

    def _fetched(self, flat: Sequence[Any]) -> Batch | None:
        """The batch of a fetch.lua reply, after burying its malformed records; None if it had only those."""
        leases, burials = self._sort_fetched(flat)
        try:
            if burials:
                self._bury(burials)
        except EngineError as exc:
            # The leases taken stay good; what was not buried is found again
            # by lease recovery (release.lua) once its deadline passes.
            log.warning("could not bury %d malformed record(s) yet: %s", len(burials), exc)
        if burials and not leases:
            return None
        next_due_ms = int(flat[0])
        # A delayed job due now but not promoted yet (a call promotes a bounded number) counts.
        more = int(flat[3]) > 0 or next_due_ms == 0
        return Batch(leases, None if next_due_ms < 0 else next_due_ms / 1000, more=more)

    def _sort_fetched(self, flat: Sequence[Any]) -> tuple[list[Lease], list[_Burial]]:
        """The leases of fetch.lua's reply, and the burials of its malformed records."""
        leases: list[Lease] = []
        burials: list[_Burial] = []
        sizes, body = flat[1], flat[2]
        # None only stands for a set-aside id's payload and state (fetch.lua).
        fetched: list[Any] = wire.unframe(sizes, body, *self._decoding)
        for i in range(0, len(fetched), _FETCHED):
            job_id, payload, state, token, plugin, reason = fetched[i : i + _FETCHED]
            if not reason:
                try:
                    leases.append(Lease(leased_job(job_id, plugin, payload, state), token=token))
                    continue
                except MalformedRecord as exc:
                    reason = exc.reason
            burials.append(_Burial(plugin, job_id, token, reason))
        return leases, burials

    def _bury(self, burials: Sequence[_Burial]) -> int:
        """Bury each job as dead with its reason (``bury.lua``); return how many were buried."""
        with self._talking():
            replies = self._run_scripts([self._burial(burial) for burial in burials])
        for burial, reply in zip(burials, replies, strict=True):
            if int(reply):
                log.warning(
                    "job %s (%s): malformed record, buried as dead: %s",
                    burial.job_id,
                    burial.plugin,
                    burial.reason,
                    extra={"job_id": burial.job_id, "plugin": burial.plugin, "status": "dead"},
                )
        return sum(int(reply) for reply in replies)

    def _burial(self, burial: _Burial) -> _ScriptCall:
        k = self.keys
        job_id = burial.job_id
        error = malformed_error(burial.reason)
        keys = [k.jobs, k.state, k.active(burial.plugin), k.done(job_id), k.index(JobStatus.DEAD.value)]
        keys += [k.events, k.rate(_minute()), k.waiters]
        args: list[str | int] = [
            job_id,
            burial.token,
            json.dumps(error.to_dict()),
            burial.plugin,
            max(1, int(burial.ttl_s)),
            k.reply(""),
            self.index_cap,
            self.events_max,
            HISTORY_S,
            *_event_error(error),
            encode_payload(Job(id=job_id, plugin=burial.plugin, data={})),
        ]
        return ("bury", keys, args)

    def wait_for_jobs(self, plugins: Sequence[str], timeout_s: float) -> None:
        """Block on the plugins' signal lists (BLPOP), at most ``block_s`` at a time."""
        keys = [self.keys.signal(p) for p in plugins]
        with self._talking():
            self.client.blpop(keys, timeout=self._block_for(timeout_s))

    def _block_for(self, timeout_s: float) -> float:
        """One blocking call's length for a wait of ``timeout_s``: at most ``block_s``, never 0 (forever)."""
        return max(0.01, min(timeout_s, self.block_s))

    def wait_and_fetch(
        self, plugins: Sequence[str], timeout_s: float, *, count: int, lease_s: float, worker_id: str
    ) -> Batch:
        """BLPOP on the plugins' signal lists and ``fetch.lua`` down one pipeline.

        The server runs the fetch as soon as the BLPOP returns (woken, or timed
        out), so a job appended to an idle worker's queue reaches it with no
        round trip between the wake-up and the lease.
        """
        if self._cluster:  # its pipelines refuse scripts: two round trips
            with self._talking():
                self.client.execute_command(*self._worker_wait(plugins, worker_id, timeout_s))  # type: ignore[no-untyped-call]
            return self.fetch(plugins, count=count, lease_s=lease_s, worker_id=worker_id)
        name, keys, args = self._fetching(plugins, count, lease_s, worker_id)
        commands: list[_Command] = [
            self._worker_wait(plugins, worker_id, timeout_s),
            ("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args),
        ]
        with self._talking():  # also maps the error replies raised below
            woken, flat = self._commands(2, commands.__getitem__, resume=True)
            if isinstance(flat, Exception) and not isinstance(flat, redis.exceptions.NoScriptError):
                raise flat
            # The fetch's leases first: an error of the BLPOP alone (a signal key
            # overwritten with another type) must not strand jobs leased already.
            batch = None if isinstance(flat, Exception) else self._fetched(flat)
            if isinstance(woken, Exception) and not (batch and batch.leases):
                raise woken
        # A server without the script (restart, SCRIPT FLUSH), or a call that
        # found only malformed records (now buried): fetch again, the usual way.
        if batch is None:
            batch = self.fetch(plugins, count=count, lease_s=lease_s, worker_id=worker_id)
        return batch

    def _worker_wait(self, plugins: Sequence[str], worker_id: str, timeout_s: float) -> _Command:
        """A worker's BLPOP for a job of ``plugins``: their hint lists and its own wake-up
        list (see :meth:`wake`), so that a stop need not wait the wait out."""
        waits_on = [*[self.keys.signal(p) for p in plugins], self.keys.wake(worker_id)]
        return ("BLPOP", *waits_on, self._block_for(timeout_s))

    def wake(self, worker_id: str) -> None:
        """Push to the worker's own wake-up list, which its idle ``BLPOP`` also waits on.

        The push expires after a minute: a worker that was not waiting leaves it
        for no one (or for its next wait, which then fetches once more).
        """
        key = self.keys.wake(worker_id)
        with self._talking():
            pipe = self.client.pipeline(transaction=True)  # one slot: a Cluster takes it too
            pipe.lpush(key, "1")
            pipe.pexpire(key, _WAKE_KEPT_MS)
            pipe.execute()

    def complete(self, lease: Lease, outcome: Outcome, *, ttl_s: float) -> Recorded:
        """Record the outcome under the lease's fencing token (see ``complete.lua``)."""
        keys, args = self._completing(lease.job.plugin, [Completion(lease, outcome, ttl_s)])
        with self._talking():
            [code] = self._write("complete", keys, args, f"the outcome of job {lease.job.id!r} was stored")
        return Recorded(code)

    def complete_many(self, completions: Sequence[Completion]) -> list[Recorded]:
        """Record the outcomes with ``complete.lua``, one call per plugin, all in one round trip.

        A job named twice (a stale attempt and a new one) goes into separate
        calls, which run in order: the script reads a batch's records once.
        """
        groups = _completion_groups(completions)
        calls = [self._completion_call(completions, group) for group in groups]
        with self._talking():
            replies = self._run_scripts(calls, wait_what="the outcomes were stored")
        return _in_order(len(completions), groups, replies, Recorded)

    def _completion_call(self, completions: Sequence[Completion], group: Sequence[int]) -> _ScriptCall:
        plugin = completions[group[0]].lease.job.plugin
        return ("complete", *self._completing(plugin, [completions[i] for i in group]))

    def _completing(
        self, plugin: str, completions: Sequence[Completion]
    ) -> tuple[list[str], list[str | int]]:
        """complete.lua's KEYS and ARGV for completions of one plugin's jobs."""
        k = self.keys
        keys = [
            k.jobs,
            k.state,
            k.active(plugin),
            k.scheduled(plugin),
            k.succeeded,
            k.expiry,
            k.waiters,
            k.index(JobStatus.DEAD.value),
            k.index(JobStatus.FAILED.value),
            k.events,
            k.rate(_minute()),
        ]
        args: list[str | int] = [
            plugin,
            self.index_cap,
            self.errors_kept,
            self.events_max,
            HISTORY_S,
            k.reply(""),
        ]
        for completion in completions:
            lease, outcome = completion.lease, completion.outcome
            keys += [k.done(lease.job.id), k.errors(lease.job.id)]
            args += [
                lease.job.id,
                lease.token,
                "retry" if outcome.status is JobStatus.SCHEDULED else outcome.status.value,
                outcome.result_json or "",
                "" if outcome.error is None else json.dumps(outcome.error.to_dict()),
                max(1, int(completion.ttl_s)),
                int(outcome.retry_in_s * 1000),
                *_event_error(outcome.error),
            ]
        return keys, args

    def renew(self, leases: Sequence[Lease], lease_s: float) -> Renewal:
        """Extend the leases, one script call per plugin, all in one round trip."""
        by_plugin: dict[str, list[str]] = {}
        for lease in leases:
            by_plugin.setdefault(lease.job.plugin, []).extend([lease.job.id, lease.token])
        if not by_plugin:
            return Renewal()
        calls: list[_ScriptCall] = [
            ("renew", [self.keys.state, self.keys.active(plugin)], [int(lease_s * 1000), *pairs])
            for plugin, pairs in by_plugin.items()
        ]
        with self._talking():
            replies = self._run_scripts(calls)
        renewal = Renewal()
        for flat in replies:
            for job_id, what in zip(flat[::2], flat[1::2], strict=True):
                (renewal.lost if what == "lost" else renewal.cancel).append(job_id)
        return renewal

    def progress(self, lease: Lease, progress: float | None, message: str | None) -> tuple[bool, bool]:
        """Record progress under the lease's token (see ``progress.lua``)."""
        args = [lease.job.id, lease.token, "" if progress is None else repr(float(progress)), message or ""]
        with self._talking():
            reply = int(self._scripts["progress"]([self.keys.state], args))
        return reply > 0, reply == 2

    def release(self, lease: Lease, *, lost: bool, max_lost_leases: int, ttl_s: float) -> ReleaseOutcome:
        """Give a held job back (see ``release.lua``)."""
        return self._give_back(lease, 1 if lost else 0, max_lost_leases, ttl_s)

    def hand_back(self, lease: Lease, *, max_lost_leases: int, ttl_s: float) -> ReleaseOutcome:
        """Give back a job never started; its delivery does not count as an attempt (``release.lua``)."""
        return self._give_back(lease, 2, max_lost_leases, ttl_s)

    def _give_back(self, lease: Lease, how: int, max_lost_leases: int, ttl_s: float) -> ReleaseOutcome:
        call = self._release(lease.job.plugin, lease.job.id, lease.token, how, max_lost_leases, ttl_s)
        with self._talking():
            [reply] = self._run_scripts([call])
        # With a token, release.lua leaves a malformed record to lease recovery (0).
        return _RELEASED[int(reply)] if not isinstance(reply, list) else ReleaseOutcome.NOT_HELD

    def recover(self, plugin: str, *, max_lost_leases: int, ttl_s: float, limit: int = 100) -> int:
        """Requeue or bury each job of ``plugin`` whose lease expired.

        Records release.lua cannot requeue because they are malformed are
        buried as dead (``bury.lua``) and counted too. Expired succeeded
        records are swept first (``sweep.lua``): recovery runs on every worker
        every few seconds, finished jobs or not.
        """
        with self._talking():
            self._sweep()
            expired = self._scripts["expired"]([self.keys.active(plugin)], [limit])
            if not expired:
                return 0
            calls = [self._release(plugin, job_id, "", 1, max_lost_leases, ttl_s) for job_id in expired]
            replies = self._run_scripts(calls)
        burials = [
            _Burial(plugin, job_id, "", str(reply[1]), ttl_s)
            for job_id, reply in zip(expired, replies, strict=True)
            if isinstance(reply, list) and int(reply[0]) == _SET_ASIDE
        ]
        released = sum(1 for reply in replies if not isinstance(reply, list) and int(reply))
        return released + (self._bury(burials) if burials else 0)

    def _sweep(self) -> None:
        """Delete expired succeeded records (``sweep.lua``), a bounded number of batches per call."""
        for _ in range(_SWEEPS):
            if (
                int(self._scripts["sweep"]([self.keys.succeeded, self.keys.expiry], [_SWEEP_BATCH]))
                < _SWEEP_BATCH
            ):
                return

    def _release(
        self, plugin: str, job_id: str, token: str, how: int, max_lost: int, ttl_s: float
    ) -> _ScriptCall:
        """release.lua's call; ``how`` is its ARGV[3]: 1 lost, 0 given back, 2 never started."""
        k = self.keys
        keys = [
            k.jobs,
            k.state,
            k.active(plugin),
            k.ready(plugin),
            k.signal(plugin),
            k.done(job_id),
            k.errors(job_id),
            k.index(JobStatus.DEAD.value),
            k.events,
            k.rate(_minute()),
            k.scheduled(plugin),
            k.waiters,
        ]
        dead = dead_after_lost_leases(max_lost)
        args: list[str | int] = [
            job_id,
            token,
            how,
            max_lost,
            max(1, int(ttl_s)),
            json.dumps(LOST_LEASE.to_dict()),
            k.reply(""),
            self.signal_cap,
            self.index_cap,
            self.errors_kept,
            json.dumps(dead.to_dict()),
            plugin,
            self.events_max,
            HISTORY_S,
            *_event_error(LOST_LEASE),
            *_event_error(dead),
        ]
        return ("release", keys, args)

    def cancel(self, job: Job, *, ttl_s: float) -> CancelOutcome:
        """Cancel a job now, or ask its worker to stop it (see ``cancel.lua``)."""
        k = self.keys
        p = job.plugin
        keys = [k.jobs, k.state, k.ready(p), k.scheduled(p), k.done(job.id), k.events, k.rate(_minute())]
        keys += [k.waiters, k.succeeded, k.expiry]
        args: list[str | int] = [
            job.id,
            max(1, int(ttl_s)),
            k.reply(""),
            p,
            self.events_max,
            HISTORY_S,
        ]
        with self._talking():
            reply = self._scripts["cancel"](keys, args)
        return _CANCELLED[int(reply)]

    # --- worker registry -------------------------------------------------------

    def heartbeat(self, worker_id: str, info: Mapping[str, str], ttl_s: float) -> None:
        """Register or refresh a worker (see ``heartbeat.lua``)."""
        fields = [item for pair in info.items() for item in pair]
        keys = [self.keys.workers, self.keys.worker(worker_id)]
        with self._talking():
            self._scripts["heartbeat"](keys, [worker_id, int(ttl_s * 1000), *fields])

    def unregister(self, worker_id: str) -> None:
        """Drop a worker's registration."""
        with self._talking():
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self.keys.workers, worker_id)
            pipe.delete(self.keys.worker(worker_id))
            pipe.execute()

    def workers(self) -> list[dict[str, str]]:
        """Live workers' descriptions, read in one round trip after listing them."""
        with self._talking():
            now_ms = _server_ms(self.client)
            ids = [str(i) for i in self.client.zrangebyscore(self.keys.workers, now_ms, "+inf")]
            pipe = self.client.pipeline(transaction=False)
            for worker_id in ids:
                pipe.hgetall(self.keys.worker(worker_id))
            infos = pipe.execute()
        return [dict(info, id=worker_id) for worker_id, info in zip(ids, infos, strict=True) if info]

    def stats(self) -> Stats:
        """Counts per plugin queue and of dead and failed jobs, read in one transaction.

        The dead and failed indexes are pruned first (:meth:`_prune_stale`, two
        round trips more), so their counts leave out jobs whose records expired.
        """
        k = self.keys
        with self._talking():
            try:
                self._prune_stale()
            except redis.ResponseError as exc:
                # A read-only user or a replica may read the counts it cannot prune.
                log.debug("could not prune the dead and failed indexes: %s", exc)
            plugins = sorted(str(p) for p in self.client.smembers(k.plugins))
            pipe = self.client.pipeline(transaction=True)
            for plugin in plugins:
                pipe.zcard(k.ready(plugin))
                pipe.zcard(k.scheduled(plugin))
                pipe.zcard(k.active(plugin))
            pipe.zcard(k.index(JobStatus.DEAD.value))
            pipe.zcard(k.index(JobStatus.FAILED.value))
            counts = [int(c) for c in pipe.execute()]
        queues = [
            QueueStats(plugin, waiting=counts[3 * i], scheduled=counts[3 * i + 1], running=counts[3 * i + 2])
            for i, plugin in enumerate(plugins)
        ]
        return Stats(queues=queues, dead=counts[-2], failed=counts[-1])

    # --- final jobs ------------------------------------------------------------

    def final_ids(self, status: JobStatus, *, limit: int = 100, offset: int = 0) -> list[str]:
        """Ids in the status's index, newest first."""
        check_indexed(status)
        with self._talking():
            ids = self.client.zrevrange(self.keys.index(status.value), offset, offset + limit - 1)
        return [str(job_id) for job_id in ids]

    def requeue(self, job: Job) -> bool:
        """Bring a final job back to its queue (see ``requeue.lua``)."""
        k = self.keys
        keys = [
            k.jobs,
            k.state,
            k.ready(job.plugin),
            k.signal(job.plugin),
            k.seq,
            k.done(job.id),
            k.index(job.status.value),
            k.events,
        ]
        args: list[str | int] = [job.id, self.signal_cap, job.plugin, self.events_max]
        with self._talking():
            return bool(self._scripts["requeue"](keys, args))

    def purge(self, status: JobStatus) -> int:
        """Delete the records of every job with ``status``, 500 at a time (``prune.lua``):
        those in the status's index, then those past its cap (``index_cap``), found by a
        scan of the namespace's final records.

        Only records of that status go: an entry whose record expired, or whose
        id a later job took and ended otherwise, is dropped without deleting
        anything. Returns how many records were deleted.
        """
        check_indexed(status)
        index = self.keys.index(status.value)
        purged = 0
        with self._talking():
            while ids := [str(job_id) for job_id in self.client.zrange(index, 0, _PRUNE_BATCH - 1)]:
                [(_dropped, deleted)] = self._run_scripts([self._pruning(status, ids, purge=True)])
                purged += int(deleted)
            for ids in self._final_ids_unlisted():
                [(_dropped, deleted)] = self._run_scripts(
                    [self._pruning(status, ids, purge=True, listed=False)]
                )
                purged += int(deleted)
        return purged

    def _final_ids_unlisted(self) -> Iterator[list[str]]:
        """The ids of every final record left (failed, dead or cancelled), up to 500 at a time:
        after a purge of the index, those past its cap. A scan of the keys, as rare as a purge."""
        prefix = self.keys.done("")
        pattern = _GLOB_SPECIAL.sub(r"\\\g<0>", prefix) + "*"
        batch: list[str] = []
        for key in map(str, self.client.scan_iter(match=pattern, count=1000)):
            if not key.startswith(prefix):
                continue  # the pattern matched more than the prefix (not expected: it is escaped)
            batch.append(key[len(prefix) :])
            if len(batch) == _PRUNE_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def _prune_stale(self) -> None:
        """Drop the oldest entries of the dead and failed indexes that stand for no job of
        their status any more (``prune.lua``), until one that does, or :data:`_PRUNE_MOST`.

        complete.lua prunes an index by age only when it adds to it, so without
        this an entry whose record expired would be counted until the next job
        of its status. Records expire in about the order their jobs ended, so the
        stale entries are the oldest.
        """
        statuses = [JobStatus.DEAD, JobStatus.FAILED]
        looked = 0
        while statuses and looked < _PRUNE_MOST:
            pipe = self.client.pipeline(transaction=False)
            for status in statuses:
                pipe.zrange(self.keys.index(status.value), 0, _STALE_BATCH - 1)
            found = zip(statuses, pipe.execute(), strict=True)
            batches = [(status, [str(job_id) for job_id in ids]) for status, ids in found if ids]
            if not batches:
                return
            replies = self._run_scripts([self._pruning(status, ids, purge=False) for status, ids in batches])
            # An index is looked at further only while a whole batch of it was stale.
            statuses = [
                status
                for (status, ids), (dropped, _deleted) in zip(batches, replies, strict=True)
                if int(dropped) == len(ids)
            ]
            looked += _STALE_BATCH

    def _pruning(self, status: JobStatus, ids: list[str], *, purge: bool, listed: bool = True) -> _ScriptCall:
        """prune.lua's call for ``ids`` of the status's index (or, not ``listed``, found by a scan)."""
        k = self.keys
        keys = [k.index(status.value), *map(k.done, ids), *map(k.errors, ids)]
        mode = ("1" if listed else "2") if purge else ""
        return ("prune", keys, [status.value, mode, *ids])

    # --- events and history ----------------------------------------------------

    def events(self, *, after: str | None = None, limit: int = 100, block_s: float = 0.0) -> list[Event]:
        """Read the events stream after ``after`` (XREAD), blocking at most ``block_s`` at a time.

        An entry may hold the events of several jobs (a bulk append's: see
        ``append.lua``); each is an event of its own, whose id is the entry's and
        its place in it (``ms-seq.k``). After such an id, the rest of its entry
        comes first.
        """
        entry, within = _event_cursor(after)
        wanted = max(1, limit)
        deadline = time.monotonic() + block_s
        with self._talking():
            found = [] if within is None else self._rest_of_entry(entry, within)
            # Entries asked for: at first as many as would hold the events wanted if each held
            # a bulk append's 100, then as many as are still wanted at the events per entry
            # seen (asking for one entry per event wanted read up to 100 times a page).
            cursor, asked_for = entry, math.ceil((wanted - len(found)) / _EVENTS_PER_ENTRY)
            while len(found) < wanted:
                # Slices stay below the socket timeout; BLOCK 0 would wait forever.
                block_ms = 0 if found else int(min(deadline - time.monotonic(), self.block_s) * 1000)
                asked = min(wanted - len(found), asked_for)
                reply = self.client.xread(
                    {self.keys.events: cursor}, count=asked, block=block_ms if block_ms > 0 else None
                )
                entries = _entries(reply)
                if not entries:
                    if found or deadline - time.monotonic() <= 0:
                        break
                    continue
                read = [event for entry_id, fields in entries for event in _events_of(entry_id, fields)]
                found += read
                cursor = entries[-1][0]
                if len(entries) < asked:
                    break  # the stream's end
                asked_for = max(1, math.ceil((wanted - len(found)) * len(entries) / len(read)))
        return found[:wanted]

    def _rest_of_entry(self, entry: str, within: int) -> list[Event]:
        """The events of the entry ``entry`` after its ``within``-th (none if it was trimmed)."""
        kept = _range_entries(self.client.xrange(self.keys.events, entry, entry))
        return [event for entry_id, fields in kept for event in _events_of(entry_id, fields)[within + 1 :]]

    def last_event_id(self) -> str | None:
        """The newest event's id: the last of the newest entry (XREVRANGE ... COUNT 1)."""
        with self._talking():
            newest = _range_entries(self.client.xrevrange(self.keys.events, count=1))
        return _events_of(*newest[0])[-1].id if newest else None

    def history(self, minutes: int = 60) -> list[MinuteCounts]:
        """Read the per-minute hashes of the last ``minutes`` minutes (client's clock) in one round trip."""
        now_ms = int(time.time() * 1000)
        current = now_ms // MINUTE_MS
        span = range(current - max(1, minutes) + 1, current + 1)
        with self._talking():
            pipe = self.client.pipeline(transaction=False)
            for minute in span:
                pipe.hgetall(self.keys.rate(minute))
            replies = pipe.execute()
        counts = {minute: _minute_counts(fields) for minute, fields in zip(span, replies, strict=True)}
        return history_minutes(max(1, minutes), now_ms, counts)

    # --- plumbing --------------------------------------------------------------

    def ping(self) -> None:
        """Raise :class:`EngineUnavailable` unless Redis answers PING."""
        with self._talking():
            self.client.ping()

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def _write(self, name: str, keys: list[str], args: list[str | int], what: str) -> Any:
        """Run a script; with ``wait_replicas``, return only once enough replicas hold its writes."""
        [reply] = self._run_scripts([(name, keys, args)], wait_what=what)
        return reply

    def _run_scripts(
        self,
        calls: Sequence[_ScriptCall],
        *,
        wait_what: str | None = None,
        block: _Command | None = None,
        again: _Again | None = None,
    ) -> list[Any]:
        """Run script calls in one round trip; one by one on a cluster, whose pipelines refuse scripts.

        With ``wait_what`` and ``wait_replicas``, the round trip ends with ``WAIT``
        (which counts the writes of its own connection, hence one pipeline), and
        too few replicas raise :class:`EngineUnavailable` naming ``wait_what``.
        ``block``, a blocking pop, goes before the last call. ``again`` gives the
        calls to send in their place when a call is sent a second time (its reply
        lost with the connection, it may have run); a client that retries by
        itself (a cluster's, redis-py's pipeline) is given those from the start.
        """
        if again is not None and (self._cluster or self._wire is None):
            calls = again()
        if self._cluster:
            replies = []
            for i, (name, keys, args) in enumerate(calls):
                if block is not None and i == len(calls) - 1:
                    with contextlib.suppress(redis.ResponseError):  # see _send
                        self.client.execute_command(*block)  # type: ignore[no-untyped-call]
                replies.append(self._scripts[name](keys, args))
            return replies
        waiting = wait_what is not None and self.wait_replicas > 0
        replies = self._pipelined(calls, wait=waiting, block=block, again=again)
        if waiting and int(replies[-1]) < self.wait_replicas:
            raise _ShortOfReplicas(
                f"{wait_what} but reached only {replies[-1]} of {self.wait_replicas} replicas within "
                f"{self.wait_timeout_s} s (wait_replicas), so a failover could lose it; retrying with "
                "the same job id is safe. Check the replicas' health (INFO replication)",
                replies[:-1],
            )
        return replies[:-1] if waiting else replies

    def _pipelined(
        self,
        calls: Sequence[_ScriptCall],
        *,
        wait: bool,
        block: _Command | None = None,
        again: _Again | None = None,
    ) -> list[Any]:
        """EVALSHA each call down one pipeline (and WAIT, with ``wait``); raise the first error.

        redis-py's own script objects would make every pipeline check its
        scripts first (SCRIPT EXISTS: a second round trip). Instead, the calls a
        server without the scripts refused (after a restart or SCRIPT FLUSH),
        and only those, run again once the scripts are loaded: the others ran.
        """
        replies = self._send(calls, wait=wait, block=block, again=again)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if missing:
            for script in self._scripts.values():
                script.sha = str(self.client.script_load(script.script))
            # Refused, so they did not run then; but the refused sending may have been a retry
            # of one that ran before its reply was lost: sent again as ``again`` has them.
            sent = calls if again is None else again()
            rerun = self._send([sent[i] for i in missing], wait=wait)
            if wait:
                replies[-1] = rerun.pop()  # the replicas' count now covers the calls run again
            for i, reply in zip(missing, rerun, strict=True):
                replies[i] = reply
        return _raised(replies)

    def _send(
        self,
        calls: Sequence[_ScriptCall],
        *,
        wait: bool,
        block: _Command | None = None,
        again: _Again | None = None,
    ) -> list[Any]:
        """Each call's reply (an error reply in its place), and WAIT's last with ``wait``.

        ``block`` (a blocking pop) is sent before the last call; its reply is left
        out, an error one included: it only decides when that call runs.
        ``again``: see :meth:`_run_scripts`.
        """
        last = len(calls) - 1

        def command_of(chosen: Callable[[], Sequence[_ScriptCall]]) -> Callable[[int], _Command]:
            def command(i: int) -> _Command:
                if block is not None and i >= last:
                    if i == last:
                        return block
                    i -= 1
                if i == len(calls):
                    return ("WAIT", self.wait_replicas, int(self.wait_timeout_s * 1000))
                name, keys, args = chosen()[i]
                return ("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args)

            return command

        count = len(calls) + wait + (block is not None)
        resent = None if again is None else command_of(again)
        replies = self._commands(count, command_of(lambda: calls), resume=not wait, again=resent)
        if block is not None:
            del replies[last]
        return replies

    def _commands(
        self,
        count: int,
        command: Callable[[int], _Command],
        *,
        resume: bool,
        again: Callable[[int], _Command] | None = None,
    ) -> list[Any]:
        """The replies to ``count`` commands in one round trip, an error reply in its place.

        ``command(i)`` is the i-th, asked for as it is sent (see :func:`.wire.converse`);
        ``again(i)``, if given, is sent in its place from its second sending on
        (a retry). ``resume`` is :meth:`_exchange`'s. A client that keeps a single
        connection sends them down a redis-py pipeline instead, which retries by
        itself: ``again`` from the start.
        """
        if self._wire is None:
            pipe = self.client.pipeline(transaction=False)
            for i in range(count):
                pipe.execute_command(*(again or command)(i))
            return list(pipe.execute(raise_on_error=False))
        pack = self._wire.packer.command
        # Cached: a retry that starts again from the first request packs none twice.
        packed = functools.cache(lambda i, resent: pack(*(again if resent and again else command)(i)))
        if count == 1:
            return [self._exchange_one(packed(0, False), again=lambda: packed(0, True))]
        return self._exchange(count, _first_then_again(packed, set()), resume=resume)

    def _exchange_one(
        self, request: bytes, *, spin: bool = False, again: Callable[[], bytes] | None = None
    ) -> Any:
        """One request's reply: first tried on a kept connection alone (:meth:`.wire.Connections.once`).

        ``again()``, if given, is what is sent in its place once it may have run (see
        :meth:`_run_scripts`): after it went out on that first try, or on a retry.
        """
        assert self._wire is not None  # see _send
        reply = self._wire.once(request, spin=spin)
        if isinstance(reply, wire.NoReply):
            # Nothing was sent unless it failed on the way: only then is the next sending a second one.
            sent = {0} if reply.error is not None else set()

            def packed(_i: int, resent: bool) -> bytes:
                return again() if resent and again is not None else request

            [reply] = self._exchange(
                1, _first_then_again(packed, sent), resume=True, failed_first=reply.error
            )
        return reply

    def _exchange(
        self,
        count: int,
        request: Callable[[int], bytes],
        *,
        resume: bool,
        failed_first: redis.ConnectionError | redis.TimeoutError | None = None,
    ) -> list[Any]:
        """Each request's reply down one pooled connection (see :func:`.wire.converse`).

        A dropped connection is retried as the client retries a command. With
        ``resume``, the retry sends only the requests not answered yet (a
        pipeline would send them all again); without it, all of them, on the new
        connection (which a WAIT at the end must count). ``failed_first`` is a
        first attempt made already (:meth:`.wire.Connections.once`) and how it
        failed: it counts against the retries, and the next attempt waits the
        backoff first, as if this exchange had made it.
        """
        assert self._wire is not None  # see _send
        replies: list[Any] = []
        pending = [failed_first] if failed_first is not None else []
        with self._wire.connection() as conn:

            def failed(_error: Exception) -> None:
                conn.disconnect()  # type: ignore[no-untyped-call]
                if not resume:
                    replies.clear()

            def attempt() -> list[Any]:
                if pending:
                    raise pending.pop()
                # As the pool connects a connection it hands out: a Sentinel-managed one
                # asks the sentinels where the master is now (a reconnect on send would not).
                conn.connect()  # type: ignore[no-untyped-call]
                return wire.converse(conn, count, request, replies)

            return conn.retry.call_with_retry(attempt, failed)

    def _talking(self) -> _Talking:
        """``with self._talking():`` turns what redis-py raises into dtq's errors (:meth:`_translated`)."""
        # Made per call: one kept on the engine would hold the engine in a reference cycle,
        # and an engine dropped without close() would keep its sockets until a full collection.
        return _Talking(self._translated)

    def _translated(self, exc: BaseException) -> BaseException | None:
        """The dtq error that stands for ``exc``, raised by redis-py; None to let ``exc`` through."""
        if isinstance(exc, redis.AuthenticationError):  # a ConnectionError to redis-py; no retry mends it
            return login_refused(self.url, exc)
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            return self._not_reached(exc)
        if isinstance(exc, _CLUSTER_IN_TRANSITION):
            return self._slot_unserved(exc)
        if isinstance(exc, redis.RedisError):
            return self._error_answer(exc)
        if isinstance(exc, redis.exceptions.RedisClusterException):  # not a RedisError: every node gone
            return cluster_trouble(self.url, exc)
        return None

    def _slot_unserved(self, exc: Exception) -> EngineUnavailable:
        """A master down or failing over, or the slot on the move: passing, as an unreachable
        server is, so workers back off and retry rather than stop."""
        if isinstance(exc, redis.exceptions.MasterDownError) and not self._cluster:
            return self._role_changing(exc)  # a replica cut off from its master
        return EngineUnavailable(
            f"Redis Cluster at {mask_url(self.url)} does not serve the slot of namespace "
            f"{self.keys.namespace!r} now ({exc}): a master is down or failing over, or the "
            "slot is being moved. Retrying is safe; CLUSTER INFO and CLUSTER SHARDS show "
            "the cluster's state"
        )

    def _not_reached(self, exc: redis.ConnectionError | redis.TimeoutError) -> EngineError:
        """A connection that failed: passing trouble, unless the sentinels refused dtq's login
        (the client folds that into "no master found"; no retry mends it)."""
        if isinstance(exc, MasterNotFoundError) and "AuthenticationError" in str(exc):
            return EngineError(
                f"a sentinel of {mask_url(self.url)} refused dtq's login: put the sentinels' own "
                "password in the URL's ?sentinel_password= (percent-encoded); the master's goes "
                "before the host, as for redis://"
            )
        return EngineUnavailable(self._unreachable(exc))

    def _unreachable(self, exc: redis.ConnectionError | redis.TimeoutError) -> str:
        """Why the server could not be reached, and what to check."""
        if isinstance(exc, MasterNotFoundError):
            # Its text goes on with the repr of every sentinel client tried: a page of noise.
            said = str(exc).split(" : ", 1)[0]
            return (
                f"cannot reach Redis at {mask_url(self.url)}: {said}. Is a sentinel listed in the URL "
                "up, and does it monitor that name (SENTINEL MASTERS)? Set the URL with --url or DTQ_URL"
            )
        return (
            f"cannot reach Redis at {mask_url(self.url)}: {str(exc).rstrip('.')}. Is "
            "redis-server running there? Set the URL with --url or DTQ_URL"
        )

    def _error_answer(self, exc: redis.RedisError) -> EngineError:
        """What an error the server answered (none of those :meth:`_translated` names first) means."""
        if isinstance(exc, redis.exceptions.NoPermissionError):
            return EngineError(
                f"Redis at {mask_url(self.url)} refused a command: {exc}. The Redis user's ACL must "
                f"allow keys under {self.keys.prefix}:* (~{self.keys.prefix}:*) and scripting, "
                "or set dtq's prefix to one it allows"
            )
        if _changing_role(exc):
            return self._role_changing(exc)
        text = _error_text(exc)
        code = "OOM" if isinstance(exc, redis.exceptions.OutOfMemoryError) else text.split(" ", 1)[0]
        if code in _PASSING_REFUSALS:
            return EngineUnavailable(
                f"Redis at {mask_url(self.url)} refuses commands for now "
                f"({text if text.startswith(code) else f'{code} {text}'}). dtq retries; "
                f"{_PASSING_REFUSALS[code]}"
            )
        if text.startswith("NOREPLICAS "):
            return EngineUnavailable(
                f"Redis at {mask_url(self.url)} refuses writes until enough replicas are in "
                f"touch ({exc}; its min-replicas-to-write). dtq retries; check the replicas "
                "(INFO replication)"
            )
        return EngineError(f"Redis at {mask_url(self.url)} answered with an error: {exc}")

    def _role_changing(self, exc: Exception) -> EngineUnavailable:
        """What a server that is, or is becoming, a replica answered, as a passing trouble.

        A failover behind one address (a managed Redis whose name moves to the new
        master) leaves open connections on the old master, now a replica: they are
        dropped, so that the retry connects afresh to wherever the name points now.
        """
        self._drop_idle_connections()
        return EngineUnavailable(
            f"Redis at {mask_url(self.url)} cannot take dtq's writes now ({exc}): it is a "
            "replica, or turning into one in a failover. dtq reconnects and retries; if the "
            "URL names a replica, point it at the master (or use redis+sentinel://)"
        )

    def _drop_idle_connections(self) -> None:
        """Disconnect the connections no call is using now; each reconnects when next used.

        Best effort: a failure here must not hide the error being reported.
        """
        if isinstance(self.client, RedisCluster):
            return  # it finds a slot's new master by itself
        try:
            if self._wire is not None:
                self._wire.drop_free()
            single = self.client.connection  # a client made with single_connection_client
            if single is not None:
                with self.client.single_connection_lock:
                    single.disconnect()  # type: ignore[no-untyped-call]
            self.client.connection_pool.disconnect(inuse_connections=False)
        except Exception as exc:  # best effort, as said above
            log.debug("could not drop idle Redis connections: %s", exc)

    # --- browsing (see :mod:`.browse`) -------------------------------------------

    def browse(self, status: JobStatus, plugin: str, *, offset: int = 0, limit: int = 50) -> list[Job]:
        """A page of a queue's live jobs, read from its sorted set (see :func:`.browse.browse`)."""
        with self._talking():
            return browse.browse(self.client, self.keys, status, plugin, offset, limit)

    def delete(self, job_id: str) -> bool:
        """Delete one final job's record (see :func:`.browse.delete_final`)."""
        with self._talking():
            return browse.delete_final(self.client, self.keys, job_id)


class _Live(enum.Enum):
    """What a wait's turn read of a job still live: nothing (see ``wait.lua``)."""

    LIVE = "live"


_LIVE: Final = _Live.LIVE


def _news(popped: Any) -> str | None:
    """The news a wait's BLPOP popped (see ``tell``); None if it timed out or popped the empty marker."""
    return None if popped is None or popped[1] == "" else str(popped[1])


def _raised(replies: list[Any]) -> list[Any]:
    """``replies``, unless one is an error reply: then the first of those is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _socket_timeout_s(client: Client) -> float | None:
    """The client's socket timeout (the URL's ``socket_timeout`` included), or None if it has none."""
    if isinstance(client, RedisCluster):
        kwargs = client.nodes_manager.connection_kwargs
    else:
        kwargs = client.connection_pool.connection_kwargs
    value = kwargs.get("socket_timeout")
    return None if value is None else float(value)


#: What a SCAN pattern takes as a wildcard, escaped in a literal part of one.
_GLOB_SPECIAL = re.compile(r"[*?\[\]\\]")
#: Index entries prune.lua is given per call, at most.
_PRUNE_BATCH = 500
#: Index entries a stats read looks at per index and round trip, and at most in all.
_STALE_BATCH = 100
_PRUNE_MOST = 2000

#: The most events a stream entry holds (append.lua's EVENTS_PER_ENTRY).
_EVENTS_PER_ENTRY = 100
#: append.lua's ARGV per setting (see _append_setting).
_SETTING_ARGS = 4


class _MadeWhenAsked(Sequence[T]):
    """``count`` items, each made by ``make(i)`` when first asked for, then kept."""

    def __init__(self, count: int, make: Callable[[int], T]) -> None:
        self._count = count
        self._make = functools.cache(make)

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> list[T]: ...

    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        if not -self._count <= i < self._count:
            raise IndexError(i)
        return self._make(i % self._count)


def _settings(entries: Sequence[Appending]) -> tuple[dict[tuple[str | int, ...], int], list[int]]:
    """The distinct settings of ``entries`` (append.lua's four ARGV each), numbered from 1 in
    order, and each entry's number."""
    numbered: dict[tuple[str | int, ...], int] = {}
    chosen: list[int] = []
    options: dict[tuple[object, ...], str] = {}  # encoded once per distinct options
    before: Appending | None = None
    for entry in entries:
        if before is not None and _alike(entry, before):
            chosen.append(chosen[-1])  # the same objects as the job before's: its setting
            continue
        job = entry.job
        # Keyed by identity too: 0.0 == -0.0, but they are written apart.
        given = (job.max_retries, job.retry_backoff_s, job.timeout_s)
        key = (*given, *map(id, given))
        encoded = options.get(key)
        if encoded is None:
            encoded = options[key] = _state_members(job)
        chosen.append(numbered.setdefault(_append_setting(entry, encoded), len(numbered) + 1))
        before = entry
    return numbered, chosen


def _alike(entry: Appending, other: Appending) -> bool:
    """Whether ``entry``'s setting is ``other``'s because it is made of the same objects (as a
    bulk append's jobs share their first's): cheaper to tell than to build it and look it up."""
    job, was = entry.job, other.job
    return (
        job.priority is was.priority
        and job.max_retries is was.max_retries
        and job.retry_backoff_s is was.retry_backoff_s
        and job.timeout_s is was.timeout_s
        and entry.delay_s is other.delay_s
        and entry.eta is other.eta
    )


def _append_setting(entry: Appending, options: str) -> tuple[str | int, ...]:
    """append.lua's four ARGV of the setting ``entry`` names; ``options`` is :func:`_state_members` of it."""
    job, eta = entry.job, entry.eta
    return (
        job.priority,
        options,
        int(entry.delay_s * 1000),
        0 if eta is None else max(1, int(eta.timestamp() * 1000)),
    )


def _state_members(job: Job) -> str:
    """The job's options other than priority, as append.lua adds them to its state's JSON."""
    options = job.options()
    del options["priority"]
    return "".join(f",{json.dumps(name)}:{json.dumps(value)}" for name, value in options.items())


class _Talking:
    """The context manager of :meth:`RedisEngine._talking`.

    A class rather than a generator: it wraps every call, and a generator-based
    one costs about a microsecond to set up, a few percent of a one-job append.
    """

    __slots__ = ("_translate",)

    def __init__(self, translate: Callable[[BaseException], BaseException | None]) -> None:
        self._translate = translate

    def __enter__(self) -> None:
        return None

    def __exit__(self, _kind: object, exc: BaseException | None, _tb: object) -> None:
        translated = None if exc is None else self._translate(exc)
        if translated is None:
            return
        try:
            raise translated from exc
        finally:
            # This frame is in the raised error's traceback: holding the error too, it would
            # make a cycle that keeps the error, the engine and its sockets until a full collection.
            del translated


def _wire(client: Client, spin: wire.Spin) -> wire.Connections | None:
    """How to send packed commands to ``client``; None when they must go through redis-py.

    A cluster client routes each command itself; a single-connection client
    holds its connection under its own lock.
    """
    if isinstance(client, RedisCluster) or client.connection is not None:
        return None
    kwargs = client.connection_pool.connection_kwargs
    packer = wire.Packer(kwargs.get("encoding", "utf-8"), kwargs.get("encoding_errors", "strict"))
    return wire.Connections(client.connection_pool, packer, spin)


@functools.cache
def _lua(name: str) -> str:
    """A script's text, each ``--#include NAME`` line replaced by ``lua/lib/NAME.lua``.

    Scripts cannot call one another, so what several share (telling waiters,
    sweeping expired records) lives once in ``lib/`` and is put into each.
    """
    text = _lua_file(f"{name}.lua")
    return _INCLUDE.sub(lambda line: _lua_file(f"lib/{line[1]}.lua"), text)


def _lua_file(path: str) -> str:
    return importlib.resources.files(__package__).joinpath("lua", *path.split("/")).read_text("utf-8")


def _completion_groups(completions: Sequence[Completion]) -> list[list[int]]:
    """Positions of ``completions`` in complete.lua calls (see :func:`_call_groups`)."""
    return _call_groups([(c.lease.job.plugin, c.lease.job.id) for c in completions], _COMPLETE_CHUNK)


def _first_then_again(packed: Callable[[int, bool], bytes], sent: set[int]) -> Callable[[int], bytes]:
    """The i-th request of an exchange: ``packed(i, False)`` the first time it is sent (not in
    ``sent``), ``packed(i, True)`` each time after, when the one before may have run."""

    def request(i: int) -> bytes:
        resent = i in sent
        sent.add(i)
        return packed(i, resent)

    return request


def _append_groups(entries: Sequence[Appending]) -> list[list[int]]:
    """Positions of ``entries`` in append.lua calls (see :func:`_call_groups`). Jobs of one
    plugin whose ids were all made for them (``fresh``: distinct) are cut in order, with no
    look for an id named twice: a bulk append's usual case, and a tenth of its client's work."""
    plugin = entries[0].job.plugin if entries else None
    if all(e.fresh and e.job.plugin == plugin for e in entries):
        return [
            list(range(at, min(at + _APPEND_CHUNK, len(entries))))
            for at in range(0, len(entries), _APPEND_CHUNK)
        ]
    return _call_groups([(e.job.plugin, e.job.id) for e in entries], _APPEND_CHUNK)


def _call_groups(jobs: Sequence[tuple[str, str]], size: int) -> list[list[int]]:
    """Positions of ``jobs`` (plugin, id) in script calls of one plugin each, in order, each
    naming a job once (a script reads its batch's records once) and at most ``size`` long."""
    groups: list[list[int]] = []
    open_group: dict[str, int] = {}  # plugin -> the group its next job may join
    named: list[set[str]] = []
    for position, (plugin, job_id) in enumerate(jobs):
        g = open_group.get(plugin)
        if g is None or job_id in named[g] or len(groups[g]) >= size:
            g = open_group[plugin] = len(groups)
            groups.append([])
            named.append(set())
        groups[g].append(position)
        named[g].add(job_id)
    return groups


def _in_order(
    total: int, groups: Sequence[Sequence[int]], replies: Sequence[Sequence[Any]], answer: Callable[[Any], T]
) -> list[T]:
    """One answer per job from the calls' codes, back in the order the jobs were given."""
    at = 0
    for group in groups:  # positions rise within a group: its ends tell whether it is a run
        if not group or group[0] != at or group[-1] != at + len(group) - 1:
            break
        at += len(group)
    if at == total and all(len(c) == len(g) for g, c in zip(groups, replies, strict=True)):
        return [answer(code) for codes in replies for code in codes]  # in order, run after run
    answers: dict[int, T] = {}
    for group, codes in zip(groups, replies, strict=True):
        for position, code in zip(group, codes, strict=True):
            answers[position] = answer(code)
    return [answers[position] for position in range(total)]


def _minute() -> int:
    """The current epoch minute by this client's clock: names the hash an outcome is counted in.

    The client names it, not the script: a script builds no key names (Cluster).
    """
    return int(time.time() // 60)


def _event_error(error: ErrorInfo | None) -> tuple[str, str]:
    """An outcome's error as an event carries it: type and short message ('' for none)."""
    return ("", "") if error is None else (error.type, short_message(error.message))


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """The entries of an XREAD reply on one stream (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else [entries for _key, entries in reply]
    return [entry for entries in streams for entry in _range_entries(entries)]


def _range_entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """The entries of an XRANGE or XREVRANGE reply (or of one stream in an XREAD reply)."""
    return [(str(i), dict(fields)) for i, fields in reply or ()]


def _event_cursor(after: str | None) -> tuple[str, int | None]:
    """The stream entry to read after, and the place in it of the event ``after`` names (None:
    the whole entry, as a single job's event or an entry id); see :meth:`RedisEngine.events`."""
    if after is None:
        return "0-0", None
    entry, dot, place = after.partition(".")
    # An event among several names its entry whole (ms-seq): XRANGE of ms alone spans them all.
    whole = "-" in entry and place.isdigit() and place.isascii() and len(place) < 6
    if not _is_stream_id(entry) or (dot and not whole):
        raise ValueError(
            f"{after!r} is not an event id of the Redis engine (a stream id, ms-seq, with .n for "
            "an event among several of one entry)"
        )
    return entry, int(place) if dot else None


def _events_of(entry_id: str, fields: Mapping[str, str]) -> list[Event]:
    """The events of one stream entry: a job's ('job'), or several jobs' ('jobs', ids joined
    by newlines, each event's id the entry's and its place in it)."""
    jobs = fields.get("jobs")
    if jobs is None:
        return [_event(entry_id, fields, fields["job"])]
    return [_event(f"{entry_id}.{k}", fields, job_id) for k, job_id in enumerate(jobs.split("\n"))]


def _event(event_id: str, fields: Mapping[str, str], job_id: str) -> Event:
    def optional(name: str) -> str | None:
        return fields.get(name) or None

    delay = optional("delay_ms")
    return Event(
        id=event_id,
        time_ms=int(fields["time"]),
        type=EventType(fields["type"]),
        job_id=job_id,
        plugin=fields["plugin"],
        attempt=int(fields.get("attempt", 0)),
        worker=optional("worker"),
        error_type=optional("error_type"),
        error_message=optional("error_message"),
        delay_ms=None if delay is None else int(delay),
    )


def _minute_counts(fields: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """``{plugin: {status: n}}`` from a minute hash's ``<plugin>|<status>`` fields.

    A field whose value is no whole number was not written by dtq (HINCRBY) and
    is left out, rather than failing every read of the history.
    """
    counts: dict[str, dict[str, int]] = {}
    for field, n in fields.items():
        plugin, _, status = field.rpartition("|")
        try:
            number = int(n)
        except ValueError:
            continue
        counts.setdefault(plugin, {})[status] = number
    return counts


def _server_ms(client: Client) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _told(job_id: str, news: str) -> Job | None:
    """The succeeded job complete.lua put in its news, or None when the news is only the id."""
    if news == job_id:
        return None
    try:
        sent = json.loads(news)
    except ValueError:
        return None
    if isinstance(sent, dict) and "record" in sent:
        errors = sent.get("errors")
        return _succeeded_job(job_id, str(sent["record"]), errors if isinstance(errors, list) else [])
    return _succeeded_job(job_id, news, [])


def _found(
    job_id: str,
    payload: str | None,
    state: str | None,
    done: Mapping[str, str],
    errors: Sequence[str],
    succeeded: str | None,
    expiry: float | str | None,
) -> Job | None:
    """The job from a read of every place its record can be (live, final, succeeded), or None."""
    if payload is not None or state is not None:
        return _job(job_id, payload, state, errors=errors)
    if done:
        # .get: a final record that lacks a part is malformed (raised by _job), not a KeyError.
        return _job(
            job_id, done.get("payload"), done.get("state"), done.get("result"), done.get("error"), errors
        )
    # Expiry by this client's clock (a cluster pipeline refuses TIME): a skewed
    # clock shows a record that long past, or short of, its retention.
    if succeeded is not None and (expiry is None or float(expiry) > time.time() * 1000):
        return _succeeded_job(job_id, succeeded, errors)
    return None


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    """A hash as a script returns it (HGETALL: field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _succeeded_job(job_id: str, record: str, errors: Sequence[str]) -> Job:
    """A succeeded job from its record in the ``succeeded`` hash (see complete.lua)."""
    try:
        fields = json.loads(record)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise MalformedRecord(job_id, "the succeeded record is not a JSON object")
    return _job(job_id, fields.get("payload"), fields.get("state"), fields.get("result"), None, errors)


def _job(
    job_id: str,
    payload: str | None,
    state_json: str | None,
    result_json: str | None = None,
    error_json: str | None = None,
    errors: Sequence[str] = (),
) -> Job:
    return job_from_state(job_id, payload, state_json, result_json, error_json, errors)


def _error_text(exc: redis.RedisError) -> str:
    """An error reply's text, after a pipeline's "Command # n (...) of pipeline caused
    error: " (whose command text may hold anything: a job id, say)."""
    return str(exc).rpartition(" of pipeline caused error: ")[2]


def _changing_role(exc: redis.RedisError) -> bool:
    """True for what a server answers while it is, or is becoming, a replica: READONLY
    (the client maps it to ReadOnlyError; before Redis 7 a script's write came back
    inside an ERR), and UNBLOCKED for a wait it ended on becoming one (not the one of
    CLIENT UNBLOCK), and WAIT's refusal on a replica (a repeated append writes nothing, so
    only its WAIT tells). MASTERDOWN comes as the Cluster's MasterDownError, seen to above."""
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return True
    text = _error_text(exc)
    return (
        text.startswith("UNBLOCKED force unblock")
        or (text.startswith("Error running script") and "-READONLY " in text)
        or text.startswith("WAIT cannot be used with replica instances")
    )
