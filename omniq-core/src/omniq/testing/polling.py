"""Waiting for time-based behaviour without sleep-and-hope.

Leases, ETAs and TTLs are judged by the backend's clock, which may run on another
machine; the suite therefore never sleeps a fixed time and then asserts. It polls the
store until the expected answer arrives or a generous deadline passes, so a fast backend
finishes in milliseconds and a slow CI runner still passes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import pytest

from ..interfaces import BaseStore

__all__ = ["DEADLINE", "SHORT", "eventually", "until", "wait_past"]

T = TypeVar("T")

#: How long the suite waits for something that should happen "soon" before failing.
DEADLINE = 10.0
#: A lease, eta or TTL short enough to lapse quickly and long enough to be observed.
SHORT = 0.2


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    what: str,
    *,
    deadline: float = DEADLINE,
    interval: float = 0.02,
) -> T:
    """Call ``probe`` until it returns something truthy; fail naming ``what`` after
    ``deadline`` s."""
    with anyio.move_on_after(deadline):
        while True:
            value = await probe()
            if value:
                return value
            await anyio.sleep(interval)
    pytest.fail(f"{what}: still not true after {deadline} s of polling")


def until(
    probe: Callable[[], T | None],
    what: str,
    *,
    deadline: float = DEADLINE,
    interval: float = 0.02,
    show: Callable[[], object] | None = None,
) -> T:
    """:func:`eventually` for a test that blocks (one driving worker processes, reading
    their logs and files): call ``probe`` until it returns something truthy and return
    that; fail naming ``what`` after ``deadline`` s, with ``show()`` (the state it was
    left in, read at that moment) when given."""
    end = time.monotonic() + deadline
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            shown = f"\n{show()}" if show is not None else ""
            pytest.fail(f"{what}: still not true after {deadline} s of polling{shown}")
        time.sleep(interval)


async def wait_past(store: BaseStore, moment: float, *, deadline: float = DEADLINE) -> None:
    """Return once the store's own clock (:meth:`BaseStore.now`) has passed ``moment``."""

    async def passed() -> bool:
        return await store.now() > moment

    await eventually(passed, f"the store clock never passed {moment}", deadline=deadline)
