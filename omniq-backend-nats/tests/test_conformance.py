"""The conformance suite on NATS JetStream: each test on its own stream prefix."""

from __future__ import annotations

from typing import Any, cast

import pytest

from omniq.interfaces import BaseEventStorage, BaseResultStorage, BaseTaskQueue
from omniq.models import TaskEvent
from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract
from omniq_backend_nats.events import NatsEventStorage
from omniq_backend_nats.names import token
from omniq_backend_nats.queue import NatsTaskQueue
from omniq_backend_nats.results import NatsResultStorage


def _ref(url: str, prefix: str) -> dict[str, Any]:
    return {"backend": "nats", "url": url, "prefix": prefix}


class TestNatsQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, nats_url: str, nats_prefix: str) -> dict[str, Any]:
        return _ref(nats_url, nats_prefix)

    @pytest.fixture
    def task_queue_server_ref(self, task_queue_ref: dict[str, Any]) -> dict[str, Any]:
        return task_queue_ref

    async def corrupt_task(self, store: BaseTaskQueue, task_id: str) -> None:
        """The task's record in the tasks bucket overwritten with bytes that are not msgpack."""
        await cast(NatsTaskQueue, store)._tasks.put(token(task_id), b"\xc1 not msgpack")

    async def corrupt_schedule(self, store: BaseTaskQueue, schedule_id: str) -> None:
        await cast(NatsTaskQueue, store)._schedules.put(token(schedule_id), b"\xc1 not msgpack")


class TestNatsResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, nats_url: str, nats_prefix: str) -> dict[str, Any]:
        return _ref(nats_url, nats_prefix)

    async def corrupt_result(self, store: BaseResultStorage, task_id: str) -> None:
        await cast(NatsResultStorage, store)._kv.put(token(task_id), b"\xc1 not msgpack")


class TestNatsEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, nats_url: str, nats_prefix: str) -> dict[str, Any]:
        return _ref(nats_url, nats_prefix)

    async def corrupt_event(self, store: BaseEventStorage, event: TaskEvent) -> None:
        """Stream messages cannot change: a message on the event's subject that is not msgpack."""
        events = cast(NatsEventStorage, store)
        [(subject, _data)] = events.messages([event])
        await events.inbox.publish([(subject, b"\xc1 not msgpack")])
