"""The overview's counts are shared: viewers polling at once start one count, not one each,
and a stale answer is served at once while one refresh runs."""

from __future__ import annotations

import asyncio

import pytest

from omniq.testing import eventually
from omniq_dashboard import shared
from omniq_dashboard.shared import Shared


class Counter:
    """A slow count that says how many times it ran and lets the test finish each run."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        return self.calls


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_viewers_share_one_count_and_stale_answers_do_not_wait(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared, "FRESH", 0.0)  # every answer is stale at once
    count = Counter()
    answers: Shared[int] = Shared(count)
    first = [asyncio.ensure_future(answers.get()) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert count.calls == 1, "five viewers at once started more than one count"
    count.release.set()
    assert await asyncio.gather(*first) == [1] * 5
    count.release.clear()
    # Once the answer ages past its window (FRESH is 0; the window is ten times what the
    # count took), a request gets it at once and starts one refresh behind it.

    async def refreshing() -> bool:
        stale = await asyncio.wait_for(answers.get(), 1)
        assert stale == 1, "a stale answer is served without waiting for the refresh"
        return count.calls > 1

    await eventually(refreshing, "a refresh started after the answer aged", deadline=5)
    assert await asyncio.wait_for(answers.get(), 1) == 1
    assert count.calls == 2, "a refresh already running is not started again"
    count.release.set()
    assert await asyncio.wait_for(answers.fresh(), 1) == 3, "fresh() counts after the call"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_answer_from_long_ago_is_not_served(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the dashboard sat idle, the first overview showed the counts of its last
    view, minutes old, while the refresh ran behind it; it waits for the refresh then."""
    monkeypatch.setattr(shared, "FRESH", 0.0)
    monkeypatch.setattr(shared, "MAX_STALE", 0.05, raising=False)
    count = Counter()
    count.release.set()
    answers: Shared[int] = Shared(count)
    assert await answers.get() == 1
    await asyncio.sleep(0.1)  # idle past MAX_STALE
    assert await asyncio.wait_for(answers.get(), 1) == 2, "a minutes-old answer was served"
