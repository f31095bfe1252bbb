"""OmniQ backend on Redis: task queue, result storage and event storage.

Stays light on import (the plugin module is imported during discovery): the store
classes, and redis-py with them, load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY = {
    "ForeignKeyError": "errors",
    "RedisEventStorage": "events",
    "RedisResultStorage": "results",
    "RedisTaskQueue": "queue",
    "RedisUnavailableError": "errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
