"""A private redis-server for the benchmark, and the figures read from it.

The server listens on a free loopback port, keeps nothing on disk and lives in a
temporary directory. Every command the harness itself sends goes through
:class:`CountingConnection`, so it can be subtracted from ``INFO commandstats``:
the figures then hold the systems' own commands only.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import redis
from redis.connection import Connection

#: Commands whose second word names a subcommand in ``INFO commandstats`` (``cmdstat_client|setinfo``).
_CONTAINERS = {"acl", "client", "cluster", "command", "config", "function", "memory", "object", "script"}


def _stat_name(args: tuple[Any, ...]) -> str:
    words = [a.decode() if isinstance(a, bytes) else str(a) for a in args[:2]]
    head = words[0].split()
    name = head[0].lower()
    if name in _CONTAINERS:
        sub = head[1] if len(head) > 1 else (words[1] if len(words) > 1 else "")
        name = f"{name}|{sub.lower()}"
    return name


class CountingConnection(Connection):
    """A redis-py connection that counts the commands and round trips it sends."""

    sent: ClassVar[collections.Counter[str]] = collections.Counter()
    round_trips: ClassVar[int] = 0

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        CountingConnection.sent[_stat_name(args)] += 1
        CountingConnection.round_trips += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> Any:
        commands = list(commands)
        for args in commands:
            CountingConnection.sent[_stat_name(args)] += 1
        CountingConnection.round_trips += 1
        return super().pack_commands(commands)


@dataclass
class Snapshot:
    """What the server says at one moment, and what the harness had sent by then."""

    at: float
    calls: dict[str, int]
    reads: int
    cpu_s: float
    used_memory: int
    own_calls: dict[str, int] = field(default_factory=dict)
    own_round_trips: int = 0

    def commands_since(self, earlier: Snapshot) -> int:
        """Commands the server ran between two snapshots, the harness's own left out."""
        theirs = sum(self.calls.values()) - sum(earlier.calls.values())
        ours = sum(self.own_calls.values()) - sum(earlier.own_calls.values())
        return theirs - ours

    def by_command_since(self, earlier: Snapshot) -> dict[str, int]:
        """The same, command by command (only those that ran)."""
        out = {}
        for name, calls in self.calls.items():
            delta = calls - earlier.calls.get(name, 0)
            delta -= self.own_calls.get(name, 0) - earlier.own_calls.get(name, 0)
            if delta:
                out[name] = delta
        return dict(sorted(out.items(), key=lambda item: -item[1]))

    def reads_since(self, earlier: Snapshot) -> int:
        """Client requests read by the server (round trips; a pipeline counts about once)."""
        return self.reads - earlier.reads - (self.own_round_trips - earlier.own_round_trips)

    def cpu_since(self, earlier: Snapshot) -> float:
        """Server CPU seconds (user + system) between two snapshots."""
        return self.cpu_s - earlier.cpu_s


class RedisServer:
    """redis-server on a free loopback port in a temporary directory; never port 6379."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: redis.Redis | None = None

    def start(self) -> RedisServer:
        """Start the server and wait (at most 10 s) until it answers."""
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pool = redis.ConnectionPool.from_url(self.url, connection_class=CountingConnection)
        self.client = redis.Redis(connection_pool=pool)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.client is not None:
            self.client.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def redis(self) -> redis.Redis:
        """The harness's own (counted) client."""
        assert self.client is not None
        return self.client

    def flush(self) -> None:
        """FLUSHALL, then give jemalloc a moment so used_memory settles."""
        self.redis.flushall()
        with contextlib.suppress(redis.ResponseError):
            self.redis.memory_purge()

    def used_memory(self) -> int:
        """INFO memory used_memory, in bytes."""
        return int(self.redis.info("memory")["used_memory"])

    def version(self) -> str:
        """The server's version."""
        return str(self.redis.info("server")["redis_version"])

    def snapshot(self) -> Snapshot:
        """One ``INFO all`` (counted as the harness's own) plus the harness's counts before it."""
        own = dict(CountingConnection.sent)
        own_trips = CountingConnection.round_trips
        info = self.redis.info("all")
        calls = {
            k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")
        }
        return Snapshot(
            at=time.perf_counter(),
            calls=calls,
            reads=int(info["total_reads_processed"]),
            cpu_s=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            used_memory=int(info["used_memory"]),
            own_calls=own,
            own_round_trips=own_trips,
        )

    def limit(self, requests: int) -> dict[str, Any]:
        """The server's own ceiling: redis-benchmark, pipelined EVALSHA of a trivial script, from one
        client (as the producer under test is one client); the median of :data:`LIMIT_RUNS` runs,
        since one run moved by half between minutes on these machines."""
        sha = self.redis.script_load("return 1")
        binary = shutil.which("redis-benchmark") or "redis-benchmark"
        argv = [binary, "-p", str(self.port), "-n", str(requests), "-c", "1", "-P", "16", "-q", "--csv"]
        argv += ["EVALSHA", sha, "0"]
        each = []
        for _ in range(LIMIT_RUNS):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
            rows = [line.split('","') for line in out.splitlines() if line.startswith('"')]
            each.append(float(rows[-1][1].strip('"')))
        shown = " ".join([*argv[1:-3], "EVALSHA", "<sha of 'return 1'>", "0"])
        median = sorted(each)[len(each) // 2]
        return {"command": f"redis-benchmark {shown}", "evalsha_per_s": median, "per_s_each": each}


#: redis-benchmark runs of the server's limit; the median counts.
LIMIT_RUNS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    if port == 6379:  # pragma: no cover - the machine's own Redis is never ours
        return free_port()
    return port


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped on exit."""
    server = RedisServer(workdir)
    try:
        yield server.start()
    finally:
        server.stop()
