"""The ``test_only`` plugin: the original design's example, plus actions that test dtq itself."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from dtq_core import Caller, Job, Permanent, Plugin, Retry, ValidationError

__all__ = ["AsyncTestOnlyPlugin", "TestOnlyPlugin"]


class TestOnlyPlugin(Plugin):
    """Transforms text as a job processing example, and misbehaves on request.

    ``data.action`` picks what the job does; see the distribution's README.
    """

    __test__ = False  # not a pytest test class, whatever its name
    description = "For testing: duplicates text, echoes, fails, sleeps, flakes or crashes on request."

    def validate(self, job: Job) -> None:
        """Refuse a job whose action is unknown or lacks the fields it needs."""
        action = job.data.get("action")
        if action not in _ACTIONS and action != "quote_settings":
            raise ValidationError(
                f"test_only: data.action must be one of {', '.join(sorted(_ACTIONS))}, got {action!r}"
            )
        for field, (kinds, described) in _REQUIRED.get(action, {}).items():
            value = job.data.get(field)
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise ValidationError(f"test_only: action {action!r} needs data.{field}, {described}")

    def process(self, job: Job, caller: Caller) -> Any:
        """Run the job's action and return its result."""
        if job.data["action"] == "quote_settings":
            # As a careless plugin might: dtq must keep the settings out of the stored error.
            raise RuntimeError(f"test_only was set up with {dict(self.config)}")
        return _ACTIONS[job.data["action"]](job, caller)


class AsyncTestOnlyPlugin(Plugin):
    """``async def process``: echoes the data after yielding to the event loop."""

    __test__ = False
    description = "For testing: an async plugin that echoes its data."

    async def process(self, job: Job) -> Any:
        """Sleep ``data.seconds`` (default 0) on the event loop, then return the data."""
        await asyncio.sleep(float(job.data.get("seconds", 0)))
        return job.data


def _duplicate_text(job: Job, _caller: Caller) -> str:
    text = job.data["text"]
    return f"{text}{text}"


def _echo(job: Job, _caller: Caller) -> Any:
    return job.data


def _fail(job: Job, _caller: Caller) -> Any:
    raise RuntimeError(job.data.get("message", "test_only was asked to fail"))


def _sleep(job: Job, _caller: Caller) -> Any:
    seconds = float(job.data["seconds"])
    time.sleep(seconds)
    return {"slept": seconds}


def _whoami(job: Job, caller: Caller) -> Any:
    # Names the delivery that produced the result, so tests can check it was the lease holder's.
    deadline = time.monotonic() + float(job.data["seconds"])
    while (left := deadline - time.monotonic()) > 0:
        caller.check_cancelled()
        time.sleep(min(left, 0.05))
    return {"worker": job.worker, "attempt": job.attempts, "pid": os.getpid()}


def _stubborn(job: Job, caller: Caller) -> Any:
    # Asks whether to stop as fast as it can, and never does: only a kill ends it early.
    deadline = time.monotonic() + float(job.data["seconds"])
    asked = 0
    while time.monotonic() < deadline:
        caller.cancelled  # noqa: B018 - asked for its effect: a request to the worker
        asked += 1
    return {"asked": asked}


def _flaky(job: Job, _caller: Caller) -> Any:
    if job.attempts <= int(job.data["failures"]):
        raise RuntimeError(f"flaky: attempt {job.attempts} fails on purpose")
    return {"attempts": job.attempts}


def _crash(job: Job, _caller: Caller) -> Any:
    crashes = job.data.get("crashes")
    if crashes is None or job.attempts <= int(crashes):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"survived": job.attempts}


def _retry(job: Job, _caller: Caller) -> Any:
    if job.attempts <= int(job.data.get("times", 1)):
        raise Retry("test_only asks for another attempt", after=job.data.get("after"))
    return {"attempts": job.attempts}


def _exit(job: Job, _caller: Caller) -> Any:
    raise SystemExit(job.data.get("code", 1))


def _permanent(job: Job, _caller: Caller) -> Any:
    raise Permanent(job.data.get("message", "test_only failed for good"))


def _progress(job: Job, caller: Caller) -> Any:
    steps = int(job.data["steps"])
    for step in range(steps):
        caller.check_cancelled()
        caller.progress((step + 1) / steps, f"step {step + 1} of {steps}")
        time.sleep(float(job.data.get("interval", 0.05)))
    return {"steps": steps}


def _follow_up(job: Job, caller: Caller) -> Any:
    child = caller.enqueue("test_only", {"action": "echo", "parent": job.id}, id=f"{job.id}-child")
    return {"child": child.id}


_ACTIONS: dict[str, Callable[[Job, Caller], Any]] = {
    "duplicate_text": _duplicate_text,
    "echo": _echo,
    "fail": _fail,
    "sleep": _sleep,
    "whoami": _whoami,
    "stubborn": _stubborn,
    "flaky": _flaky,
    "crash": _crash,
    "retry": _retry,
    "permanent": _permanent,
    "exit": _exit,
    "progress": _progress,
    "follow_up": _follow_up,
}

_REQUIRED: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "duplicate_text": {"text": ((str,), "a string")},
    "sleep": {"seconds": ((int, float), "a number of seconds")},
    "flaky": {"failures": ((int,), "an integer")},
    "whoami": {"seconds": ((int, float), "a number of seconds")},
    "stubborn": {"seconds": ((int, float), "a number of seconds")},
    "progress": {"steps": ((int,), "an integer")},
}
