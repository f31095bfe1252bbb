"""An example OmniQ backend: one process's tasks, results and events, kept in dicts."""

from __future__ import annotations

from .events import ExampleEventStorage
from .queue import ExampleTaskQueue
from .results import ExampleResultStorage

__all__ = ["ExampleEventStorage", "ExampleResultStorage", "ExampleTaskQueue"]
