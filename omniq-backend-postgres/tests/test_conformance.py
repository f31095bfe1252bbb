"""The conformance suite against the real PostgreSQL server, one schema per test."""

from __future__ import annotations

from typing import Any, cast

import pytest

from omniq.interfaces import BaseEventStorage, BaseResultStorage, BaseTaskQueue
from omniq.models import TaskEvent
from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract
from omniq_backend_postgres.events import PostgresEventStorage
from omniq_backend_postgres.queue import PostgresTaskQueue
from omniq_backend_postgres.results import PostgresResultStorage


class TestPostgresQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, pg_ref: dict[str, Any]) -> dict[str, Any]:
        return pg_ref

    @pytest.fixture
    def task_queue_server_ref(self, task_queue_ref: dict[str, Any]) -> dict[str, Any]:
        return task_queue_ref

    async def corrupt_task(self, store: BaseTaskQueue, task_id: str) -> None:
        """The encoded task (column data) overwritten with bytes that are not msgpack."""
        await cast(PostgresTaskQueue, store).execute(
            "UPDATE {s}.tasks SET data = $2 WHERE id = $1", task_id, b"\xc1 not msgpack"
        )

    async def corrupt_schedule(self, store: BaseTaskQueue, schedule_id: str) -> None:
        await cast(PostgresTaskQueue, store).execute(
            "UPDATE {s}.schedules SET data = $2 WHERE id = $1", schedule_id, b"\xc1 not msgpack"
        )


class TestPostgresResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, pg_ref: dict[str, Any]) -> dict[str, Any]:
        return pg_ref

    async def corrupt_result(self, store: BaseResultStorage, task_id: str) -> None:
        await cast(PostgresResultStorage, store).execute(
            "UPDATE {s}.results SET data = $2 WHERE task_id = $1", task_id, b"\xc1 not msgpack"
        )


class TestPostgresEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, pg_ref: dict[str, Any]) -> dict[str, Any]:
        return pg_ref

    async def corrupt_event(self, store: BaseEventStorage, event: TaskEvent) -> None:
        """A detail that is JSON but not an object."""
        await cast(PostgresEventStorage, store).execute(
            "UPDATE {s}.events SET detail = '[1]'::jsonb WHERE id = $1", event.id
        )
