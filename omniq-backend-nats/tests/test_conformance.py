"""The conformance suite on NATS JetStream: each test on its own stream prefix."""

from __future__ import annotations

from typing import Any

import pytest

from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract


def _ref(url: str, prefix: str) -> dict[str, Any]:
    return {"backend": "nats", "url": url, "prefix": prefix}


class TestNatsQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, nats_url: str, nats_prefix: str) -> dict[str, Any]:
        return _ref(nats_url, nats_prefix)

    @pytest.fixture
    def task_queue_server_ref(self, task_queue_ref: dict[str, Any]) -> dict[str, Any]:
        return task_queue_ref


class TestNatsResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, nats_url: str, nats_prefix: str) -> dict[str, Any]:
        return _ref(nats_url, nats_prefix)


class TestNatsEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, nats_url: str, nats_prefix: str) -> dict[str, Any]:
        return _ref(nats_url, nats_prefix)
