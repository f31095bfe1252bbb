"""The conformance suite against the real PostgreSQL server, one schema per test."""

from __future__ import annotations

from typing import Any

import pytest

from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract


class TestPostgresQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, pg_ref: dict[str, Any]) -> dict[str, Any]:
        return pg_ref

    @pytest.fixture
    def task_queue_server_ref(self, task_queue_ref: dict[str, Any]) -> dict[str, Any]:
        return task_queue_ref


class TestPostgresResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, pg_ref: dict[str, Any]) -> dict[str, Any]:
        return pg_ref


class TestPostgresEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, pg_ref: dict[str, Any]) -> dict[str, Any]:
        return pg_ref
