"""The ``test_only`` plugin: the original design's example, plus actions that test dtq itself."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from dtq_core import Job, Plugin, ValidationError

__all__ = ["TestOnlyPlugin"]


class TestOnlyPlugin(Plugin):
    """Transforms text as a job processing example, and misbehaves on request.

    ``data.action`` picks what the job does; see the distribution's README.
    """

    __test__ = False  # not a pytest test class, whatever its name
    description = "For testing: duplicates text, echoes, fails, sleeps, flakes or crashes on request."

    def validate(self, job: Job) -> None:
        """Refuse a job whose action is unknown or lacks the fields it needs."""
        action = job.data.get("action")
        if action not in _ACTIONS:
            raise ValidationError(
                f"test_only: data.action must be one of {', '.join(sorted(_ACTIONS))}, got {action!r}"
            )
        for field, (kinds, described) in _REQUIRED.get(action, {}).items():
            value = job.data.get(field)
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise ValidationError(f"test_only: action {action!r} needs data.{field}, {described}")

    def process(self, job: Job) -> Any:
        """Run the job's action and return its result."""
        return _ACTIONS[job.data["action"]](job)


def _duplicate_text(job: Job) -> str:
    text = job.data["text"]
    return f"{text}{text}"


def _echo(job: Job) -> Any:
    return job.data


def _fail(job: Job) -> Any:
    raise RuntimeError(job.data.get("message", "test_only was asked to fail"))


def _sleep(job: Job) -> Any:
    seconds = float(job.data["seconds"])
    time.sleep(seconds)
    return {"slept": seconds}


def _flaky(job: Job) -> Any:
    if job.attempts <= int(job.data["failures"]):
        raise RuntimeError(f"flaky: attempt {job.attempts} fails on purpose")
    return {"attempts": job.attempts}


def _crash(job: Job) -> Any:
    crashes = job.data.get("crashes")
    if crashes is None or job.attempts <= int(crashes):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"survived": job.attempts}


_ACTIONS: dict[str, Callable[[Job], Any]] = {
    "duplicate_text": _duplicate_text,
    "echo": _echo,
    "fail": _fail,
    "sleep": _sleep,
    "flaky": _flaky,
    "crash": _crash,
}

_REQUIRED: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "duplicate_text": {"text": ((str,), "a string")},
    "sleep": {"seconds": ((int, float), "a number of seconds")},
    "flaky": {"failures": ((int,), "an integer")},
}
