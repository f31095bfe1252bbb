"""Wake a waiting process when another one writes to the database's WAL (Linux inotify).

SQLite has no cross-process notification, and polling cannot be finer than the event
loop's timer: asyncio's epoll selector rounds a timeout up to whole milliseconds, so a
0.5 ms poll sleeps 1 ms or more, and each wake-up costs ~60 µs of CPU on the development
VM. Every commit in WAL mode writes its pages to the ``-wal`` file, and the kernel can
report that write on a file descriptor (inotify ``IN_MODIFY``) that the event loop
watches like a socket: the waiter wakes when a commit is written, at no cost to the
writer and whoever it is (another process, any version, the ``sqlite3`` shell).

A wake-up is only a hint: the waiter then asks ``PRAGMA data_version`` whether a commit
completed and reads only if one did. The last WAL write of a commit comes a few µs before
SQLite publishes it in the WAL index, so a waiter may see the write first; every waiter
therefore re-checks for up to ``SETTLE`` seconds after a write (yielding the CPU in
between), and also on a short timer (what it did without a watch). Its own connection's
commits wake it too; those it recognises (``Direct.wrote``) and does not wait out. Elsewhere than
Linux, or where inotify is refused (its per-user limit of instances, say),
:func:`watch_wal` returns None and the waits poll as before.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import sys

log = logging.getLogger("omniq.sqlite")

_IN_MODIFY = 0x2
#: Seconds a woken waiter keeps re-checking for the commit whose write woke it.
SETTLE = 0.00005


class WalWatch:
    """An inotify descriptor watching one ``-wal`` file for writes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def wait(self, timeout: float) -> bool:
        """Return True when the WAL was written since the last wait, False after
        ``timeout`` seconds without a write."""
        loop = asyncio.get_running_loop()
        woken = loop.create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        loop.add_reader(self._fd, wake)
        timer = loop.call_later(timeout, wake)
        try:
            await woken
        finally:
            timer.cancel()
            loop.remove_reader(self._fd)
        return self._drain()

    def _drain(self) -> bool:
        """Read the pending events; True if there were any."""
        drained = False
        try:
            while os.read(self._fd, 4096):
                drained = True
        except BlockingIOError:
            pass
        return drained

    def close(self) -> None:
        os.close(self._fd)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, as already loaded into this process (no search, no subprocess)."""
    return ctypes.CDLL(None, use_errno=True)


def watch_wal(db_path: str) -> WalWatch | None:
    """A watch on ``db_path``'s WAL file, or None where there can be none (two system
    calls: cheap enough for the loop's thread)."""
    if sys.platform != "linux":
        return None
    try:
        libc = _libc()
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(fd, os.fsencode(f"{db_path}-wal"), _IN_MODIFY) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, "inotify_add_watch")
    except (OSError, AttributeError) as exc:  # no libc, no inotify, or the limit reached
        log.debug("no inotify watch on %s-wal (%s): waits poll", db_path, exc)
        return None
    return WalWatch(fd)
