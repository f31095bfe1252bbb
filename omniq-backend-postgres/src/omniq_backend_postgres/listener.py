"""LISTEN on one channel over a dedicated connection and wake waiters by payload.

Pooled connections cannot LISTEN (the pool resets them on release), so each listening
store keeps one connection of its own, opened on first use. When it drops, waiters are
woken (they re-check the database) and the next wait reconnects; meanwhile callers fall
back to their timeout, i.e. polling.

A payload is a key (a queue name, a task id) or, on the results channel, ``"<task id>
<base64>"``: a small result carried in the notification itself (see ``results.py``).
Both forms are understood, so an older writer's bare ids still wake the waiters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import asyncpg

__all__ = ["Listener", "Notice"]

#: Seconds between reconnection attempts while the server does not answer.
RECONNECT_DELAY = 1.0
#: Keys whose last notification :meth:`Listener.heard_since` remembers exactly; past
#: that many the record starts over, and a key not in it reads as just heard.
HEARD_MAX = 1024


class Notice(asyncio.Event):
    """A waiter's event, with what the last notification carried after its key."""

    carried: str | None = None


class Listener:
    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], channel: str) -> None:
        self.channel = channel
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[str, set[Notice]] = {}
        #: Notifications received and connections lost: unchanged between two reads,
        #: nothing a waiter would have been woken by arrived in between.
        self.seen = 0
        #: ``seen`` at each key's last notification, and ``seen`` when that record last
        #: started over (a drop, or too many keys): see :meth:`heard_since`.
        self._heard: dict[str, int] = {}
        self._heard_from = 0
        self._lock = asyncio.Lock()
        self._retry_at = 0.0
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @asynccontextmanager
    async def watch(self, keys: Iterable[str]) -> AsyncIterator[Notice]:
        """An event set when a notification with one of ``keys`` arrives (or the
        connection drops). LISTEN is in place when the block starts."""
        event = Notice()
        keys = list(keys)
        for key in keys:
            self._waiters.setdefault(key, set()).add(event)
        try:
            await self._ensure()
            yield event
        finally:
            for key in keys:
                waiting = self._waiters.get(key)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[key]

    async def _ensure(self) -> None:
        if self.connected or self._closed:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            if self.connected or loop.time() < self._retry_at:
                return
            try:
                conn = await self._connect()
                await conn.add_listener(self.channel, self._notified)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self._retry_at = loop.time() + RECONNECT_DELAY
                return
            conn.add_termination_listener(self._lost)
            self._conn = conn
            # What came while no connection listened is unknown: a mark taken before
            # (see heard_since) must read as "may have been heard".
            self._forget()

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.seen += 1
        carried = None
        key = payload
        waiting = self._waiters.get(payload)  # the bare key (any key, even one with a space)
        if waiting is None and " " in payload:
            key, carried = payload.split(" ", 1)
            waiting = self._waiters.get(key)
        heard = self._heard
        if len(heard) >= HEARD_MAX:
            heard.clear()
            self._heard_from = self.seen
        heard[key] = self.seen
        for event in waiting or ():
            event.carried = carried
            event.set()

    def _forget(self) -> None:
        self.seen += 1
        self._heard.clear()
        self._heard_from = self.seen

    def _lost(self, conn: object) -> None:
        self._forget()
        if conn is self._conn:
            self._conn = None
        for waiting in self._waiters.values():
            for event in waiting:
                event.set()

    def heard_since(self, keys: Iterable[str], seen: int) -> bool:
        """Whether a notification for one of ``keys`` (or a drop) may have arrived since
        ``seen`` was read: exact for the last :data:`HEARD_MAX` keys, else True."""
        return self._heard_from > seen or any(self._heard.get(k, -1) > seen for k in keys)

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()
