"""The Engine contract's optional methods: their defaults refuse clearly instead of pretending."""

from __future__ import annotations

import pytest

from dtq_core import Engine, JobStatus, NotSupported
from dtq_core.engines.memory import MemoryEngine


def test_browse_and_delete_defaults_say_the_engine_does_not_support_them() -> None:
    engine = MemoryEngine()
    with pytest.raises(NotSupported, match="MemoryEngine engine cannot list queued jobs"):
        Engine.browse(engine, JobStatus.QUEUED, "test_only")
    with pytest.raises(NotSupported, match="MemoryEngine engine cannot delete one job"):
        Engine.delete(engine, "job-1")
