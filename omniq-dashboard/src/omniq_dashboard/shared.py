"""Answers shared by every page and viewer, refreshed in the background.

The overview's numbers are counts over everything: ``stats()`` reads every task (on a
million rows a full scan, half a second or more in PostgreSQL) and the last hour's event
counts read every event of that hour; and every open overview polls them. So one count
runs at a time, its answer serves every request for :data:`FRESH` seconds (or ten times
what the count took, if longer), and a request that finds it older gets it at once while
one refresh runs behind it (stale-while-revalidate). Only the very first request waits,
and one that finds the answer older than :data:`MAX_STALE` (the dashboard sat idle).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Seconds an answer is served without starting a refresh.
FRESH = 2.0
#: Seconds past which an answer is not served while its refresh runs (five times its
#: window, if longer): the first view after the dashboard sat idle waits for the count
#: rather than show the numbers of the last view, minutes old.
MAX_STALE = 30.0


class Shared(Generic[T]):
    """One answer of ``count()``, shared and refreshed as said above."""

    def __init__(self, count: Callable[[], Awaitable[T]]) -> None:
        self._count = count
        self._value: T | None = None
        self._taken_at = 0.0
        self._fresh_for = FRESH
        self._refresh: asyncio.Task[T] | None = None

    async def _run(self) -> T:
        started = time.monotonic()
        try:
            value = await self._count()
        finally:
            self._refresh = None
        took = time.monotonic() - started
        self._value, self._taken_at = value, time.monotonic()
        self._fresh_for = max(FRESH, 10 * took)
        return value

    def _start(self) -> asyncio.Task[T]:
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._run())
        return self._refresh

    async def get(self) -> T:
        """The latest answer; waits only when there is none yet."""
        if self._value is None:
            return await asyncio.shield(self._start())
        age = time.monotonic() - self._taken_at
        if age > self._fresh_for:
            refresh = self._start()
            if age > max(MAX_STALE, 5 * self._fresh_for):
                return await asyncio.shield(refresh)
        return self._value

    async def fresh(self) -> T:
        """An answer computed from now on (after an action, so the page shows its effect)."""
        self._taken_at = 0.0
        if self._refresh is not None:
            await asyncio.shield(self._refresh)
        return await asyncio.shield(self._start())
