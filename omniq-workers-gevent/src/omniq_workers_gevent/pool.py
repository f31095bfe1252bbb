"""The gevent execution pool: blocking task functions as greenlets, thousands at once.

See :mod:`omniq_workers_gevent.hub` for how calls reach the hub thread and
:mod:`omniq_workers_gevent.patching` for what is monkey-patched and why.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omniq.interfaces import BasePool
from omniq.worker.pools import with_timeout

from .hub import GreenletHub
from .patching import patch_process

__all__ = ["GeventPool"]

log = logging.getLogger("omniq.worker.gevent")


class GeventPool(BasePool):
    """Plain functions run as greenlets in a gevent hub thread, ``concurrency`` at once;
    coroutine functions run on the worker's event loop, as in the thread pool.

    Blocking calls yield to the hub only where gevent patched them (sockets, ssl, DNS,
    ``time.sleep``, ``select``); CPU-bound code, C extensions doing their own I/O and
    ``subprocess`` block every greenlet of the pool: use the thread or process pool
    for those.

    :param backstop: seconds past a task's timeout after which a call that never
        yielded is abandoned (the greenlet is killed when it next yields).
    """

    name = "gevent"

    def __init__(self, concurrency: int, *, backstop: float = 1.0, **options: Any) -> None:
        super().__init__(concurrency, **options)
        self.backstop = backstop
        self._hub: GreenletHub | None = None

    @classmethod
    def prepare_process(cls) -> None:
        """Monkey-patch this process. ``omniq worker --pool gevent`` calls it before it
        imports the application. Workers started from code are patched by :meth:`start`
        instead, later: modules imported before keep any names they bound to the
        unpatched functions (a warning says so)."""
        patch_process()

    async def start(self) -> None:
        if patch_process():
            log.warning(
                "the gevent pool monkey-patched this process when the worker started, after the "
                "application was imported: names bound before (from time import sleep, from "
                "socket import socket) still block every greenlet. Call "
                "omniq_workers_gevent.patch_process() first thing in the main module"
            )
        self._hub = GreenletHub(self.concurrency)
        await self._hub.start()

    async def stop(self, wait: bool = True) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            await hub.stop(wait)

    def bodies_running(self) -> int:
        return self._hub.running() if self._hub is not None else 0

    async def run(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        timeout: float | None,
    ) -> Any:
        if inspect.iscoroutinefunction(func):
            return await with_timeout(func(*args, **kwargs), timeout)
        if self._hub is None:
            raise RuntimeError("the gevent pool was not started")
        # The greenlet runs in the context of this call: current_task() and log records.
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        value = await self._hub.run(call, timeout, self.backstop)
        if inspect.isawaitable(value):  # a plain callable that returned a coroutine
            value = await with_timeout(value, timeout)
        return value
