"""The Redis engine (the default): ``redis://``, ``rediss://`` and ``unix://`` URLs."""

from dtq_core.engines.redis.engine import RedisEngine
from dtq_core.engines.redis.keys import Keys

__all__ = ["Keys", "RedisEngine"]
