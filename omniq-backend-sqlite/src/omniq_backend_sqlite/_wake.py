"""Wake a waiting process when another one commits (Linux inotify on the ``-wal`` file).

SQLite has no cross-process notification, and polling cannot be finer than the event
loop's timer: asyncio's epoll selector rounds a timeout up to whole milliseconds, so a
0.5 ms poll sleeps 1 ms or more, and each wake-up costs ~60 µs of CPU on the development
VM. After each commit that changed rows, a store sets the ``-wal`` file's times to now
(:func:`signal_commit`, one ``utime`` system call, ~2 µs); a waiter's inotify descriptor
(``IN_ATTRIB``) becomes readable and its event loop wakes as for a socket, then asks
``PRAGMA data_version`` whether another connection committed, and reads only if one did.
The signal comes after the commit is published, so the waiter never wakes too early.
Watching the WAL's writes (``IN_MODIFY``) instead needs nothing of the writer, but wakes
the waiter at a commit's first page write, ~50 µs before SQLite publishes it: most
wake-ups found nothing yet and had to wait again.

A stray signal (SQLite also changes the file's owner when a process running as root
opens it) costs one ``data_version`` check. A commit by anything else (another
version, the ``sqlite3`` shell) sends no signal; the
waits also check on a short timer, which catches it. Elsewhere than Linux, or where
inotify is refused (its per-user limit of instances, say), :func:`watch_wal` returns
None and the waits poll as before.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import sys

log = logging.getLogger("omniq.sqlite")

_IN_ATTRIB = 0x4


class WalWatch:
    """An inotify descriptor watching one ``-wal`` file for commit signals. Any number
    of coroutines of one event loop may wait at once (``get_result`` of many tasks
    gathered): while one waits, the loop watches the descriptor, and a signal drains
    it and wakes every waiter."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._waiters: set[asyncio.Future[bool]] = set()
        self._closed = False

    async def wait(self, timeout: float) -> bool:
        """Return True when a commit was signalled since the last wake-up, False after
        ``timeout`` seconds without one (or once closed)."""
        if self.closed():
            return False
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[bool] = loop.create_future()
        if not self._waiters:  # a signal that came meanwhile is still pending: wakes at once
            loop.add_reader(self._fd, self._readable)
        self._waiters.add(woken)
        timer = loop.call_later(timeout, _resolve, woken, False)
        try:
            return await woken
        finally:
            timer.cancel()
            self._waiters.discard(woken)
            if not self._waiters:
                loop.remove_reader(self._fd)
                if self.closed():  # closed while waited on: the descriptor is ours to close
                    os.close(self._fd)

    def closed(self) -> bool:
        return self._closed

    def _readable(self) -> None:
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass
        for waiter in self._waiters:
            _resolve(waiter, True)

    def close(self) -> None:
        """Close the descriptor, after the waits in progress (woken now) if there are
        any: its number must not be reused while the event loop still watches it."""
        if self._closed:
            return
        self._closed = True
        if not self._waiters:
            os.close(self._fd)
        for waiter in self._waiters:
            _resolve(waiter, False)


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


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
        if libc.inotify_add_watch(fd, os.fsencode(f"{db_path}-wal"), _IN_ATTRIB) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, "inotify_add_watch")
    except (OSError, AttributeError) as exc:  # no libc, no inotify, or the limit reached
        log.debug("no inotify watch on %s-wal (%s): waits poll", db_path, exc)
        return None
    return WalWatch(fd)


def signal_commit(wal_path: str | bytes) -> None:
    """Tell the waiters watching ``wal_path`` that a commit happened (a file missing or
    not ours to touch only means nobody is told: they poll)."""
    try:
        os.utime(wal_path)
    except OSError:
        pass
