"""OmniQ on SQLite: the embedded default (``sqlite:///omniq.db``).

Task queue, result storage and event storage in one local file (or three), safe for
several worker processes on the same machine (WAL, ``BEGIN IMMEDIATE`` transactions).
Tables, URL forms, options and guarantees: docs/backends/sqlite.md in the repository.

The stores load on first use of their names, so plugin discovery (which imports
``omniq_backend_sqlite.plugin``, and so this package) never imports aiosqlite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._schema import SCHEMA_VERSION, SchemaVersionError
    from .events import SqliteEventStorage
    from .queue import SqliteTaskQueue
    from .results import SqliteResultStorage

__all__ = [
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "SqliteEventStorage",
    "SqliteResultStorage",
    "SqliteTaskQueue",
]

_LAZY = {
    "SCHEMA_VERSION": "_schema",
    "SchemaVersionError": "_schema",
    "SqliteEventStorage": "events",
    "SqliteResultStorage": "results",
    "SqliteTaskQueue": "queue",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'omniq_backend_sqlite' has no attribute {name!r}")
