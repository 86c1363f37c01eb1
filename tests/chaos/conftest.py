"""The chaos suite: real processes broken on purpose. See docs/guarantees.md.

``DTQ_CHAOS=long`` (``nox -s chaos``) runs the long form: more jobs, more
kills, the 200,000-job soak. Without it the same tests run in a bounded form
that fits in CI. Figures the tests measure are printed and, with
``DTQ_CHAOS_REPORT=path``, appended to that file as JSON lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

#: True for ``nox -s chaos``: the long form.
LONG = os.environ.get("DTQ_CHAOS") == "long"


@pytest.fixture
def scale() -> Callable[[int, int], int]:
    """``scale(bounded, long)``: the size a test uses in this run."""
    return lambda bounded, long: long if LONG else bounded


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``report(**figures)``: print what a test measured and keep it for docs/guarantees.md."""

    def write(**figures: Any) -> None:
        record = {"test": request.node.name, "form": "long" if LONG else "bounded", **figures}
        print(f"\nCHAOS {json.dumps(record)}")
        path = os.environ.get("DTQ_CHAOS_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")

    return write
