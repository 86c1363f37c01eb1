"""Testing kit for plugin authors and applications: a pytest plugin and assertions.

dtq-core registers this module as the pytest plugin ``dtq`` (entry point group
``pytest11``). It adds fixtures and nothing else: a test opts in by asking for
them. ``-p no:dtq`` turns it off.

Fixtures:

* ``dtq_url``: the engine the fixtures use. A fresh ``memory://`` store per
  test by default; ``pytest --dtq-url redis://localhost:6379/15`` (or
  ``$DTQ_TEST_URL``) runs the same tests against a real Redis, in a namespace
  of their own whose keys are deleted afterwards.
* ``dtq_namespace``: a namespace no other test uses.
* ``dtq_queue``: a :class:`~dtq_core.Queue` on that engine (no allow-list).
* ``dtq_engine``: the :class:`~dtq_core.Engine` itself, on that URL and namespace.
* ``dtq_make_worker``: ``dtq_make_worker(**options)`` makes a
  :class:`~dtq_core.Worker` on the engine, closed after the test.
* ``dtq_run``: ``dtq_run(plugin, data, *, config=None, mode="thread",
  timeout_s=30, **options)`` appends one job and runs it through a real
  worker in the test process until it is final (retries included); returns
  the final :class:`~dtq_core.Job`.

Assertions and helpers (plain functions, usable anywhere): :func:`assert_succeeded`,
:func:`assert_failed`, :func:`check_plugin_installed`, :func:`wait_for`, :func:`running` (and its
:class:`WorkerThread`).

Engine authors: :mod:`dtq_core.testing.contract` is the suite every engine must pass.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import redis

from dtq_core.engine import Engine, open_engine
from dtq_core.engines.redis import RedisEngine
from dtq_core.job import Job, JobStatus
from dtq_core.plugin import PluginRegistry, PluginStatus
from dtq_core.queue import Queue
from dtq_core.worker import Worker

_UNSET: Any = object()


def assert_succeeded(job: Job | None, result: Any = _UNSET) -> None:
    """Fail the test unless ``job`` succeeded (with ``result``, when given)."""
    assert job is not None, "no such job"
    if job.status is not JobStatus.SUCCEEDED:
        reason = "" if job.error is None else f": {job.error.type}: {job.error.message}"
        raise AssertionError(f"job {job.id!r} ({job.plugin}) is {job.status.value}, not succeeded{reason}")
    if result is not _UNSET and job.result != result:
        raise AssertionError(f"job {job.id!r} returned {job.result!r}, expected {result!r}")


def assert_failed(
    job: Job | None,
    *,
    error_type: str | None = None,
    message: str | None = None,
    status: JobStatus | None = None,
) -> None:
    """Fail the test unless ``job`` ended without a result.

    Args:
        error_type: the exception's class name, e.g. ``"ValueError"``.
        message: a part of the error message.
        status: ``FAILED``, ``DEAD`` or ``CANCELLED``; any of them when None.
    """
    assert job is not None, "no such job"
    ended = (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED) if status is None else (status,)
    if job.status not in ended:
        raise AssertionError(
            f"job {job.id!r} is {job.status.value}, expected {' or '.join(s.value for s in ended)}"
        )
    error = job.error
    if error_type is not None and (error is None or error.type != error_type):
        raise AssertionError(f"job {job.id!r} failed with {error and error.type!r}, expected {error_type!r}")
    if message is not None and (error is None or message not in error.message):
        raise AssertionError(f"job {job.id!r} error {error and error.message!r} does not contain {message!r}")


def check_plugin_installed(name: str) -> PluginStatus:
    """Fail the test unless an installed distribution registers plugin ``name`` and it loads.

    Returns its status (distribution, version, API version, description).
    """
    # An allow-listed name is always listed: "not installed" when nothing provides it.
    rows = [row for row in PluginRegistry([name]).statuses() if row.name == name]
    bad = [row for row in rows if row.status != "ok"]
    if bad:
        raise AssertionError(f"plugin {name!r} is {bad[0].status}: {bad[0].error}")
    return rows[0]


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Call ``predicate`` until it returns something truthy, and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")


class WorkerThread:
    """A context manager running ``worker.work()`` in a daemon thread for its block, then stopping it.

    A run that raises has crashed, and the jobs it was to run are left
    waiting: :meth:`check`, and the end of the block, fail with that exception
    as the cause, rather than let a test time out on a job nothing runs. An
    exception from the block itself wins over what stopping finds.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.crash: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="test-worker", daemon=True)

    def __enter__(self) -> WorkerThread:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.stop()
            return
        with contextlib.suppress(AssertionError):  # the block's own failure says more
            self.stop()

    def _work(self) -> None:
        try:
            self.worker.work()
        except BaseException as exc:  # a thread's exception would only be printed
            self.crash = exc

    def is_alive(self) -> bool:
        """True while the run goes on."""
        return self._thread.is_alive()

    def check(self) -> None:
        """Fail (AssertionError, caused by the crash) if the run raised."""
        if self.crash is not None:
            raise AssertionError(f"the worker's run ended with {self.crash!r}") from self.crash

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the worker and wait for its run to end; fail if it raised or does not end."""
        self.worker.stop()
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the worker did not stop within {timeout_s:g} s"
        self.check()


@contextlib.contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run ``worker.work()`` in a thread for the duration of the block, then stop it.

    Raises:
        AssertionError: at the block's end, if the worker's run raised (the
            exception is the cause) or did not stop within 30 s.
    """
    with WorkerThread(worker):
        yield worker


