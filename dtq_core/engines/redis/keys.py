"""Every Redis key name dtq uses, built in one place.

All keys of a namespace share one hash tag, ``{namespace}``, so every Lua script
touches a single Redis Cluster slot. Scripts do not build key names: Python
builds them here and passes them through KEYS. The one exception is a waiter's
reply list, whose token only ``waiters`` holds: the scripts that end a job
name it from :meth:`Keys.reply` ``("")`` (the prefix, hash tag included, passed in
ARGV) and the token.

Data model (``P`` = ``<prefix>:{<namespace>}``):

================================  ======  =============================================
key                               type    holds
================================  ======  =============================================
``P:jobs``                        hash    id -> payload JSON of every live job
``P:state``                       hash    id -> state JSON of every live job
``P:seq``                         string  arrival counter (FIFO among equal priorities)
``P:ready:<plugin>``              zset    queued ids, score = -priority * 2^40 + seq
``P:active:<plugin>``             zset    leased ids, score = lease deadline (ms)
``P:scheduled:<plugin>``          zset    delayed ids and retries, score = due time (ms)
``P:signal:<plugin>``             list    wake-up hints for blocked workers (capped;
                                          a fetch drops those beyond the jobs queued)
``P:wake:<worker id>``            list    a stopping worker's own wake-up (its idle wait
                                          blocks on it too; expires after a minute)
``P:succeeded``                   hash    id -> final record JSON {payload, state,
                                          result} of a succeeded job (one field per
                                          job: a few commands per batch of jobs)
``P:expiry``                      zset    ids in ``succeeded`` by expiry time (ms);
                                          expired ones are swept by complete.lua
                                          and sweep.lua, and never read back
``P:done:<id>``                   hash    final record of a failed, dead or
                                          cancelled job (payload, state, result,
                                          error; raw_payload and raw_state, as found,
                                          of a job buried for a malformed record);
                                          expires after the retention time
``P:waiters``                     hash    id -> tokens (space-separated) of the
                                          producers waiting for that job's end
``P:reply:<token>``               list    one waiting producer's news of its job's
                                          end, pushed by the script that ends it
                                          (expires a minute after the push)
``P:errors:<id>``                 list    the job's attempt errors (capped, expires)
``P:index:<status>``              zset    ids of dead / failed jobs, by finish time
                                          (capped by count and age)
``P:plugins``                     set     plugins that have had jobs (for stats)
``P:workers``                     zset    live worker ids, score = registration expiry
``P:worker:<id>``                 hash    a worker's description (expires)
``P:events``                      stream  lifecycle events of every job, newest last
                                          (``MAXLEN ~ events_max``)
``P:rate:<epoch minute>``         hash    ``<plugin>|<status>`` -> outcomes counted that
                                          minute (expires after two hours)
================================  ======  =============================================

A producer waiting on a job (``Queue.result``) registers a token in
``P:waiters`` and blocks on its ``P:reply:<token>`` list (wait.lua); the
script that ends the job pushes the news onto each waiter's list.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Keys:
    """Key names of one namespace.

    Args:
        prefix: first part of every key (``dtq``); lets several applications
            share one Redis database.
        namespace: the hash tag; jobs, ids and queues are scoped to it.
    """

    prefix: str = "dtq"
    namespace: str = "default"

    @property
    def base(self) -> str:
        """``<prefix>:{<namespace>}``: the start of every key of this namespace."""
        return f"{self.prefix}:{{{self.namespace}}}"

    @property
    def jobs(self) -> str:
        """Hash of live jobs' payloads."""
        return f"{self.base}:jobs"

    @property
    def state(self) -> str:
        """Hash of live jobs' states."""
        return f"{self.base}:state"

    @property
    def seq(self) -> str:
        """Arrival counter."""
        return f"{self.base}:seq"

    def ready(self, plugin: str) -> str:
        """Sorted set of a plugin's queued job ids."""
        return f"{self.base}:ready:{plugin}"

    def active(self, plugin: str) -> str:
        """Sorted set of a plugin's leased job ids by lease deadline."""
        return f"{self.base}:active:{plugin}"

    def scheduled(self, plugin: str) -> str:
        """Sorted set of a plugin's delayed job ids by due time."""
        return f"{self.base}:scheduled:{plugin}"

    def signal(self, plugin: str) -> str:
        """List whose pushes wake workers blocked on a plugin."""
        return f"{self.base}:signal:{plugin}"

    def done(self, job_id: str) -> str:
        """Hash of one finished job's record."""
        return f"{self.base}:done:{job_id}"

    @property
    def succeeded(self) -> str:
        """Hash of succeeded jobs' final records (JSON), one field per job."""
        return f"{self.base}:succeeded"

    @property
    def expiry(self) -> str:
        """Sorted set of the ids in ``succeeded`` by when their record expires (ms)."""
        return f"{self.base}:expiry"

    @property
    def waiters(self) -> str:
        """Hash of the ids producers wait on -> their tokens (whose reply lists hear of the end)."""
        return f"{self.base}:waiters"

    def errors(self, job_id: str) -> str:
        """List of one job's attempt errors."""
        return f"{self.base}:errors:{job_id}"

    def index(self, status: str) -> str:
        """Sorted set of the ids of final jobs with ``status`` (dead, failed)."""
        return f"{self.base}:index:{status}"

    @property
    def plugins(self) -> str:
        """Set of the plugins that have had jobs in this namespace."""
        return f"{self.base}:plugins"

    @property
    def workers(self) -> str:
        """Sorted set of live worker ids by registration expiry."""
        return f"{self.base}:workers"

    def wake(self, worker_id: str) -> str:
        """A worker's own wake-up list: its idle wait also blocks on it, so that a stop ends the wait."""
        return f"{self.base}:wake:{worker_id}"

    def worker(self, worker_id: str) -> str:
        """Hash describing one worker."""
        return f"{self.base}:worker:{worker_id}"

    @property
    def events(self) -> str:
        """Stream of the namespace's job lifecycle events."""
        return f"{self.base}:events"

    def rate(self, epoch_minute: int) -> str:
        """Hash of the outcomes counted in one minute (``epoch_minute`` = Unix time // 60)."""
        return f"{self.base}:rate:{epoch_minute}"

    def reply(self, token: str) -> str:
        """List on which one waiting producer hears of its job's end (``reply("")`` is the prefix)."""
        return f"{self.base}:reply:{token}"
