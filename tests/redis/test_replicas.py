"""``wait_replicas`` against a real master and replica: a replica that falls behind (stopped
with SIGSTOP) makes WAIT come back short, and nothing leased in that round trip is dropped."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from dtqtest import RedisServer, wait_for
from redis.sentinel import MasterNotFoundError

from dtq_core import (
    Completion,
    EngineError,
    EngineUnavailable,
    JobStatus,
    NotReplicated,
    Outcome,
    Queue,
    Recorded,
    Worker,
    open_engine,
)
from dtq_core.worker import Ended, _Acknowledger


@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    master = RedisServer(tmp_path / "master")
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    try:
        assert wait_for(lambda: master.client.info("replication")["connected_slaves"] == 1, timeout=10)
        yield master, replica
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
        replica.stop()
        master.stop()


def caught_up(master: RedisServer) -> bool:
    """Whether the replica has every write of the master (and is back in touch)."""
    info = master.client.info("replication")
    replica = info.get("slave0")
    return isinstance(replica, dict) and int(replica["offset"]) == int(info["master_repl_offset"])


def test_a_short_wait_hands_the_caller_the_jobs_its_fetch_leased(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = master_and_replica
    url = f"{master.url}?wait_replicas=1&wait_timeout_s=0.2"
    engine = open_engine(url, namespace="short-wait")
    try:
        with Queue(["test_only"], master.url, namespace="short-wait") as queue:
            for n in range(3):
                queue.enqueue("test_only", {"action": "echo"}, id=f"j{n}")
        [first] = engine.fetch(["test_only"], count=1, lease_s=30, worker_id="w").leases
        os.kill(replica.process.pid, signal.SIGSTOP)
        done = Completion(first, Outcome(JobStatus.SUCCEEDED, result_json="1"), 60)
        with pytest.raises(NotReplicated, match="reached only 0 of 1 replicas") as raised:
            engine.complete_and_fetch([done], ["test_only"], count=5, lease_s=30, worker_id="w")
        # Before, they were dropped: running, unrenewed, until their leases expired as lost ones.
        assert sorted(lease.job.id for lease in raised.value.leased) == ["j1", "j2"]
        os.kill(replica.process.pid, signal.SIGCONT)
        assert wait_for(lambda: caught_up(master), timeout=10)
        assert engine.complete_many([done]) == [Recorded.STORED]  # a repeat: answered as the first
        for lease in raised.value.leased:
            ended = Completion(lease, Outcome(JobStatus.SUCCEEDED, result_json="2"), 60)
            assert engine.complete_many([ended]) == [Recorded.STORED]
    finally:
        engine.close()


def test_a_worker_keeps_the_jobs_leased_in_the_round_trip_whose_outcomes_wait_for_a_replica(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    """A slot's refill records its last outcome and leases its next jobs in one round trip;
    when WAIT comes back short, the outcome goes to the acknowledger and the jobs run here."""
    master, replica = master_and_replica
    url = f"{master.url}?wait_replicas=1&wait_timeout_s=0.2"
    with Queue(["test_only"], master.url, namespace="refill-short-wait") as queue:
        for n in range(3):
            queue.enqueue("test_only", {"action": "echo"}, id=f"j{n}")
        worker = Worker(["test_only"], url, namespace="refill-short-wait", mode="thread", prefetch=4)
        acks = _Acknowledger(worker, keep_finished=False)
        try:
            [first] = worker.engine.fetch(
                ["test_only"], count=1, lease_s=30, worker_id=worker.worker_id
            ).leases
            ended = Ended(Completion(first, Outcome(JobStatus.SUCCEEDED, result_json="1"), 60), 0.01)
            os.kill(replica.process.pid, signal.SIGSTOP)
            leased = worker._refill([ended], acks, drained=False)
            assert sorted(lease.job.id for lease in leased) == ["j1", "j2"]  # were dropped
            assert sorted(lease.job.id for lease in worker._waiting.values()) == ["j1", "j2"]  # renewed
            os.kill(replica.process.pid, signal.SIGCONT)
            assert acks.wait_until_empty(30)
        finally:
            acks.close()
            worker.close()
        stored = queue.get("j0")
        assert stored is not None and stored.status is JobStatus.SUCCEEDED


def test_a_repeated_append_on_a_demoted_master_is_a_passing_trouble(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    """Behind one address, the old master is a replica now: a repeat writes nothing, so no
    READONLY comes; its WAIT is refused, which said EngineError, not "retry"."""
    master, replica = master_and_replica
    with Queue(["test_only"], master.url, namespace="demoted") as queue:
        queue.enqueue("test_only", {"action": "echo"}, id="j1")
    assert wait_for(lambda: caught_up(master), timeout=10)
    on_replica = Queue(["test_only"], f"{replica.url}?wait_replicas=1", namespace="demoted")
    try:
        with pytest.raises(EngineUnavailable, match="replica, or turning into one"):
            on_replica.enqueue("test_only", {"action": "echo"}, id="j1")
    finally:
        on_replica.close()


def test_sentinels_refusing_the_login_is_said_so_and_not_retried(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    # The client folds the sentinels' refusal into "no master found"; dtq took it for an
    # unreachable server, and a worker exited 3 ("restart me") over and over.
    master, _replica = master_and_replica
    engine = open_engine(master.url, namespace="sentinel-login")
    try:
        folded = MasterNotFoundError(
            "No master found for 'svc' : <redis.client.Redis(...)> - auth:AuthenticationError"
        )
        refused = engine._translated(folded)  # type: ignore[attr-defined]
        assert type(refused) is EngineError and "sentinel_password" in str(refused)
        down = engine._translated(MasterNotFoundError("No master found for 'svc' : - ConnectionError"))  # type: ignore[attr-defined]
        assert isinstance(down, EngineUnavailable)
    finally:
        engine.close()
