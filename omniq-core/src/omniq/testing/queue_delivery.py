"""Task-queue tests for delivery (docs/architecture.md, "The delivery contract"): reserve,
leases, heartbeats, token-fenced completion, retry, release, dead-lettering and lapsed leases."""

from __future__ import annotations

import re
import time

import anyio
import pytest

from ..interfaces import BaseTaskQueue, Capability
from ..lifecycle import COMPLETABLE_STATES, applied, attempts_allowed, lapse_error
from ..models import READY_STATES, Task, TaskState
from .actions import LONG, TOLERANCE, lapse, reserve_ids, reserve_one, reserved
from .base import open_store
from .capabilities import requires
from .factories import make_error, make_task
from .polling import SHORT, eventually, wait_past

__all__ = ["DeliveryTests"]

#: A token no reserve ever hands out.
STALE = "stale-token"


class DeliveryTests:
    """Reserve and the lease life cycle (mixed into :class:`TaskQueueContract`)."""

    # -- reserve -------------------------------------------------------------------------

    async def test_reserve_on_empty_queue_returns_at_once(self, task_queue: BaseTaskQueue) -> None:
        started = time.monotonic()
        assert await task_queue.reserve(["default", "other"], "w", LONG, limit=10) == []
        assert time.monotonic() - started < 2.0, "reserve must never block waiting for work"

    async def test_reserve_sets_lease_fields(self, task_queue: BaseTaskQueue) -> None:
        task = await task_queue.enqueue(make_task())
        before = await task_queue.now()
        got = await reserve_one(task_queue, worker="worker-7", lease=30.0)
        after = await task_queue.now()
        fetched = await task_queue.get(task.id)
        assert fetched is not None
        for t in (got, fetched):
            assert t.id == task.id and t.state is TaskState.RUNNING
            assert t.attempts == 1, f"reserve increments attempts (0 -> 1), got {t.attempts}"
            assert t.lease_owner == "worker-7"
            assert isinstance(t.lease_token, str) and t.lease_token, "reserve sets a lease token"
            assert t.lease_deadline is not None
            assert before + 30.0 - TOLERANCE <= t.lease_deadline <= after + 30.0 + TOLERANCE, (
                f"lease_deadline should be now + lease ({before + 30.0}..{after + 30.0}), "
                f"got {t.lease_deadline}"
            )
            assert (
                t.started_at is not None and before - TOLERANCE <= t.started_at <= after + TOLERANCE
            )
        assert fetched.lease_token == got.lease_token

    async def test_reserved_task_is_not_reserved_again(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        await reserve_one(task_queue)
        assert await task_queue.reserve(["default"], "worker-2", LONG, limit=10) == []

    async def test_lease_tokens_are_fresh_and_unique(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task() for _ in range(6)])
        first = await task_queue.reserve(["default"], "w", LONG, limit=3)
        second = await task_queue.reserve(["default"], "w", LONG, limit=3)
        tokens = [t.lease_token for t in first + second]
        assert len(set(tokens)) == 6, f"lease tokens must be unique, got {tokens}"
        assert await task_queue.release(first[0].id, first[0].lease_token or "")
        again = await reserve_one(task_queue)
        assert again.id == first[0].id and again.lease_token not in tokens, (
            "a new lease gets a new token"
        )

    async def test_reserve_is_fifo_within_a_priority(self, task_queue: BaseTaskQueue) -> None:
        tasks = await task_queue.enqueue_many([make_task() for _ in range(10)])
        got = await reserve_ids(task_queue, ["default"], limit=4)
        got += [(await reserve_one(task_queue)).id for _ in range(2)]
        got += await reserve_ids(task_queue, ["default"])
        assert got == [t.id for t in tasks], "tasks of one priority must come out in enqueue order"

    async def test_reserve_orders_by_priority_then_fifo(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.PRIORITY)
        priorities = [0, 5, 9, 5, 0, 9, 1, 5]
        tasks = [await task_queue.enqueue(make_task(priority=p)) for p in priorities]
        expected = [t.id for t in sorted(tasks, key=lambda t: -t.priority)]  # stable: FIFO kept
        got = await reserve_ids(task_queue, ["default"], limit=3)
        got += [(await reserve_one(task_queue)).id for _ in range(5)]
        assert got == expected, "reserve returns highest priority first, FIFO within a priority"

    async def test_reserve_priority_spans_the_queues_asked(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.PRIORITY)
        low = await task_queue.enqueue(make_task(queue="low", priority=1))
        high = await task_queue.enqueue(make_task(queue="high", priority=8))
        assert await reserve_ids(task_queue, ["low", "high"], limit=1) == [high.id]
        assert await reserve_ids(task_queue, ["low", "high"], limit=1) == [low.id]

    async def test_reserve_respects_limit(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task() for _ in range(7)])
        assert len(await task_queue.reserve(["default"], "w", LONG, limit=3)) == 3
        assert len(await task_queue.reserve(["default"], "w", LONG, limit=1)) == 1
        assert len(await task_queue.reserve(["default"], "w", LONG, limit=10)) == 3
        assert await task_queue.reserve(["default"], "w", LONG, limit=10) == []

    async def test_reserve_only_from_the_queues_named(self, task_queue: BaseTaskQueue) -> None:
        a, b, c = await task_queue.enqueue_many([make_task(queue=q) for q in ("qa", "qb", "qc")])
        assert sorted(await reserve_ids(task_queue, ["qa", "qb"])) == sorted([a.id, b.id])
        assert await reserve_ids(task_queue, ["qa", "qb"]) == []
        assert await reserve_ids(task_queue, ["default"]) == []
        assert await reserve_ids(task_queue, ["qc"]) == [c.id]

    async def test_reserve_waits_for_eta(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.DELAYED)
        eta = await task_queue.now() + SHORT
        task = await task_queue.enqueue(make_task(eta=eta))
        assert await reserve_ids(task_queue, ["default"]) == [], (
            "a task is not ready before its eta"
        )

        async def ready() -> list[str]:
            return await reserve_ids(task_queue, ["default"])

        assert await eventually(ready, "a task whose eta passed never became ready") == [task.id]
        assert await task_queue.now() >= eta - TOLERANCE

    async def test_reserve_skips_expired_tasks(self, task_queue: BaseTaskQueue) -> None:
        now = await task_queue.now()
        await task_queue.enqueue(make_task(expires_at=now - 1))
        live = await task_queue.enqueue(make_task(expires_at=now + 3600))
        assert await reserve_ids(task_queue, ["default"]) == [live.id]

    async def test_reserve_skips_cancelled_and_finished_tasks(
        self, task_queue: BaseTaskQueue
    ) -> None:
        cancelled = await task_queue.enqueue(make_task())
        await task_queue.cancel(cancelled.id)
        done = await reserved(task_queue)
        await task_queue.complete(done.id, done.lease_token or "", TaskState.SUCCEEDED)
        assert await reserve_ids(task_queue, ["default"]) == []

    # -- heartbeat ---------------------------------------------------------------------------

    async def test_heartbeat_extends_held_leases(self, task_queue: BaseTaskQueue) -> None:
        tasks = [await reserved(task_queue, lease=SHORT) for _ in range(2)]
        before = await task_queue.now()
        held = await task_queue.heartbeat([(t.id, t.lease_token or "") for t in tasks], 120.0)
        assert sorted(held) == sorted(t.id for t in tasks)
        for t in tasks:
            fetched = await task_queue.get(t.id)
            assert fetched is not None and fetched.lease_deadline is not None
            assert fetched.lease_deadline >= before + 120.0 - TOLERANCE, (
                "heartbeat sets deadline = now + lease"
            )
        await wait_past(task_queue, max(t.lease_deadline or 0 for t in tasks))
        assert await task_queue.release_expired_leases() == [], "an extended lease must not lapse"
        states = [(await task_queue.get(t.id)).state for t in tasks]  # type: ignore[union-attr]
        assert states == [TaskState.RUNNING] * 2

    async def test_heartbeat_reports_lost_leases(self, task_queue: BaseTaskQueue) -> None:
        held = await reserved(task_queue)
        wrong = await reserved(task_queue)
        done = await reserved(task_queue)
        await task_queue.complete(done.id, done.lease_token or "", TaskState.SUCCEEDED)
        released = await reserved(task_queue)
        await task_queue.release(released.id, released.lease_token or "")
        leases = [
            (held.id, held.lease_token or ""),
            (wrong.id, STALE),
            (done.id, done.lease_token or ""),
            (released.id, released.lease_token or ""),
            ("no-such-task", STALE),
        ]
        assert await task_queue.heartbeat(leases, LONG) == [held.id]
        fetched = await task_queue.get(wrong.id)
        assert fetched is not None and fetched.lease_deadline == wrong.lease_deadline, (
            "a heartbeat with the wrong token must not extend the lease"
        )

    async def test_heartbeat_after_redelivery_is_lost(self, task_queue: BaseTaskQueue) -> None:
        first = await reserved(task_queue, lease=SHORT)
        await lapse(task_queue, first)
        second = await reserve_one(task_queue, worker="worker-2")
        assert second.id == first.id
        assert await task_queue.heartbeat([(first.id, first.lease_token or "")], LONG) == []
        assert await task_queue.heartbeat([(second.id, second.lease_token or "")], LONG) == [
            second.id
        ]

    # -- complete ---------------------------------------------------------------------------

    async def test_complete_succeeded(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue)
        assert (
            await task_queue.complete(task.id, task.lease_token or "", TaskState.SUCCEEDED) is True
        )
        fetched = await task_queue.get(task.id)
        assert fetched is not None and fetched.state is TaskState.SUCCEEDED
        assert fetched.finished_at is not None, "complete sets finished_at"
        assert fetched.lease_token is None and fetched.lease_deadline is None, (
            "complete clears the lease"
        )
        assert fetched.attempts == 1
        assert (
            await task_queue.complete(task.id, task.lease_token or "", TaskState.SUCCEEDED) is False
        ), "a second completion with the same token must be refused"

    async def test_complete_cancelled_keeps_error(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue)
        error = make_error("stopped")
        assert await task_queue.complete(
            task.id, task.lease_token or "", TaskState.CANCELLED, error
        )
        fetched = await task_queue.get(task.id)
        assert (
            fetched is not None and fetched.state is TaskState.CANCELLED and fetched.error == error
        )
        assert fetched.finished_at is not None

    async def test_complete_with_stale_token_changes_nothing(
        self, task_queue: BaseTaskQueue
    ) -> None:
        task = await reserved(task_queue)
        before = await task_queue.get(task.id)
        assert await task_queue.complete(task.id, STALE, TaskState.SUCCEEDED) is False
        assert await task_queue.get(task.id) == before, "a refused completion must change nothing"
        assert await task_queue.complete("no-such-task", STALE, TaskState.SUCCEEDED) is False

    async def test_complete_many(self, task_queue: BaseTaskQueue) -> None:
        a, b, c = [await reserved(task_queue) for _ in range(3)]
        answers = await task_queue.complete_many(
            [
                (a.id, a.lease_token or "", TaskState.SUCCEEDED, None),
                (b.id, STALE, TaskState.SUCCEEDED, None),
                (c.id, c.lease_token or "", TaskState.CANCELLED, make_error()),
            ]
        )
        assert answers == [True, False, True]
        states = [(await task_queue.get(t.id)).state for t in (a, b, c)]  # type: ignore[union-attr]
        assert states == [TaskState.SUCCEEDED, TaskState.RUNNING, TaskState.CANCELLED]

    # -- retry / release / dead_letter -----------------------------------------------------------

    async def test_retry_keeps_attempts_and_error(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue, max_retries=3)
        error = make_error("try again")
        eta = await task_queue.now()
        assert await task_queue.retry(task.id, task.lease_token or "", eta, error) is True
        fetched = await task_queue.get(task.id)
        assert fetched is not None and fetched.state is TaskState.RETRYING
        assert fetched.attempts == 1, "retry keeps the attempt counted"
        assert fetched.error == error and fetched.eta is not None and abs(fetched.eta - eta) < 1e-3
        assert fetched.lease_token is None and fetched.lease_deadline is None, (
            "retry clears the lease"
        )
        again = await reserve_one(task_queue)
        assert again.id == task.id and again.attempts == 2

    async def test_retry_waits_for_its_eta(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.DELAYED)
        task = await reserved(task_queue)
        eta = await task_queue.now() + SHORT
        assert await task_queue.retry(task.id, task.lease_token or "", eta, make_error())
        assert await reserve_ids(task_queue, ["default"]) == [], (
            "a retry is not ready before its eta"
        )

        async def ready() -> list[str]:
            return await reserve_ids(task_queue, ["default"])

        assert await eventually(ready, "a retry whose eta passed never became ready") == [task.id]

    async def test_retry_with_stale_token_changes_nothing(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue)
        before = await task_queue.get(task.id)
        assert await task_queue.retry(task.id, STALE, await task_queue.now(), make_error()) is False
        assert await task_queue.get(task.id) == before

    async def test_release_does_not_count_the_attempt(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue)
        assert await task_queue.release(task.id, task.lease_token or "") is True
        fetched = await task_queue.get(task.id)
        assert fetched is not None and fetched.state is TaskState.PENDING
        assert fetched.attempts == 0, "release decrements attempts (the attempt is not counted)"
        assert fetched.lease_token is None and fetched.lease_deadline is None, (
            "release clears the lease"
        )
        again = await reserve_one(task_queue)
        assert again.id == task.id and again.attempts == 1
        assert await task_queue.release(task.id, task.lease_token or "") is False, (
            "the old token is stale"
        )

    async def test_release_with_stale_token_changes_nothing(
        self, task_queue: BaseTaskQueue
    ) -> None:
        task = await reserved(task_queue)
        before = await task_queue.get(task.id)
        assert await task_queue.release(task.id, STALE) is False
        assert await task_queue.get(task.id) == before

    async def test_dead_letter_with_token(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue)
        error = make_error("retries used up")
        assert await task_queue.dead_letter(task.id, task.lease_token, error) is True
        fetched = await task_queue.get(task.id)
        assert fetched is not None and fetched.state is TaskState.DEAD and fetched.error == error
        assert fetched.finished_at is not None, "dead_letter sets finished_at"
        assert await reserve_ids(task_queue, ["default"]) == []

    async def test_dead_letter_with_stale_token_changes_nothing(
        self, task_queue: BaseTaskQueue
    ) -> None:
        task = await reserved(task_queue)
        before = await task_queue.get(task.id)
        assert await task_queue.dead_letter(task.id, STALE, make_error()) is False
        assert await task_queue.get(task.id) == before

    async def test_an_ended_attempt_reads_as_its_own(self, task_queue: BaseTaskQueue) -> None:
        """A completion, retry or dead letter the server applied but whose answer was
        lost is repeated and refused (its token spent); the worker then reads the record
        to tell its own change from another's (``lifecycle.applied``): the record keeps
        the attempt's count and start, and its error where it has one."""
        error = make_error("boom")

        async def change(task: Task, state: TaskState) -> bool:
            token = task.lease_token or ""
            if state is TaskState.RETRYING:
                return await task_queue.retry(
                    task.id, token, (task.started_at or 0.0) + LONG, error
                )
            if state is TaskState.DEAD:
                return await task_queue.dead_letter(task.id, token, error)
            return await task_queue.complete(task.id, token, state)

        for state in (TaskState.SUCCEEDED, TaskState.RETRYING, TaskState.DEAD):
            task = await reserved(task_queue, max_retries=3)
            assert await change(task, state) is True
            record = await task_queue.get(task.id)
            assert record is not None and record.state is state
            assert record.attempts == task.attempts, f"{state.value} keeps the attempt's count"
            assert record.started_at is not None and task.started_at is not None
            assert abs(record.started_at - task.started_at) < 1e-3, (
                f"{state.value} keeps when the attempt started"
            )
            assert applied(record, task, state, error), f"{state.value} reads as this attempt's"
            assert await change(task, state) is False, "the repeat is refused: its token is spent"

    async def test_another_attempt_s_end_does_not_read_as_this_one_s(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """An attempt whose lease lapsed, and whose task was reserved and finished again,
        must not take the later attempt's end for its own (its result would replace the
        real one)."""
        first = await reserved(task_queue, lease=SHORT)
        await lapse(task_queue, first)
        second = await reserve_one(task_queue)
        assert second.id == first.id
        assert await task_queue.complete(second.id, second.lease_token or "", TaskState.SUCCEEDED)
        record = await task_queue.get(first.id)
        assert applied(record, second, TaskState.SUCCEEDED)
        assert not applied(record, first, TaskState.SUCCEEDED)
        assert (
            await task_queue.complete(first.id, first.lease_token or "", TaskState.SUCCEEDED)
            is False
        )

    async def test_dead_letter_without_token(self, task_queue: BaseTaskQueue) -> None:
        """``token=None`` (an undecodable message) is unconditional for a non-terminal task."""
        running = await reserved(task_queue)
        pending = await task_queue.enqueue(make_task())
        error = make_error("cannot decode")
        for task in (pending, running):
            assert await task_queue.dead_letter(task.id, None, error) is True
            fetched = await task_queue.get(task.id)
            assert (
                fetched is not None and fetched.state is TaskState.DEAD and fetched.error == error
            )
        assert await task_queue.heartbeat([(running.id, running.lease_token or "")], LONG) == []

    async def test_dead_letter_leaves_terminal_tasks_alone(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue)
        await task_queue.complete(task.id, task.lease_token or "", TaskState.SUCCEEDED)
        before = await task_queue.get(task.id)
        assert await task_queue.dead_letter(task.id, None, make_error()) is False
        assert await task_queue.get(task.id) == before

    # -- lapsed leases ---------------------------------------------------------------------------

    async def test_lapsed_lease_returns_task_with_attempt_counted(
        self, task_queue: BaseTaskQueue
    ) -> None:
        task = await reserved(task_queue, lease=SHORT, max_deliveries=5)
        returned = await lapse(task_queue, task)
        assert returned.state in READY_STATES and returned.attempts == 1
        fetched = await task_queue.get(task.id)
        assert fetched is not None and fetched.state in READY_STATES and fetched.attempts == 1
        again = await reserve_one(task_queue, worker="worker-2")
        assert again.id == task.id and again.attempts == 2 and again.lease_owner == "worker-2"
        assert again.lease_token != task.lease_token

    async def test_stale_holder_is_fenced_after_redelivery(self, task_queue: BaseTaskQueue) -> None:
        first = await reserved(task_queue, lease=SHORT)
        await lapse(task_queue, first)
        second = await reserve_one(task_queue, worker="worker-2")
        stale = first.lease_token or ""
        assert await task_queue.complete(first.id, stale, TaskState.SUCCEEDED) is False
        assert (
            await task_queue.retry(first.id, stale, await task_queue.now(), make_error()) is False
        )
        assert await task_queue.release(first.id, stale) is False
        assert await task_queue.dead_letter(first.id, stale, make_error()) is False
        fetched = await task_queue.get(first.id)
        assert fetched is not None and fetched.state is TaskState.RUNNING
        assert fetched.lease_token == second.lease_token
        assert (
            await task_queue.complete(second.id, second.lease_token or "", TaskState.SUCCEEDED)
            is True
        )

    async def test_live_leases_are_not_released(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue, lease=LONG)
        short = await reserved(task_queue, lease=SHORT)
        await lapse(task_queue, short)
        assert (await task_queue.get(task.id)).state is TaskState.RUNNING  # type: ignore[union-attr]
        assert await task_queue.release_expired_leases() == []

    async def test_lapsed_lease_dead_letters_after_max_deliveries(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """The limit is ``max(max_deliveries, max_retries + 1)``: here 2 deliveries."""
        task = await reserved(task_queue, lease=SHORT, max_deliveries=1, max_retries=1)
        first = await lapse(task_queue, task)
        assert first.state in READY_STATES, "1 attempt < max(1, 1 + 1): the task must come back"
        again = await reserve_one(task_queue, lease=SHORT)
        second = await lapse(task_queue, again)
        assert second.state is TaskState.DEAD and second.attempts == 2
        fetched = await task_queue.get(task.id)
        assert (
            fetched is not None
            and fetched.state is TaskState.DEAD
            and fetched.finished_at is not None
        )

    @pytest.mark.parametrize(("max_deliveries", "max_retries"), [(2, 0), (1, 2)])
    async def test_lapses_dead_letter_exactly_at_the_attempts_allowed(
        self, task_queue: BaseTaskQueue, max_deliveries: int, max_retries: int
    ) -> None:
        """Each lapse counts its attempt; the one that reaches
        :func:`~omniq.lifecycle.attempts_allowed` dead-letters the task with
        :func:`~omniq.lifecycle.lapse_error`, every one before returns it."""
        task = await reserved(
            task_queue, lease=SHORT, max_deliveries=max_deliveries, max_retries=max_retries
        )
        allowed = attempts_allowed(task)
        for attempt in range(1, allowed + 1):
            returned = await lapse(task_queue, task)
            assert returned.attempts == attempt, f"lapse {attempt} must keep the attempt counted"
            if attempt < allowed:
                assert returned.state in READY_STATES, (
                    f"attempt {attempt} of {allowed} (max_deliveries={max_deliveries}, "
                    f"max_retries={max_retries}) lapsed: the task must come back, "
                    f"is {returned.state}"
                )
                task = await reserve_one(task_queue, lease=SHORT)
                continue
            assert returned.state is TaskState.DEAD, f"attempt {allowed} of {allowed} lapsed: dead"
            fetched = await task_queue.get(task.id)
            assert fetched is not None and fetched.state is TaskState.DEAD
            want = lapse_error(returned)
            got = fetched.error and (fetched.error.type, fetched.error.message)
            assert got == (want.type, want.message), (
                f"the dead task's error: {got}, expected {want}"
            )

    # -- the states complete() accepts -------------------------------------------------------

    @pytest.mark.parametrize("state", [s for s in TaskState if s not in COMPLETABLE_STATES])
    async def test_complete_refuses_states_other_than_succeeded_and_cancelled(
        self, task_queue: BaseTaskQueue, state: TaskState
    ) -> None:
        """``complete`` ends a task succeeded or cancelled, nothing else (``retry`` and
        ``dead_letter`` do the rest): any other state is an error naming it and the valid
        ones, raised before anything in the batch changes."""
        task, other = await reserved(task_queue), await reserved(task_queue)
        before = [await task_queue.get(t.id) for t in (task, other)]
        with pytest.raises(ValueError, match=re.escape(repr(state.value))) as info:
            await task_queue.complete(task.id, task.lease_token or "", state, make_error())
        said = str(info.value)
        assert repr(state.value) in said and "'succeeded'" in said and "'cancelled'" in said, (
            f"the error must name the state {state.value!r} and the valid ones: {said}"
        )
        with pytest.raises(ValueError, match=re.escape(repr(state.value))):
            await task_queue.complete_many(
                [
                    (other.id, other.lease_token or "", TaskState.SUCCEEDED, None),
                    (task.id, task.lease_token or "", state, make_error()),
                ]
            )
        assert [await task_queue.get(t.id) for t in (task, other)] == before, (
            "a refused complete() changes nothing, in the whole batch"
        )

    # -- waiting for work ----------------------------------------------------------------------

    async def test_wait_for_work_returns_by_its_timeout(self, task_queue: BaseTaskQueue) -> None:
        started = time.monotonic()
        await task_queue.wait_for_work(["default"], SHORT)
        assert time.monotonic() - started < SHORT + 5.0

    async def test_wait_for_work_wakes_on_enqueue(
        self, task_queue: BaseTaskQueue, task_queue_ref: object
    ) -> None:
        requires(task_queue, Capability.BLOCKING_RESERVE)
        async with open_store("task_queue", task_queue_ref) as producer:
            started = time.monotonic()
            async with anyio.create_task_group() as tg:

                async def produce() -> None:
                    await anyio.sleep(SHORT)
                    await producer.enqueue(make_task())

                tg.start_soon(produce)
                await task_queue.wait_for_work(["default"], 30.0)
            assert time.monotonic() - started < 10.0, (
                "BLOCKING_RESERVE: wait_for_work must wake on enqueue"
            )
        assert len(await reserve_ids(task_queue, ["default"])) == 1

    async def test_a_short_reserve_took_every_ready_task_where_the_queue_says_so(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """``reserve_drains``: the worker waits for a wake-up after a reserve that got
        fewer tasks than it asked for, so such a reserve must leave no ready task behind
        (in any of the queues asked, at any priority)."""
        if not task_queue.reserve_drains:
            pytest.skip(f"{type(task_queue).__name__} does not declare reserve_drains")
        requires(task_queue, Capability.BLOCKING_RESERVE)
        tasks = [
            make_task(queue=queue, priority=priority)
            for queue, priority in (("default", 0), ("default", 5), ("other", 0), ("other", 9))
        ]
        await task_queue.enqueue_many(tasks)
        got = await reserve_ids(task_queue, ["default", "other"], limit=len(tasks) + 3)
        assert sorted(got) == sorted(t.id for t in tasks), (
            "reserve_drains: a reserve that returns fewer tasks than its limit must have "
            f"taken every ready one: got {len(got)} of {len(tasks)}"
        )
        assert await reserve_ids(task_queue, ["default", "other"]) == []
