"""A worker that recognises its own change after the answer was lost (``lifecycle.applied``,
``Worker._made_before``) must write what goes with it once: not twice, and not drop it
because a read failed along the way. In one process on SQLite, the results and events in
files of their own (so they are written after the state change, not with it); the
stores' methods are wrapped to lose an answer or fail a write at the chosen moment."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ
from omniq.models import EventType, TaskState

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def aapp(tmp_path: Path) -> Any:
    async with AsyncOmniQ(
        task_queue=f"sqlite:///{tmp_path}/tasks.db",
        result_storage=f"sqlite:///{tmp_path}/results.db",
        event_storage=f"sqlite:///{tmp_path}/events.db",
    ) as app:
        yield app


async def _types(app: AsyncOmniQ, task_id: str) -> Counter[EventType]:
    return Counter(e.type for e in await app.events(task_id=task_id))


async def test_a_success_whose_result_write_failed_does_not_write_its_events_twice(
    aapp: AsyncOmniQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completion is accepted (its answer arrives), its event is appended, and its
    result write fails every try of ``write_accepted``: the writer tries the batch again,
    the completion is refused (its token spent) and recognised as this attempt's own. The
    result must then be written, and the ``succeeded`` event, already stored, not again."""
    storage = aapp.result_storage
    real_set_many = storage.set_many
    failures = {"left": 3}  # write_accepted's tries

    async def set_many(results: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("result store unreachable")
        await real_set_many(results)

    monkeypatch.setattr(storage, "set_many", set_many)

    @aapp.task
    def answer() -> int:
        return 42

    ref = await answer.delay()
    await aapp.run_worker(burst=True)
    assert failures["left"] == 0, "the result write never failed"
    assert await aapp.get_result(ref, timeout=5) == 42
    counts = await _types(aapp, ref.id)
    assert counts[EventType.SUCCEEDED] == 1, f"one succeeded event: {counts}"


async def test_a_dead_letter_whose_answer_was_lost_keeps_its_result_when_a_read_fails(
    aapp: AsyncOmniQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead letter is applied and its answer lost; the repeat is refused; the read that
    would recognise it fails once (the server still flaky). The writer tries again: the
    change must still be recognised and its ``dead`` result written, not dropped because
    the refusal was remembered without the recognition."""
    queue = aapp.task_queue
    real_dead_letter, real_get = queue.dead_letter, queue.get
    state = {"lost": False, "get_fails": 1}

    async def dead_letter(task_id: str, token: str | None, error: Any = None) -> bool:
        done = await real_dead_letter(task_id, token, error)
        if done and not state["lost"]:
            state["lost"] = True
            raise ConnectionError("connection reset before the answer")
        return done

    async def get(task_id: str) -> Any:
        if state["lost"] and state["get_fails"]:
            state["get_fails"] -= 1
            raise ConnectionError("connection reset")
        return await real_get(task_id)

    monkeypatch.setattr(queue, "dead_letter", dead_letter)
    monkeypatch.setattr(queue, "get", get)

    @aapp.task(retries=0)
    def broken() -> None:
        raise ValueError("bad")

    ref = await broken.delay()
    await aapp.run_worker(burst=True)
    assert state["lost"] and state["get_fails"] == 0, "the faults never happened"
    assert (await real_get(ref.id)).state is TaskState.DEAD  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="bad"):
        await aapp.get_result(ref, timeout=5)
    counts = await _types(aapp, ref.id)
    assert counts[EventType.DEAD] == 1 and counts[EventType.FAILED] == 1, counts


async def test_a_failed_recognition_does_not_write_the_rest_of_the_batch_twice(
    aapp: AsyncOmniQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion is applied and its answer lost; the repeat, in the next try of the
    batch, is refused and its ``finish_many`` writes the batch's other events (another
    task's ``started``); then the read that would recognise the change fails once. Trying
    the whole batch again wrote those events a second time: only the refused completion
    may be tried again. (And the recognised task keeps its own ``started`` event, which
    the refused ``finish_many`` dropped with the attempt's.)"""
    queue = aapp.task_queue
    real_finish, real_get = queue._finish, queue.get
    state = {"lost": False, "get_fails": 1}

    async def _finish(*args: Any) -> list[bool]:
        accepted = await real_finish(*args)
        if any(accepted) and not state["lost"]:
            state["lost"] = True
            raise ConnectionError("connection reset before the answer")
        return accepted

    async def get(task_id: str) -> Any:
        if state["lost"] and state["get_fails"]:
            state["get_fails"] -= 1
            raise ConnectionError("connection reset")
        return await real_get(task_id)

    monkeypatch.setattr(queue, "_finish", _finish)
    monkeypatch.setattr(queue, "get", get)

    @aapp.task
    async def answer(seconds: float) -> float:
        import asyncio

        await asyncio.sleep(seconds)
        return seconds

    quick, slow = await answer.delay(0.0), await answer.delay(1.0)
    await aapp.run_worker(burst=True, concurrency=2)
    assert state["lost"] and state["get_fails"] == 0, "the faults never happened"
    assert await aapp.get_result(quick, timeout=5) == 0.0
    assert await aapp.get_result(slow, timeout=5) == 1.0
    seen = {name: await _types(aapp, ref.id) for name, ref in (("quick", quick), ("slow", slow))}
    for counts in seen.values():
        assert counts[EventType.STARTED] == 1 and counts[EventType.SUCCEEDED] == 1, seen
