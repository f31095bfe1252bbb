"""Process-wide monkey-patching for the gevent pool, and why it patches what it does.

Patched: ``socket``, ``ssl``, ``select``, ``selectors``, ``time`` and DNS, so that a task
function's blocking network calls and sleeps yield to the gevent hub.

Not patched, on purpose (each was tried; see docs/workers/gevent.md):

- ``threading`` and ``queue``: the hub runs in a real OS thread next to the worker's
  asyncio loop, and the async backends rely on real threads (aiosqlite runs SQLite in a
  thread fed by ``queue.SimpleQueue``; patching ``queue`` makes it die with
  ``LoopExit``), as do ``asyncio.to_thread`` and the sync facade's portal thread.
- ``subprocess``, ``os`` and ``signal``: gevent's child watchers only work on the main
  thread's default loop, so a patched ``subprocess`` fails in the hub thread.

asyncio itself keeps working after the patch: its non-blocking sockets never wait, so
gevent's socket class behaves like the plain one there. Only the loop's selector would
change (``selectors.DefaultSelector`` becomes gevent's, several times slower per
iteration), so loops created afterwards get the original epoll/kqueue selector back
through :class:`OriginalSelectorPolicy`.
"""

from __future__ import annotations

import asyncio
import logging
import warnings

from omniq.errors import ConfigError

__all__ = ["OriginalSelectorPolicy", "is_patched", "patch_process"]

log = logging.getLogger("omniq.worker.gevent")

#: What :func:`patch_process` leaves alone (``gevent.monkey.patch_all`` keyword arguments).
UNPATCHED = {"thread": False, "queue": False, "subprocess": False, "os": False, "signal": False}


def is_patched() -> bool:
    from gevent import monkey

    return bool(monkey.is_module_patched("socket") and monkey.is_module_patched("time"))


class OriginalSelectorPolicy(asyncio.DefaultEventLoopPolicy):
    """New asyncio loops use the selector the platform had before gevent patched it."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        from gevent import monkey

        selector_cls = monkey.get_original("selectors", "DefaultSelector")
        return asyncio.SelectorEventLoop(selector_cls())


def patch_process() -> bool:
    """Patch this process for the gevent pool; True if this call did it (idempotent).

    Call it before the application's modules are imported, so that names they bind at
    import (``from time import sleep``) are the cooperative ones. ``omniq worker --pool
    gevent`` does that through :meth:`GeventPool.prepare_process`.
    """
    from gevent import monkey
    from gevent.monkey import MonkeyPatchWarning

    if monkey.is_module_patched("threading"):
        raise ConfigError(
            "the gevent pool needs real threads, but this process already ran "
            "gevent.monkey.patch_all() with threads patched; remove that call (the pool "
            "patches what it needs) or call patch_all(thread=False, queue=False)"
        )
    if is_patched():
        return False
    with warnings.catch_warnings():
        # asyncio (imported by omniq before any command line is parsed) always imported
        # ssl first; gevent's warning about it is for Python 3.6 and cannot be acted on.
        warnings.filterwarnings("ignore", "Monkey-patching ssl after ssl", MonkeyPatchWarning)
        monkey.patch_all(**UNPATCHED)
    if type(asyncio.get_event_loop_policy()) is asyncio.DefaultEventLoopPolicy:
        asyncio.set_event_loop_policy(OriginalSelectorPolicy())
    log.debug("gevent monkey-patching applied: socket, ssl, select, selectors, time, dns")
    return True
