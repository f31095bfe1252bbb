"""The conformance suite: all three stores on local files, memory and S3 (moto's server)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import pytest

from omniq.interfaces import BaseEventStorage, BaseResultStorage, BaseTaskQueue
from omniq.models import TaskEvent
from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract
from omniq_backend_fsspec.events import FsspecEventStorage
from omniq_backend_fsspec.layout import record_path
from omniq_backend_fsspec.names import encode
from omniq_backend_fsspec.queue import FsspecTaskQueue
from omniq_backend_fsspec.results import FsspecResultStorage


def memory_ref() -> str:
    return f"memory://conformance-{uuid.uuid4().hex}"


class CorruptibleEvents:
    async def corrupt_event(self, store: BaseEventStorage, event: TaskEvent) -> None:
        """The batch file holding the event overwritten with bytes that are not msgpack."""
        files = cast(FsspecEventStorage, store).files
        for name in files.list("events"):
            if event.id.encode() in (files.read(f"events/{name}") or b""):
                files.write(f"events/{name}", b"\xc1 not msgpack")


class CorruptibleResults:
    async def corrupt_result(self, store: BaseResultStorage, task_id: str) -> None:
        path = f"results/{encode('task id', task_id)}"
        cast(FsspecResultStorage, store).files.write(path, b"\xc1 not msgpack")


class Corruptible:
    async def corrupt_task(self, store: BaseTaskQueue, task_id: str) -> None:
        """The task's record file overwritten with bytes that are not msgpack."""
        cast(FsspecTaskQueue, store).files.write(record_path(task_id), b"\xc1 not msgpack")

    async def corrupt_schedule(self, store: BaseTaskQueue, schedule_id: str) -> None:
        path = f"schedules/{encode('schedule id', schedule_id)}"
        cast(FsspecTaskQueue, store).files.write(path, b"\xc1 not msgpack")


class TestFileQueue(Corruptible, TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/omniq"


class TestMemoryQueue(Corruptible, TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self) -> str:
        return memory_ref()


class TestFileResults(CorruptibleResults, ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/omniq"


class TestMemoryResults(CorruptibleResults, ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self) -> str:
        return memory_ref()


class TestFileEvents(CorruptibleEvents, EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/omniq"


class TestMemoryEvents(CorruptibleEvents, EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self) -> str:
        return memory_ref()


class TestS3Queue(Corruptible, TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, s3_ref: dict[str, Any]) -> dict[str, Any]:
        return s3_ref


class TestS3Results(CorruptibleResults, ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, s3_ref: dict[str, Any]) -> dict[str, Any]:
        return s3_ref


class TestS3Events(CorruptibleEvents, EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, s3_ref: dict[str, Any]) -> dict[str, Any]:
        return s3_ref
