"""OmniQ: an async-first task queue with pluggable task, result and event storage.

``import omniq`` stays light (plugin modules import it during discovery): the app,
worker and CLI modules load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .context import TaskContext, TaskLogFilter, current_task
from .errors import (
    ConfigError,
    DependencyFailedError,
    OmniQError,
    PluginError,
    ResultTimeoutError,
    Retry,
    SerializationError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from .hookspecs import hookimpl
from .middleware import Middleware
from .models import Schedule, Task, TaskEvent, TaskResult, TaskState
from .registry import BackendSpec, PoolSpec, register_plugin

if TYPE_CHECKING:
    from .app import AsyncOmniQ, OmniQ, TaskFunction, TaskRef
    from .config import OmniQConfig, load_config
    from .groups import GroupRef
    from .requeueing import RequeueSelection

__all__ = [
    "AsyncOmniQ",
    "BackendSpec",
    "ConfigError",
    "DependencyFailedError",
    "GroupRef",
    "Middleware",
    "OmniQ",
    "OmniQConfig",
    "OmniQError",
    "PluginError",
    "PoolSpec",
    "RequeueSelection",
    "ResultTimeoutError",
    "Retry",
    "Schedule",
    "SerializationError",
    "Task",
    "TaskContext",
    "TaskEvent",
    "TaskFailedError",
    "TaskFunction",
    "TaskLogFilter",
    "TaskNotFoundError",
    "TaskRef",
    "TaskResult",
    "TaskState",
    "TaskTimeoutError",
    "current_task",
    "hookimpl",
    "load_config",
    "register_plugin",
]

_LAZY = {
    "AsyncOmniQ": "app",
    "OmniQ": "app",
    "TaskFunction": "app",
    "TaskRef": "app",
    "GroupRef": "groups",
    "OmniQConfig": "config",
    "load_config": "config",
    "RequeueSelection": "requeueing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "WorkerSpec":
        from ._deprecated import warn_renamed
        from .registry import _worker_spec

        warn_renamed("omniq.WorkerSpec", "omniq.PoolSpec")
        return _worker_spec
    if name == "__version__":
        from importlib.metadata import version

        return version("omniq-core")
    raise AttributeError(f"module 'omniq' has no attribute {name!r}")
