"""LISTEN on one channel over a dedicated connection and wake waiters by payload.

Pooled connections cannot LISTEN (the pool resets them on release), so each listening
store keeps one connection of its own, opened on first use. When it drops, waiters are
woken (they re-check the database) and the next wait reconnects; meanwhile callers fall
back to their timeout, i.e. polling.

A payload is a key (a queue name, a task id) or, on the results channel, ``"<task id>
<base64>"``: a small result carried in the notification itself (see ``results.py``).
Both forms are understood, so an older writer's bare ids still wake the waiters.

With ``interest`` (the tasks channel) the listening session also holds, while a waiter
watches a key and for :data:`LINGER` seconds after the last one left, a shared advisory
lock on ``hashtextextended('<channel>:<key>', 0)``: an enqueue NOTIFYs a queue only when
it cannot take that lock exclusively for its own transaction (``queue.INSERT``), so
enqueues with no worker waiting skip the NOTIFY (its global lock at commit, its queue
write and its delivery). An enqueue that took the lock holds it to its commit, and the
listener takes it (waiting for such commits) before the waiter's check of the table:
whatever was enqueued without a NOTIFY is committed before that check. A lock not had
within ``lock_timeout`` (:data:`INTEREST_TIMEOUT`: an enqueue in a long transaction)
leaves the waiter polling every :data:`POLL_WITHOUT_INTEREST` seconds.
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
#: Seconds a key's interest is kept after its last waiter left: a worker that reserves
#: between waits keeps it, so it neither asks again per wait nor misses a NOTIFY in between.
LINGER = 1.0
#: ``lock_timeout`` of the listening session: the longest a waiter waits for enqueues in
#: flight to commit before it falls back to polling.
INTEREST_TIMEOUT = "100ms"
#: Seconds the listener waits for its lock or unlock statement's answer (its
#: ``lock_timeout`` and more): a session that stopped answering (a NAT that forgot the
#: idle connection: no reset) is dropped then, not after TCP gives up (~15 min), which
#: would hold every wait that asks for a lock, and :class:`Listener`'s lock, that long.
HOLD_TIMEOUT = 1.0
#: Seconds between a waiter's checks while its key's interest could not be taken.
POLL_WITHOUT_INTEREST = 0.05
_HOLD = "SELECT pg_advisory_lock_shared(hashtextextended($1, 0))"
_DROP = "SELECT pg_advisory_unlock_shared(hashtextextended($1, 0))"


class Notice(asyncio.Event):
    """A waiter's event, with what the last notification carried after its key."""

    carried: str | None = None


class Listener:
    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        channel: str,
        *,
        interest: bool = False,
    ) -> None:
        self.channel = channel
        self.interest = interest
        #: Keys whose advisory lock this session holds, with the release scheduled
        #: once no waiter watches them (None while one does).
        self._held: dict[str, asyncio.TimerHandle | None] = {}
        self._releasing: set[asyncio.Task[None]] = set()
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
        poll: asyncio.TimerHandle | None = None
        try:
            await self._ensure()
            if self.interest and not await self._hold(keys):
                poll = asyncio.get_running_loop().call_later(POLL_WITHOUT_INTEREST, event.set)
            yield event
        finally:
            if poll is not None:
                poll.cancel()
            for key in keys:
                waiting = self._waiters.get(key)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[key]
                        self._release_later(key)

    async def _hold(self, keys: list[str]) -> bool:
        """Hold the interest lock of each of ``keys`` (see the module's docstring);
        False when one could not be had and the waiter must poll."""
        for key in keys:
            if key in self._held:
                handle = self._held[key]
                if handle is not None:  # a release was due: keep the lock instead
                    handle.cancel()
                    self._held[key] = None
                continue
            async with self._lock:
                conn = self._conn
                if key in self._held:
                    continue
                if conn is None or conn.is_closed():
                    return True  # not listening: the waiter's timeout is its poll
                try:
                    await conn.execute(_HOLD, f"{self.channel}:{key}", timeout=HOLD_TIMEOUT)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    return False
                except TimeoutError:  # a session that stopped answering, or is slow
                    conn.terminate()  # (a lock granted late would be unknown here)
                    return False
                except asyncio.CancelledError:
                    # the lock may be granted before the server hears of the cancel:
                    # unknown here, it would be held for good; the session goes with
                    # it (its waiters are woken and re-check, the next wait reconnects)
                    conn.terminate()
                    raise
                if conn is not self._conn:  # dropped meanwhile: the lock went with it
                    return False
                self._held[key] = None
                # from now on an enqueue of this key NOTIFYs; what came before, a
                # check made after this sees (heard_since: "may have been heard")
                self._mark(key)
        return True

    def _release_later(self, key: str) -> None:
        if key in self._held and self._held[key] is None:
            self._held[key] = asyncio.get_running_loop().call_later(
                LINGER, self._start_release, key
            )

    def _start_release(self, key: str) -> None:
        task = asyncio.get_running_loop().create_task(self._release(key))
        self._releasing.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._releasing.discard)

    async def _release(self, key: str) -> None:
        async with self._lock:
            handle = self._held.get(key)
            if handle is None:  # watched again, or dropped
                return
            if self._waiters.get(key):  # watched again (by a wait whose hold may never
                self._held[key] = None  # reach this key): released after it leaves
                return
            del self._held[key]
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            try:
                await conn.execute(_DROP, f"{self.channel}:{key}", timeout=HOLD_TIMEOUT)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                conn.terminate()  # a lock it may still hold would make enqueues NOTIFY

    def _mark(self, key: str) -> None:
        self.seen += 1
        heard = self._heard
        if len(heard) >= HEARD_MAX:
            heard.clear()
            self._heard_from = self.seen
        heard[key] = self.seen

    async def _ensure(self) -> None:
        if self.connected or self._closed:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            if self.connected or loop.time() < self._retry_at:
                return
            try:
                conn = await self._connect()
                if self.interest:
                    await conn.execute(f"SET lock_timeout = '{INTEREST_TIMEOUT}'")
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
            for handle in self._held.values():  # the session's locks went with it
                if handle is not None:
                    handle.cancel()
            self._held.clear()
        for waiting in self._waiters.values():
            for event in waiting:
                event.set()

    def heard_since(self, keys: Iterable[str], seen: int) -> bool:
        """Whether a notification for one of ``keys`` (or a drop) may have arrived since
        ``seen`` was read: exact for the last :data:`HEARD_MAX` keys, else True. With
        ``interest``, also True for a key whose lock is not held (an enqueue need not
        have notified it)."""
        if self.interest and any(k not in self._held for k in keys):
            return True
        return self._heard_from > seen or any(self._heard.get(k, -1) > seen for k in keys)

    async def close(self) -> None:
        self._closed = True
        for handle in self._held.values():
            if handle is not None:
                handle.cancel()
        self._held.clear()
        for task in list(self._releasing):
            task.cancel()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()
