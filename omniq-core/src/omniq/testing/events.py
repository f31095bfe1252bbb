"""The event-storage contract: every rule of :class:`omniq.interfaces.BaseEventStorage`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from ..interfaces import BaseEventStorage
from ..models import EventType, TaskEvent
from ..registry import StoreKind
from .arguments import EventArgumentTests
from .base import StoreContract, abstract_ref, open_store
from .factories import make_event

__all__ = ["EventStorageContract"]

T0 = 1_700_000_000.0


def ids(events: list[TaskEvent]) -> list[str]:
    return [e.id for e in events]


class EventStorageContract(StoreContract, EventArgumentTests):
    """Conformance tests for a :class:`~omniq.interfaces.BaseEventStorage`.

    Override :meth:`event_storage_ref` with a URL or mapping for an empty namespace.
    """

    kind: ClassVar[StoreKind] = "event_storage"

    @pytest.fixture
    def event_storage_ref(self) -> Any:
        """Override: a URL or mapping for an EMPTY event-storage namespace of your backend."""
        raise abstract_ref("event_storage", 'f"mydb:///{tmp_path}/events.db"')

    @pytest.fixture
    async def event_storage(self, event_storage_ref: Any) -> AsyncIterator[BaseEventStorage]:
        """The store under test, opened from ``event_storage_ref`` and closed afterwards."""
        async with open_store("event_storage", event_storage_ref) as store:
            yield store

    async def corrupt_event(self, store: BaseEventStorage, event: TaskEvent) -> None:
        """Override: make the stored record of ``event`` (appended alone) undecodable, or,
        where stored records cannot change (a stream), store an undecodable record for
        it. A store that keeps objects rather than bytes may ``pytest.skip``."""
        pytest.fail(
            "override corrupt_event(self, store, event) in your test class: make the "
            "stored record of event undecodable (e.g. bytes that are not msgpack)"
        )

    async def test_a_query_leaves_out_an_event_it_cannot_decode(
        self, event_storage: BaseEventStorage
    ) -> None:
        good = [make_event(task_id="t-good", timestamp=T0 + i) for i in range(3)]
        bad = make_event(task_id="t-bad", timestamp=T0 + 1.5)
        await event_storage.append_many(good[:2])
        await event_storage.append_many([bad])
        await event_storage.append_many(good[2:])
        await self.corrupt_event(event_storage, bad)
        everything = ids(await event_storage.query())
        assert [i for i in everything if i != bad.id] == ids(good), (
            "a query returns every event it can decode, in order, and leaves out the bad record"
        )
        assert ids(await event_storage.query(task_id="t-good")) == ids(good)
        newest = [i for i in ids(await event_storage.query(order="desc", limit=2)) if i != bad.id]
        assert newest and newest == ids(good)[::-1][: len(newest)], (
            "with a limit, the newest events it can decode (the bad one may take a place)"
        )
        await event_storage.cleanup(T0 - 1)

    @pytest.fixture
    async def log(self, event_storage: BaseEventStorage) -> list[TaskEvent]:
        """Ten events over two tasks and two queues, appended out of timestamp order."""
        a, b = "task-a", "task-b"
        kinds = [
            EventType.ENQUEUED,
            EventType.STARTED,
            EventType.FAILED,
            EventType.RETRYING,
            EventType.SUCCEEDED,
        ]
        events = [
            make_event(
                task_id=a,
                queue="qa",
                type=k,
                timestamp=T0 + i,
                worker_id="w1",
                detail={"attempt": i, "note": "ü"},
            )
            for i, k in enumerate(kinds)
        ]
        events += [
            make_event(task_id=b, queue="qb", type=k, timestamp=T0 + 0.5 + i)
            for i, k in enumerate(kinds)
        ]
        shuffled = events[5:] + events[:5]
        await event_storage.append_many(shuffled[:4])
        await event_storage.append_many(shuffled[4:])
        return sorted(events, key=lambda e: e.timestamp)

    async def test_events_round_trip(self, event_storage: BaseEventStorage) -> None:
        event = make_event(
            type=EventType.DEAD,
            worker_id="w-9",
            timestamp=T0 + 0.125,
            detail={"error": "boom", "attempts": 3, "nested": {"list": [1, 2.5, None]}},
        )
        bare = make_event(timestamp=T0 + 1)
        await event_storage.append(event)
        await event_storage.append_many([bare])
        assert await event_storage.query() == [event, bare]

    async def test_query_orders_by_timestamp(
        self, event_storage: BaseEventStorage, log: list[TaskEvent]
    ) -> None:
        assert ids(await event_storage.query()) == ids(log)
        assert ids(await event_storage.query(order="asc")) == ids(log)
        assert ids(await event_storage.query(order="desc")) == ids(log)[::-1]

    async def test_query_ties_keep_append_order(self, event_storage: BaseEventStorage) -> None:
        events = [make_event(timestamp=T0) for _ in range(5)]
        await event_storage.append_many(events[:2])
        await event_storage.append_many(events[2:])
        assert ids(await event_storage.query()) == ids(events)

    async def test_query_filters(
        self, event_storage: BaseEventStorage, log: list[TaskEvent]
    ) -> None:
        def expect(**match: Any) -> list[str]:
            return ids([e for e in log if all(getattr(e, k) in v for k, v in match.items())])

        assert ids(await event_storage.query(task_id="task-a")) == expect(task_id={"task-a"})
        assert ids(await event_storage.query(queue="qb")) == expect(queue={"qb"})
        assert await event_storage.query(task_id="no-such-task") == []
        assert await event_storage.query(queue="no-such-queue") == []
        types = [EventType.FAILED, EventType.SUCCEEDED]
        assert ids(await event_storage.query(types=types)) == expect(type=set(types))
        assert ids(await event_storage.query(types=["started"])) == expect(
            type={EventType.STARTED}
        ), "types may be given as plain strings"
        assert ids(
            await event_storage.query(task_id="task-b", types={"failed", "retrying"})
        ) == expect(task_id={"task-b"}, type={EventType.FAILED, EventType.RETRYING})
        assert ids(await event_storage.query(queue="qa", task_id="task-b")) == []

    async def test_query_since_inclusive_until_exclusive(
        self, event_storage: BaseEventStorage, log: list[TaskEvent]
    ) -> None:
        got = await event_storage.query(since=T0 + 1, until=T0 + 3)
        assert ids(got) == ids([e for e in log if T0 + 1 <= e.timestamp < T0 + 3])
        assert [e.timestamp for e in got] == [T0 + 1, T0 + 1.5, T0 + 2, T0 + 2.5]
        assert ids(await event_storage.query(since=T0 + 4.5)) == ids(log[-1:])
        assert ids(await event_storage.query(until=T0 + 0.5)) == ids(log[:1])
        assert await event_storage.query(since=T0 + 2, until=T0 + 2) == []

    async def test_query_limit(self, event_storage: BaseEventStorage, log: list[TaskEvent]) -> None:
        assert ids(await event_storage.query(limit=3)) == ids(log[:3])
        assert ids(await event_storage.query(limit=3, order="desc")) == ids(log[::-1][:3])
        assert ids(await event_storage.query(limit=None)) == ids(log)
        assert ids(await event_storage.query(queue="qa", limit=2, order="desc")) == ids(
            [e for e in log if e.queue == "qa"][::-1][:2]
        )

    async def test_query_default_limit_is_1000(self, event_storage: BaseEventStorage) -> None:
        events = [make_event(timestamp=T0 + i) for i in range(1005)]
        await event_storage.append_many(events)
        assert ids(await event_storage.query()) == ids(events[:1000])
        assert len(await event_storage.query(limit=None)) == 1005

    async def test_counts_bucket_events_by_time_queue_and_type(
        self, event_storage: BaseEventStorage, log: list[TaskEvent]
    ) -> None:
        def expect(since: float, until: float, step: float, **match: Any) -> list[tuple[Any, ...]]:
            tally: dict[tuple[float, str, str], int] = {}
            for e in log:
                if since <= e.timestamp < until and all(
                    getattr(e, k) in v for k, v in match.items()
                ):
                    key = (since + ((e.timestamp - since) // step) * step, e.queue, e.type.value)
                    tally[key] = tally.get(key, 0) + 1
            return [(*k, n) for k, n in sorted(tally.items())]

        def rows(counts: list[Any]) -> list[tuple[Any, ...]]:
            return [(c.bucket, c.queue, c.type, c.count) for c in counts]

        got = rows(await event_storage.counts(since=T0, until=T0 + 5, step=2))
        assert got == expect(T0, T0 + 5, 2)
        assert sum(r[-1] for r in got) == 10 and got[0][0] == T0
        assert rows(await event_storage.counts(since=T0 + 1, until=T0 + 3, step=1)) == expect(
            T0 + 1, T0 + 3, 1
        ), "since is inclusive, until exclusive"
        assert rows(await event_storage.counts(since=T0, until=T0 + 10, step=60, queue="qb")) == [
            (T0, "qb", k, 1) for k in sorted(t.value for t in {e.type for e in log})
        ]
        assert rows(
            await event_storage.counts(
                since=T0, until=T0 + 10, step=60, types=["failed", EventType.SUCCEEDED]
            )
        ) == expect(T0, T0 + 10, 60, type={EventType.FAILED, EventType.SUCCEEDED})
        assert await event_storage.counts(since=T0 + 100, until=T0 + 200, step=10) == []

    async def test_cleanup_deletes_older_events(
        self, event_storage: BaseEventStorage, log: list[TaskEvent]
    ) -> None:
        assert await event_storage.cleanup(older_than=T0 + 2) == 4, (
            "events with timestamp < older_than"
        )
        assert ids(await event_storage.query()) == ids([e for e in log if e.timestamp >= T0 + 2])
        assert await event_storage.cleanup(older_than=T0 + 2) == 0
        assert await event_storage.cleanup(older_than=T0 + 100) == 6
        assert await event_storage.query() == []

    async def test_events_are_shared_between_instances(
        self, event_storage: BaseEventStorage, event_storage_ref: Any
    ) -> None:
        event = make_event()
        async with open_store("event_storage", event_storage_ref) as other:
            await other.append(event)
        assert await event_storage.query(task_id=event.task_id) == [event]
