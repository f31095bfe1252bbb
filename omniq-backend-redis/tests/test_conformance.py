"""The conformance suite on Redis: each test on its own random key prefix."""

from __future__ import annotations

from typing import Any, cast

import pytest

from omniq.interfaces import BaseEventStorage, BaseResultStorage, BaseTaskQueue
from omniq.models import EventType, TaskEvent
from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract
from omniq_backend_redis.events import RedisEventStorage
from omniq_backend_redis.queue import RedisTaskQueue
from omniq_backend_redis.results import RedisResultStorage


def _ref(url: str, prefix: str) -> dict[str, Any]:
    return {"backend": "redis", "url": url, "key_prefix": prefix}


class TestRedisQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, redis_url: str, key_prefix: str) -> dict[str, Any]:
        return _ref(redis_url, key_prefix)

    @pytest.fixture
    def task_queue_server_ref(self, task_queue_ref: dict[str, Any]) -> dict[str, Any]:
        return task_queue_ref

    async def corrupt_task(self, store: BaseTaskQueue, task_id: str) -> None:
        """The encoded task (field d of its hash) overwritten with bytes that are not msgpack."""
        redis_store = cast(RedisTaskQueue, store)
        await redis_store.redis.hset(redis_store.key("t", task_id), "d", b"\xc1 not msgpack")

    async def corrupt_schedule(self, store: BaseTaskQueue, schedule_id: str) -> None:
        redis_store = cast(RedisTaskQueue, store)
        await redis_store.redis.hset(redis_store.key("sched"), schedule_id, b"\xc1 not msgpack")


class TestRedisResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, redis_url: str, key_prefix: str) -> dict[str, Any]:
        return _ref(redis_url, key_prefix)

    async def corrupt_result(self, store: BaseResultStorage, task_id: str) -> None:
        """OmniQ's marker, then bytes that are not msgpack."""
        results = cast(RedisResultStorage, store)
        await results.redis.set(results.key("r", task_id), b"OQR1\xc1 not msgpack")


class TestRedisEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, redis_url: str, key_prefix: str) -> dict[str, Any]:
        return _ref(redis_url, key_prefix)

    async def corrupt_event(self, store: BaseEventStorage, event: TaskEvent) -> None:
        """Stream entries cannot change: an entry beside it, as events_lib.lua writes one,
        whose events are not msgpack."""
        events = cast(RedisEventStorage, store)
        fields = {
            "ts": repr(event.timestamp),
            "q": event.queue,
            "y": EventType(event.type).value,
            "e": b"\x91\xc1 not msgpack",
        }
        await events.redis.xadd(events.key("ev"), fields)  # type: ignore[arg-type]
