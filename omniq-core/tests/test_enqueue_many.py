"""``enqueue_many``'s tasks as stored: each call's payload, signed and bound to its own
task when a key is configured (the bulk builds them in one written-out loop)."""

from __future__ import annotations

import asyncio

import pytest

from omniq import AsyncOmniQ
from omniq.errors import SignatureError
from omniq.serialization import binding


@pytest.mark.parametrize("key", [None, "bulk-key"])
def test_each_call_is_stored_as_its_own_payload(tmp_path, key: str | None) -> None:
    calls: list = [(1, "a"), {"x": 2}, [3, [4]], ()]

    async def main() -> None:
        async with AsyncOmniQ(task_queue=f"sqlite:///{tmp_path}/q.db", secret_key=key) as app:

            @app.task(name="bulk.add")
            async def add(*args: object, **kwargs: object) -> None:
                pass

            refs = await app.enqueue_many(add, calls)
            tasks = [await app.get_task(r.id) for r in refs]
            read = app.serializer.loads_call
            got = [
                read(t.payload, local_only=True, bind=binding(t.name, t.queue, t.id)) for t in tasks
            ]
            assert [(a, k) for a, k, _ in got] == [
                ([1, "a"], {}),
                ([], {"x": 2}),
                ([3, [4]], {}),
                ([], {}),
            ]
            assert len({r.id for r in refs}) == len(calls)
            if key is not None:  # bound: another task's payload does not run as this one
                first, second = tasks[0], tasks[1]
                with pytest.raises(SignatureError):
                    read(
                        first.payload,
                        local_only=True,
                        bind=binding(second.name, second.queue, second.id),
                    )

    asyncio.run(main())


def test_enqueued_events_of_mixed_tasks_say_each_its_own() -> None:
    # Events are copies of one made per name, state and queue: tasks that alternate
    # between those must still each get their own.
    from omniq.events import enqueued_events
    from omniq.models import EventType, Task, TaskState

    kinds = [
        ("a", "q1", TaskState.PENDING),
        ("b", "q1", TaskState.PENDING),
        ("a", "q2", TaskState.SCHEDULED),
        ("a", "q1", TaskState.PENDING),
    ]
    tasks = [Task(id=f"t{i}", name=n, queue=q, state=s) for i, (n, q, s) in enumerate(kinds)]
    events = enqueued_events(tasks, 5.0)
    assert [(e.task_id, e.queue, e.detail) for e in events] == [
        (t.id, t.queue, {"name": t.name, "state": t.state.value}) for t in tasks
    ]
    assert all(e.type is EventType.ENQUEUED and e.timestamp == 5.0 for e in events)
    assert len({e.id for e in events}) == len(events)