def run_job(
    url: str,
    namespace: str,
    plugin: str,
    data: Mapping[str, Any],
    *,
    config: Mapping[str, Any] | None = None,
    mode: str = "thread",
    timeout_s: float = 30.0,
    **options: Any,
) -> Job:
    """Append one job and run it through a real worker until it is final; return it.

    Raises:
        AssertionError: it did not end within ``timeout_s`` (retries included).
    """
    plugin_config = {plugin: dict(config or {})}
    with Queue([plugin], url, namespace=namespace, plugin_config=plugin_config) as queue:
        job = queue.enqueue(plugin, data, **options)
        worker = Worker(
            [plugin], url, namespace=namespace, mode=mode, plugin_config=plugin_config, poll_s=0.05
        )
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                worker.get_jobs()
                current = queue.get(job.id)
                if current is not None and current.status.is_final:
                    return current
                time.sleep(0.02)  # a retry is waiting out its backoff
        finally:
            worker.close()
    raise AssertionError(f"job {job.id!r} did not finish within {timeout_s} s")


# --- the pytest plugin -------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--dtq-url``: the engine the dtq fixtures use."""
    parser.getgroup("dtq").addoption(
        "--dtq-url",
        default=None,
        help="engine URL for the dtq fixtures (default: $DTQ_TEST_URL, else a fresh memory:// store)",
    )


@pytest.fixture
def dtq_url(request: pytest.FixtureRequest) -> str:
    """The engine URL the dtq fixtures use."""
    chosen = request.config.getoption("--dtq-url") or os.environ.get("DTQ_TEST_URL")
    return str(chosen or f"memory://test-{uuid.uuid4().hex}")


@pytest.fixture
def dtq_namespace(dtq_url: str) -> Iterator[str]:
    """A namespace of this test's own; on Redis its keys are deleted afterwards."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    yield namespace
    _delete_namespace(dtq_url, namespace)


@pytest.fixture
def dtq_queue(dtq_url: str, dtq_namespace: str) -> Iterator[Queue]:
    """A queue on the test's engine and namespace, without an allow-list."""
    with Queue(None, dtq_url, namespace=dtq_namespace) as queue:
        yield queue


@pytest.fixture
def dtq_engine(dtq_url: str, dtq_namespace: str) -> Iterator[Engine]:
    """The engine itself, opened on the test's URL and namespace."""
    engine = open_engine(dtq_url, namespace=dtq_namespace)
    yield engine
    engine.close()


@pytest.fixture
def dtq_make_worker(dtq_url: str, dtq_namespace: str) -> Iterator[Callable[..., Worker]]:
    """``dtq_make_worker(**options)``: a :class:`~dtq_core.Worker` on the test's engine, closed after.

    It serves the ``test_only`` plugin unless ``options`` name others.
    """
    made: list[Worker] = []

    def make(**options: Any) -> Worker:
        options.setdefault("plugins", ["test_only"])
        worker = Worker(url=dtq_url, namespace=dtq_namespace, **options)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.close()


@pytest.fixture
def dtq_run(dtq_url: str, dtq_namespace: str) -> Callable[..., Job]:
    """Run one job through a real worker in the test process; see :func:`run_job`."""

    def run(plugin: str, data: Mapping[str, Any], **options: Any) -> Job:
        return run_job(dtq_url, dtq_namespace, plugin, data, **options)

    return run


def _delete_namespace(url: str, namespace: str) -> None:
    if urllib.parse.urlsplit(url).scheme.partition("+")[0] not in ("redis", "rediss", "unix"):
        return  # memory stores vanish with the process; SQLite files with the test's directory
    engine = open_engine(url, namespace=namespace, retries=0)
    assert isinstance(engine, RedisEngine)
    try:
        # A cluster client scans every primary; the keys all share one slot anyway.
        for key in engine.client.scan_iter(match=f"{engine.keys.base}:*"):
            engine.client.delete(key)
    except redis.RedisError:
        pass  # the server is gone: the test has already said so
    finally:
        engine.close()
