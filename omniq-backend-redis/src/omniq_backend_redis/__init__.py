"""OmniQ backend on Redis: task queue, result storage and event storage."""

from __future__ import annotations

from .errors import ForeignKeyError, RedisUnavailableError
from .events import RedisEventStorage
from .queue import RedisTaskQueue
from .results import RedisResultStorage

__all__ = [
    "ForeignKeyError",
    "RedisEventStorage",
    "RedisResultStorage",
    "RedisTaskQueue",
    "RedisUnavailableError",
]
