"""Helpers for dtq's tests (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dtq_core import Worker
from dtq_core.testing import WorkerThread, running, wait_for

__all__ = [
    "FakeSite",
    "RedisClusterServers",
    "RedisServer",
    "dtq_command",
    "free_port",
    "running",
    "unique_module",
    "wait_for",
]

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster-bus partner (port + 10000) is free too and still a valid port."""
    for _ in range(1000):
        port = random.randrange(20000, 55000)
        if all(_is_free(p) for p in (port, port + 10000)):
            return port
    pytest.fail("no free pair of ports for a cluster node")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisServer:
    """A redis-server process of the test session's own."""

    def __init__(self, directory: Path, *extra: str, port: int | None = None) -> None:
        binary = _redis_server()
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            *extra,
        ]
        self._args = args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.client = redis.Redis(port=self.port, decode_responses=True)
        self._wait_until_up()

    def kill(self) -> None:
        """SIGKILL the server (its data is gone; a cluster node's nodes.conf stays in its directory)."""
        self.process.kill()
        self.process.wait(10)

    def start_again(self) -> None:
        """Start the server again as it was first started, on the same port and directory."""
        self.process = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    pytest.fail(f"redis-server exited with {self.process.returncode}")
                time.sleep(0.05)
        pytest.fail("redis-server did not answer within 10 s")

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


class RedisClusterServers:
    """Three redis-server processes in cluster mode, joined into one cluster of three masters."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.servers = []
        for n in range(masters):
            node_dir = directory / f"node{n}"
            node_dir.mkdir()
            self.servers.append(
                RedisServer(
                    node_dir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "5000",
                    port=free_cluster_port(),
                )
            )
        addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            self.stop()
            pytest.fail(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
        self.url = f"redis+cluster://{','.join(addresses)}"
        wait_for(self.is_ready, timeout=30)

    def is_ready(self) -> bool:
        return all("cluster_state:ok" in s.client.execute_command("CLUSTER", "INFO") for s in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class RedisSentinelSet:
    """A master, two replicas and one sentinel watching them (quorum 1), all on loopback."""

    service = "dtqmaster"

    def __init__(self, directory: Path) -> None:
        self.master = RedisServer(_mkdir(directory / "master"))
        self.replicas = [
            RedisServer(_mkdir(directory / f"replica{n}"), "--replicaof", "127.0.0.1", str(self.master.port))
            for n in range(2)
        ]
        config = directory / "sentinel.conf"  # the sentinel rewrites it: it must be its own file
        config.write_text(
            f"port {free_port()}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 10000\n"
        )
        self.sentinel_port = int(config.read_text().split()[1])
        self.sentinel = subprocess.Popen(
            [_redis_server(), str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        self.sentinel_client = redis.Redis(port=self.sentinel_port, decode_responses=True)
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.service}"
        wait_for(self._watching_both_replicas, timeout=30)

    def _watching_both_replicas(self) -> bool:
        try:
            replicas = self.sentinel_client.sentinel_slaves(self.service)
        except redis.ConnectionError:
            return False
        up = [r for r in replicas if "s_down" not in r["flags"] and r.get("master-link-status") == "ok"]
        return len(up) == len(self.replicas)

    def master_port(self) -> int:
        return int(self.sentinel_client.sentinel_get_master_addr_by_name(self.service)[1])

    def stop(self) -> None:
        self.sentinel_client.close()
        self.sentinel.terminate()
        self.sentinel.wait(10)
        for server in [self.master, *self.replicas]:
            if server.process.poll() is None:
                server.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: apt-get install -y redis-server")
    return binary


def dtq_command() -> list[str]:
    """The installed ``dtq`` console script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "dtq"
    if not script.exists():
        pytest.fail(f"the dtq console script is not installed next to {sys.executable}")
    return [str(script)]


class FakeSite:
    """A directory of real installed-distribution metadata, put on ``sys.path``.

    Entry points are read by importlib.metadata exactly as for a pip-installed
    distribution, so the plugin loader is tested without mocks.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, dist: str, version: str, plugins: dict[str, str], modules: dict[str, str]) -> None:
        """Install ``dist`` with ``plugins`` (name -> "module:attr") and module sources."""
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in plugins.items())
        (info / "entry_points.txt").write_text(f"[dtq.plugins]\n{lines}")
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(source)
        importlib.invalidate_caches()  # as pip's own process would be fresh


def unique_module(prefix: str = "fakeplugin") -> str:
    """A module name no other test has imported."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def never_ready(*_args: object) -> None:
    """A job process's entry point that never says it is ready (see dtq_core.runner)."""
    time.sleep(60)


def fails_at_start(*_args: object) -> None:
    """A job process's entry point that fails before it is ready."""
    raise SystemExit(3)


def works_once(*args: Any) -> None:
    """A job process's entry point that works in the first child only: later ones fail as
    they start. The marker file that says a child started is named by DTQ_TEST_MARKER."""
    from dtq_core import runner

    marker = Path(os.environ["DTQ_TEST_MARKER"])
    if marker.exists():
        raise SystemExit(3)
    marker.touch()
    runner.child_main(*args)


def noting_idle_waits(worker: Worker) -> threading.Event:
    """An event set each time ``worker`` goes into its idle wait (``Engine.wait_and_fetch``)."""
    waiting = threading.Event()
    wait_and_fetch = worker.engine.wait_and_fetch

    def noted(*args: Any, **kwargs: Any) -> Any:
        waiting.set()
        return wait_and_fetch(*args, **kwargs)

    worker.engine.wait_and_fetch = noted  # type: ignore[method-assign]
    return waiting


def stop_when_idle(worker: Worker) -> float:
    """Run ``worker`` in a thread until it is in its idle wait, then stop it; how long the stop took.

    Raises AssertionError if it never waited or did not stop within 10 s.
    """
    waiting = noting_idle_waits(worker)
    thread = threading.Thread(target=worker.work)
    thread.start()
    try:
        assert waiting.wait(20), "the worker never reached its idle wait"
        time.sleep(0.3)  # in it (a wake-up that came first must not be lost either)
        started = time.monotonic()
        worker.stop()
        thread.join(10)
        assert not thread.is_alive(), "the worker did not stop within 10 s"
        return time.monotonic() - started
    finally:
        worker.stop()
        thread.join(10)


@contextlib.contextmanager
def working(worker: Worker) -> Iterator[Callable[[], None]]:
    """Run ``worker.work()`` in a thread for the block; yield a check that it still runs
    (raises AssertionError with what ended it otherwise). Stops it at the end."""
    with WorkerThread(worker) as thread:

        def still_working() -> None:
            thread.check()
            assert thread.is_alive(), "the worker's run ended before it was stopped"

        yield still_working


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """A one-line message on stderr, the expected exit code, and no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("dtq: error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in proc.stderr
