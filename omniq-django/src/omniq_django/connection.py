"""The OmniQ app behind a Django task backend, and the blocking client Django's sync
API calls it through.

Django makes one backend object per thread (its connection handler is thread-local), so
the client is shared per process and configuration instead: one event-loop thread
(:class:`omniq.sync.Portal`, OmniQ's own blocking mechanism) and one set of store
connections however many request threads enqueue. A forked child builds its own.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from omniq import AsyncOmniQ
from omniq.sync import Portal

__all__ = ["RUNNER", "Client", "build_app", "client_for"]

T = TypeVar("T")

#: The OmniQ task name every Django task travels under: its payload names the Django task
#: (``module.function``), which the worker imports, as Django's own backends do.
RUNNER = "omniq_django.run"


def build_app(options: Mapping[str, Any]) -> AsyncOmniQ:
    """An app from a backend's ``OPTIONS`` (the keyword arguments of :class:`AsyncOmniQ`:
    ``task_queue``, ``result_storage``, ``event_storage``, ``config`` and any config key),
    with the runner of Django tasks registered."""
    from .runner import execute

    app = AsyncOmniQ(**dict(options))

    async def run(path: str, args: list[Any], kwargs: dict[str, Any], meta: dict[str, Any]) -> Any:
        return await execute(app, path, args, kwargs, meta)

    app.task(name=RUNNER)(run)
    return app


class Client:
    """An app living on its own event-loop thread, for blocking callers."""

    def __init__(self, app: AsyncOmniQ) -> None:
        self.app = app
        self._portal = Portal()

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(self.app, *args)`` on the app's loop and wait for it."""
        return self._portal.call(func, self.app, *args)

    def close(self) -> None:
        if self._portal.started:
            self._portal.call(self.app.close)
        self._portal.stop()


_clients: dict[tuple[int, str], Client] = {}
_lock = threading.Lock()


def client_for(options: Mapping[str, Any]) -> Client:
    """The process's client for a backend's ``OPTIONS`` (backends with the same share it)."""
    key = (os.getpid(), json.dumps(options, sort_keys=True, default=repr))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = Client(build_app(options))
        return client
