"""Every Redis key name dtq uses, built in one place.

All keys of a namespace share one hash tag, ``{namespace}``, so every Lua script
touches a single Redis Cluster slot. Scripts never build key names: Python
builds them here and passes them through KEYS.

Data model (``P`` = ``<prefix>:{<namespace>}``):

================================  ======  =============================================
key                               type    holds
================================  ======  =============================================
``P:jobs``                        hash    id -> payload JSON of every live job
``P:state``                       hash    id -> state JSON of every live job
``P:seq``                         string  arrival counter (FIFO among equal priorities)
``P:ready:<plugin>``              zset    queued ids, score = -priority * 2^40 + seq
``P:active:<plugin>``             zset    leased ids, score = lease deadline (ms)
``P:signal:<plugin>``             list    wake-up hints for blocked workers (capped)
``P:done:<id>``                   hash    final record (payload, state, result,
                                          error); expires after the retention time
================================  ======  =============================================

Channel ``P:finished:<id>`` receives the id when the job becomes final.
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

    def signal(self, plugin: str) -> str:
        """List whose pushes wake workers blocked on a plugin."""
        return f"{self.base}:signal:{plugin}"

    def done(self, job_id: str) -> str:
        """Hash of one finished job's record."""
        return f"{self.base}:done:{job_id}"

    def finished_channel(self, job_id: str) -> str:
        """Pub/Sub channel told when one job becomes final."""
        return f"{self.base}:finished:{job_id}"
