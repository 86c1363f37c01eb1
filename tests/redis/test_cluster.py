"""The Redis engine on a real three-master Redis Cluster (the contract suite runs there too).

These tests check what is particular to a cluster: a namespace's keys share one
slot (so every script is single-slot), namespaces spread over the masters, and
scripts come back after a node forgets them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dtqtest import RedisClusterServers, noting_idle_waits, running, stop_when_idle, wait_for, working

from dtq_core import EngineUnavailable, JobStatus, Queue, ReleaseOutcome, Worker, open_engine
from dtq_core.engines.redis import RedisEngine


def cluster_queue(cluster: RedisClusterServers, namespace: str) -> Queue:
    return Queue(["test_only"], cluster.url, namespace=namespace)


def run_mixed_jobs(cluster: RedisClusterServers, namespace: str) -> None:
    """Succeeded, failed, scheduled, dead and cancelled jobs, and a registered worker."""
    with cluster_queue(cluster, namespace) as queue:
        queue.enqueue("test_only", {"action": "echo"}, id="ok")
        queue.enqueue("test_only", {"action": "fail"}, id="bad", max_retries=0)
        queue.enqueue("test_only", {"action": "permanent"}, id="permanent")
        queue.enqueue("test_only", {"action": "echo"}, id="dead", priority=100)
        [lease] = queue.engine.fetch(["test_only"], count=1, lease_s=60, worker_id="lost").leases
        assert queue.engine.release(lease, lost=True, max_lost_leases=1, ttl_s=60) is ReleaseOutcome.DEAD
        queue.enqueue("test_only", {"action": "echo"}, id="later", delay_s=3600)
        queue.enqueue("test_only", {"action": "echo"}, id="cancelled", delay_s=3600)
        queue.cancel("cancelled")
        worker = Worker(["test_only"], cluster.url, namespace=namespace, mode="thread")
        try:
            worker.engine.heartbeat("cluster-test-worker", {"host": "test"}, 60)
            statuses = {job.id: job.status for job in worker.get_jobs()}
        finally:
            worker.close()
        assert statuses == {"ok": JobStatus.SUCCEEDED, "bad": JobStatus.FAILED, "permanent": JobStatus.FAILED}
        assert [job.id for job in queue.dead()] == ["dead"]
        assert queue.result("ok", timeout=5) == {"action": "echo"}


def fresh_namespace(namespaces: list[str]) -> str:
    """A new namespace, noted for the fixture to clean up."""
    namespaces.append(f"c-{uuid.uuid4().hex[:8]}")
    return namespaces[-1]


@pytest.fixture
def namespaces(redis_cluster: RedisClusterServers) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for namespace in made:
        engine = open_engine(redis_cluster.url, namespace=namespace)
        assert isinstance(engine, RedisEngine)
        for key in engine.client.scan_iter(match=f"{engine.keys.base}:*"):
            engine.client.delete(key)
        engine.close()


def test_every_key_of_a_namespace_is_in_one_slot_on_one_master(
    redis_cluster: RedisClusterServers, namespaces: list[str]
) -> None:
    namespace = fresh_namespace(namespaces)
    run_mixed_jobs(redis_cluster, namespace)
    found = {server.port: server.client.keys(f"dtq:{{{namespace}}}:*") for server in redis_cluster.servers}
    holders = [port for port, keys in found.items() if keys]
    assert len(holders) == 1, f"the namespace's keys are spread over {holders}"
    keys = found[holders[0]]
    assert len(keys) >= 8  # jobs, state, ready, active, scheduled, done:*, index, plugins, workers...
    slots = {redis_cluster.servers[0].client.execute_command("CLUSTER", "KEYSLOT", key) for key in keys}
    assert len(slots) == 1


def test_namespaces_on_different_masters_each_work(
    redis_cluster: RedisClusterServers, namespaces: list[str]
) -> None:
    engine = open_engine(redis_cluster.url)
    assert isinstance(engine, RedisEngine)
    by_master: dict[str, str] = {}
    try:
        # Pick one namespace per master: a namespace's slot decides its master.
        while len(by_master) < len(redis_cluster.servers):
            namespace = f"c-{uuid.uuid4().hex[:8]}"
            slot = engine.client.keyslot(f"dtq:{{{namespace}}}:jobs")
            master = engine.client.nodes_manager.get_node_from_slot(slot).name
            by_master.setdefault(master, namespace)
    finally:
        engine.close()
    namespaces.extend(by_master.values())
    for namespace in by_master.values():
        run_mixed_jobs(redis_cluster, namespace)


def test_scripts_are_loaded_again_after_every_node_forgets_them(
    redis_cluster: RedisClusterServers, namespaces: list[str]
) -> None:
    namespace = fresh_namespace(namespaces)
    with cluster_queue(redis_cluster, namespace) as queue:
        queue.enqueue("test_only", {"action": "echo"}, id="before")
        for server in redis_cluster.servers:
            server.client.script_flush()
        queue.enqueue("test_only", {"action": "echo"}, id="after")
        worker = Worker(["test_only"], redis_cluster.url, namespace=namespace, mode="thread")
        try:
            assert sorted(job.id for job in worker.get_jobs()) == ["after", "before"]
        finally:
            worker.close()


def test_a_cluster_refuses_wait_replicas_with_a_clear_error(redis_cluster: RedisClusterServers) -> None:
    with pytest.raises(Exception, match="wait_replicas is not supported on Redis Cluster"):
        open_engine(f"{redis_cluster.url}?wait_replicas=1")


def test_an_idle_worker_on_a_cluster_stops_at_once_and_a_trickled_job_still_wakes_it(
    redis_cluster: RedisClusterServers, namespaces: list[str]
) -> None:
    # A cluster's worker waits with a BLPOP of its own (its pipelines refuse scripts): on the
    # plugins' hint lists and its wake-up list, all in the namespace's slot. Before, a stop
    # waited out the BLPOP (up to 5 s).
    namespace = fresh_namespace(namespaces)

    def make() -> Worker:
        return Worker(["test_only"], redis_cluster.url, namespace=namespace, mode="thread", poll_s=30.0)

    worker = make()
    try:
        assert stop_when_idle(worker) < 2.0
        assert isinstance(worker.engine, RedisEngine)
        assert not worker.engine.client.exists(worker.engine.keys.wake(worker.worker_id))
    finally:
        worker.close()
    worker = make()
    waiting = noting_idle_waits(worker)
    try:
        with cluster_queue(redis_cluster, namespace) as queue, running(worker):
            assert waiting.wait(20)
            time.sleep(0.3)  # in its BLPOP (the Cluster's block_s is 5 s)
            job = queue.enqueue("test_only", {"action": "echo"})
            assert queue.result(job.id, timeout=4) == {"action": "echo"}  # woken, not timed out
    finally:
        worker.close()


def test_a_worker_waits_out_a_slot_the_cluster_does_not_serve_and_carries_on(
    redis_cluster: RedisClusterServers, namespaces: list[str]
) -> None:
    # CLUSTERDOWN (and a client's SlotNotCoveredError) is what a master's failure or a
    # resharding looks like: a worker must back off and retry, as when Redis is unreachable,
    # not die. The namespace's slot is taken from its master, then given back.
    namespace = fresh_namespace(namespaces)
    worker = Worker(["test_only"], redis_cluster.url, namespace=namespace, mode="thread", poll_s=0.2)
    assert isinstance(worker.engine, RedisEngine)
    slot = worker.engine.client.keyslot(worker.engine.keys.seq)
    owner = next(s for s in redis_cluster.servers if any(a <= slot <= b for a, b in _slot_ranges(s)))
    try:
        with cluster_queue(redis_cluster, namespace) as queue, working(worker) as still_working:
            assert queue.result(queue.enqueue("test_only", {"action": "echo", "n": 1}).id, timeout=10)
            time.sleep(1.0)  # idle: in the dispatcher's own wait
            owner.client.execute_command("CLUSTER", "DELSLOTS", slot)
            try:
                time.sleep(4.0)  # the worker's waits and fetches fail meanwhile
                still_working()
            finally:
                owner.client.execute_command("CLUSTER", "ADDSLOTS", slot)
            job = queue.enqueue("test_only", {"action": "echo", "n": 2})
            assert queue.result(job.id, timeout=30) == {"action": "echo", "n": 2}
            still_working()
    finally:
        worker.close()


def test_a_worker_rides_out_the_whole_cluster_going_away(tmp_path: Path) -> None:
    # With every node gone, redis-py's Cluster client raises its own exception
    # (not a RedisError) when it tries to learn the slots again: the worker died of
    # it. Now it backs off as for an unreachable server and carries on once the
    # nodes are back (restarted from their nodes.conf; their data is gone).
    cluster = RedisClusterServers(tmp_path)
    worker = Worker(["test_only"], cluster.url, namespace="whole", mode="thread", poll_s=0.2)
    try:
        with cluster_queue(cluster, "whole") as queue, working(worker) as still_working:
            assert queue.result(queue.enqueue("test_only", {"action": "echo", "n": 1}).id, timeout=10)
            for server in cluster.servers:
                server.kill()
            time.sleep(2.0)  # the worker's waits fail meanwhile
            still_working()
            with pytest.raises(EngineUnavailable, match="cannot reach Redis Cluster at redis"):
                queue.enqueue("test_only", {"action": "echo", "n": 2})
            for server in cluster.servers:
                server.start_again()
            wait_for(cluster.is_ready, timeout=30)
            job = queue.enqueue("test_only", {"action": "echo", "n": 3})
            assert queue.result(job.id, timeout=30) == {"action": "echo", "n": 3}
            still_working()
    finally:
        worker.close()
        cluster.stop()


def _slot_ranges(server: Any) -> list[tuple[int, int]]:
    """The slot ranges ``server`` itself serves (from CLUSTER SLOTS, by its port)."""
    ranges = server.client.execute_command("CLUSTER", "SLOTS")
    return [(int(start), int(end)) for start, end, master, *_ in ranges if int(master[1]) == server.port]


def test_a_slot_on_the_move_past_the_clients_redirections_is_a_passing_trouble(
    redis_cluster: RedisClusterServers,
) -> None:
    # While a slot migrates, the client follows TRYAGAIN and ASK until its redirections run
    # out, then raises ClusterError("TTL exhausted."): a plain EngineError, which stopped a worker.
    engine = open_engine(redis_cluster.url, namespace="moving")
    try:
        translated = engine._translated(redis.exceptions.ClusterError("TTL exhausted."))  # type: ignore[attr-defined]
        assert isinstance(translated, EngineUnavailable) and "Retrying is safe" in str(translated)
    finally:
        engine.close()
