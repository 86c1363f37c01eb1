"""ProcessRunner against a real job process: what it does when an attempt must stop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from dtq_core import Job
from dtq_core.caller import Control
from dtq_core.engine import Lease
from dtq_core.plugin import PluginRegistry
from dtq_core.retry import Ending
from dtq_core.runner import ProcessRunner


@pytest.fixture
def runner() -> Iterator[ProcessRunner]:
    process_runner = ProcessRunner(PluginRegistry(["test_only"]), None, None)  # type: ignore[arg-type]
    yield process_runner
    process_runner.close()


def control_of(data: dict[str, object], deadline_s: float | None = None) -> Control:
    job = Job.from_dict({"id": "j", "job": {"plugin": "test_only", "data": data}})
    return Control(
        Lease(job, "token"), deadline=None if deadline_s is None else time.monotonic() + deadline_s
    )


def once_it_ended(runner: ProcessRunner, then: Callable[[], object] = lambda: None) -> Callable[[], None]:
    """An ``ahead`` that waits until the child's outcome is in the pipe, then calls ``then``."""

    def ahead() -> None:
        assert runner._conn is not None and runner._conn.poll(30)
        then()

    return ahead


def test_an_attempt_that_already_ended_when_it_must_stop_is_not_killed(runner: ProcessRunner) -> None:
    # `ahead` runs once the child has the job: it waits for the echo's outcome to be in
    # the pipe; then the time limit has passed, or a cancel came.
    plugin = PluginRegistry(["test_only"]).get("test_only")
    warm_up = runner.run(control_of({"action": "echo"}), None, plugin)  # the child starts, loads the plugin
    assert warm_up is not None and warm_up.ending is Ending.OK

    late = control_of({"action": "echo"}, deadline_s=0.05)
    attempt = runner.run(late, 0.05, plugin, once_it_ended(runner, lambda: time.sleep(0.1)))
    assert attempt is not None and attempt.error is not None
    assert (attempt.ending, attempt.error.type) == (Ending.TIMEOUT, "JobTimeout")  # its result discarded
    child = runner._process
    assert child is not None and child.is_alive()  # not killed: it could be running the next job

    cancelled = control_of({"action": "echo", "n": 2})
    attempt = runner.run(cancelled, None, plugin, once_it_ended(runner, cancelled.cancel.set))
    assert attempt is not None and (attempt.ending, attempt.result_json) == (
        Ending.OK,
        '{"action": "echo", "n": 2}',
    )
    assert runner._process is child and child.is_alive()  # a success stands against a late cancel


def test_an_attempt_still_running_when_it_must_stop_is_killed(runner: ProcessRunner) -> None:
    plugin = PluginRegistry(["test_only"]).get("test_only")
    started = time.monotonic()
    attempt = runner.run(control_of({"action": "sleep", "seconds": 30}, deadline_s=0.2), 0.2, plugin)
    assert attempt is not None and attempt.ending is Ending.TIMEOUT
    assert time.monotonic() - started < 15
    assert runner._process is None  # killed; the next job gets a new child
