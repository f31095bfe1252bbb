"""The conformance suite on SQLite: each contract on its own file under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniq.interfaces import BaseEventStorage, BaseResultStorage, BaseTaskQueue
from omniq.models import TaskEvent
from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract


class TestSqliteQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/q.db"

    async def corrupt_task(self, store: BaseTaskQueue, task_id: str) -> None:
        """A column that does not decode (JSON text that is not JSON, a time that is text)."""
        await store.db.fetch(  # type: ignore[attr-defined]
            "UPDATE omniq_tasks SET error = '{not json', timeout = 'soon' WHERE id = ?", (task_id,)
        )

    async def corrupt_schedule(self, store: BaseTaskQueue, schedule_id: str) -> None:
        await store.db.fetch(  # type: ignore[attr-defined]
            "UPDATE omniq_schedules SET data = ? WHERE id = ?", (b"\xc1 not msgpack", schedule_id)
        )


class TestSqliteResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/r.db"

    async def corrupt_result(self, store: BaseResultStorage, task_id: str) -> None:
        await store.db.fetch(  # type: ignore[attr-defined]
            "UPDATE omniq_results SET error = '{not json', attempts = 'many' WHERE task_id = ?",
            (task_id,),
        )


class TestSqliteEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/e.db"

    async def corrupt_event(self, store: BaseEventStorage, event: TaskEvent) -> None:
        await store.db.fetch(  # type: ignore[attr-defined]
            "UPDATE omniq_events SET detail = '{not json' WHERE id = ?", (event.id,)
        )
