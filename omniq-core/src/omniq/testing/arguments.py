"""The argument checks of the public store methods: the base classes make them once,
before any backend hook runs, so every backend refuses the same call with the same
:class:`~omniq.errors.ConfigError` and message, and changes nothing. A backend that
overrides a public method instead of its ``_`` hook (and so skips or rewords a check)
fails here."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any

import pytest

from ..errors import ConfigError
from ..interfaces import BaseEventStorage, BaseResultStorage, BaseTaskQueue
from ..models import TaskState
from .actions import LONG, reserved
from .factories import make_result, make_task
from .queue_finishing import KeptEvents, KeptResults

__all__ = ["EventArgumentTests", "QueueArgumentTests", "ResultArgumentTests", "refused"]

#: States that do not end a task through complete(): retry, dead_letter, cancel, cleanup
#: and a lapse reach them.
NOT_COMPLETABLE = [s for s in TaskState if s not in (TaskState.SUCCEEDED, TaskState.CANCELLED)]
#: Leases no reserve or heartbeat may take.
BAD_LEASES: list[Any] = [0, -1.5, math.nan, math.inf, "30", True]


async def refused(call: Awaitable[Any], message: str) -> None:
    """``call`` raises exactly :class:`ConfigError` with exactly ``message``."""
    with pytest.raises(ConfigError) as info:
        await call
    assert type(info.value) is ConfigError and str(info.value) == message, (
        f"expected ConfigError({message!r}), got {type(info.value).__name__}({str(info.value)!r})"
    )


def bad_state(task_id: str, state: TaskState) -> str:
    """The one message (:func:`omniq.lifecycle.check_completable`) every backend gives."""
    return (
        f"complete() for task {task_id!r} got state {state.value!r}: expected 'succeeded' "
        f"or 'cancelled' (use retry() for another attempt, dead_letter() for a task that "
        f"failed for good)"
    )


class QueueArgumentTests:
    """Argument checks of :class:`~omniq.interfaces.BaseTaskQueue` (mixed into
    :class:`TaskQueueContract`)."""

    async def test_complete_refuses_a_state_that_does_not_complete(
        self, task_queue: BaseTaskQueue
    ) -> None:
        task = await reserved(task_queue)
        token = task.lease_token or ""
        for state in NOT_COMPLETABLE:
            await refused(task_queue.complete(task.id, token, state), bad_state(task.id, state))
        other = await reserved(task_queue)
        await refused(
            task_queue.complete_many(
                [
                    (other.id, other.lease_token or "", TaskState.SUCCEEDED, None),
                    (task.id, token, TaskState.FAILED, None),
                ]
            ),
            bad_state(task.id, TaskState.FAILED),
        )
        results = make_result(task_id=other.id)
        kept_results, kept_events = KeptResults(), KeptEvents()
        await refused(
            task_queue.finish_many(
                [
                    (other.id, other.lease_token or "", TaskState.SUCCEEDED, None),
                    (task.id, token, TaskState.DEAD, None),
                ],
                [results],
                [],
                kept_results,
                kept_events,
            ),
            bad_state(task.id, TaskState.DEAD),
        )
        assert kept_results.kept == {}, "a refused finish_many stores no result"
        for t in (task, other):
            stored = await task_queue.get(t.id)
            assert stored is not None and stored.state is TaskState.RUNNING, (
                "a refused batch changes nothing, not even its valid items"
            )
        assert await task_queue.complete_many(
            [
                (task.id, token, "succeeded", None),  # type: ignore[list-item]
                (other.id, other.lease_token or "", TaskState.CANCELLED, None),
            ]
        ) == [True, True], "the states' plain values are accepted too"

    async def test_reserve_refuses_bad_bounds(self, task_queue: BaseTaskQueue) -> None:
        task = await task_queue.enqueue(make_task())
        for lease in BAD_LEASES:
            await refused(
                task_queue.reserve([task.queue], "w", lease),
                f"reserve() got lease={lease!r}; expected a finite number of seconds > 0",
            )
        for limit in (0, -1, 2.0):
            await refused(
                task_queue.reserve([task.queue], "w", LONG, limit),  # type: ignore[arg-type]
                f"reserve() got limit={limit!r}; expected an integer >= 1",
            )
        bad_queues: list[Any] = [[], task.queue]  # none, and a string where a list belongs
        for queues in bad_queues:
            await refused(
                task_queue.reserve(queues, "w", LONG),
                f"reserve() got queues={queues!r}; expected a non-empty list of queue names",
            )
        stored = await task_queue.get(task.id)
        assert stored is not None and stored.state is TaskState.PENDING and stored.attempts == 0, (
            "a refused reserve leases nothing"
        )

    async def test_heartbeat_and_retry_refuse_bad_values(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue)
        lease = (task.id, task.lease_token or "")
        for bad in BAD_LEASES:
            await refused(
                task_queue.heartbeat([lease], bad),
                f"heartbeat() got lease={bad!r}; expected a finite number of seconds > 0",
            )
        for eta in (math.nan, math.inf, None):
            await refused(
                task_queue.retry(task.id, lease[1], eta),  # type: ignore[arg-type]
                f"retry() got eta={eta!r}; expected a finite epoch time in seconds",
            )
        stored = await task_queue.get(task.id)
        assert stored is not None and stored.state is TaskState.RUNNING
        assert stored.lease_deadline == task.lease_deadline, "a refused heartbeat extends nothing"

    async def test_reading_calls_refuse_bad_bounds(self, task_queue: BaseTaskQueue) -> None:
        for limit in (0, -5):
            await refused(
                task_queue.list(limit=limit),
                f"list() got limit={limit!r}; expected an integer >= 1",
            )
            await refused(
                task_queue.claim_due_schedules(1.0, limit),
                f"claim_due_schedules() got limit={limit!r}; expected an integer >= 1",
            )
        valid = ", ".join(s.value for s in TaskState)
        await refused(
            task_queue.list(states=["bogus"]),  # type: ignore[list-item]
            f"list() got states=['bogus']; valid states: {valid}",
        )
        await refused(
            task_queue.purge(states=["bogus"]),  # type: ignore[list-item]
            f"purge() got states=['bogus']; valid states: {valid}",
        )
        await refused(
            task_queue.wait_for_work(["default"], -1),
            "wait_for_work() got timeout=-1; expected a finite number of seconds >= 0",
        )


class ResultArgumentTests:
    """Argument checks of :class:`~omniq.interfaces.BaseResultStorage`."""

    async def test_wait_refuses_a_bad_timeout(self, result_storage: BaseResultStorage) -> None:
        for timeout in (-1, math.nan):
            await refused(
                result_storage.wait("some-task", timeout),
                f"wait() got timeout={timeout!r}; expected a finite number of seconds >= 0",
            )


class EventArgumentTests:
    """Argument checks of :class:`~omniq.interfaces.BaseEventStorage`."""

    async def test_query_and_cleanup_refuse_bad_values(
        self, event_storage: BaseEventStorage
    ) -> None:
        await refused(event_storage.query(limit=0), "query() got limit=0; expected an integer >= 1")
        await refused(
            event_storage.query(order="sideways"),
            "event order must be 'asc' or 'desc', got 'sideways'",
        )
        await refused(
            event_storage.query(since=math.nan),
            "query() got since=nan; expected a finite epoch time in seconds",
        )
        await refused(
            event_storage.cleanup(math.inf),
            "cleanup() got older_than=inf; expected a finite epoch time in seconds",
        )
