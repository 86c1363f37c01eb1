"""Helpers for dtq's tests (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import importlib
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

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server process of the test session's own."""

    def __init__(self, directory: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: apt-get install -y redis-server")
        self.port = free_port()
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
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.client = redis.Redis(port=self.port, decode_responses=True)
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


def dtq_command() -> list[str]:
    """The installed ``dtq`` console script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "dtq"
    if not script.exists():
        pytest.fail(f"the dtq console script is not installed next to {sys.executable}")
    return [str(script)]


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")


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


@contextlib.contextmanager
def running(worker: Any) -> Iterator[Any]:
    """Run ``worker.work()`` in a thread for the duration of the block, then stop it."""
    thread = threading.Thread(target=worker.work, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop within 30 s"
