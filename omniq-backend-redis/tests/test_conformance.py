"""The conformance suite on Redis: each test on its own random key prefix."""

from __future__ import annotations

from typing import Any

import pytest

from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract


def _ref(url: str, prefix: str) -> dict[str, Any]:
    return {"backend": "redis", "url": url, "key_prefix": prefix}


class TestRedisQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, redis_url: str, key_prefix: str) -> dict[str, Any]:
        return _ref(redis_url, key_prefix)

    @pytest.fixture
    def task_queue_server_ref(self, task_queue_ref: dict[str, Any]) -> dict[str, Any]:
        return task_queue_ref


class TestRedisResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, redis_url: str, key_prefix: str) -> dict[str, Any]:
        return _ref(redis_url, key_prefix)


class TestRedisEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, redis_url: str, key_prefix: str) -> dict[str, Any]:
        return _ref(redis_url, key_prefix)
