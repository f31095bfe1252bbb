"""OmniQ's PostgreSQL backend (asyncpg): task queue, result storage and event storage.

Stays light on import (the plugin module is imported during discovery): the store
classes, and asyncpg with them, load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import PostgresEventStorage
    from .migrations import migrate
    from .queue import PostgresTaskQueue
    from .results import PostgresResultStorage

__all__ = ["PostgresEventStorage", "PostgresResultStorage", "PostgresTaskQueue", "migrate"]

_LAZY = {
    "PostgresEventStorage": "events",
    "PostgresResultStorage": "results",
    "PostgresTaskQueue": "queue",
    "migrate": "migrations",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
