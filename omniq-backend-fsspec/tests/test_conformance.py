"""The conformance suite: all three stores on local files, memory and S3 (moto's server)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract


def memory_ref() -> str:
    return f"memory://conformance-{uuid.uuid4().hex}"


class TestFileQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/omniq"


class TestMemoryQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self) -> str:
        return memory_ref()


class TestFileResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/omniq"


class TestMemoryResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self) -> str:
        return memory_ref()


class TestFileEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/omniq"


class TestMemoryEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self) -> str:
        return memory_ref()


class TestS3Queue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, s3_ref: dict[str, Any]) -> dict[str, Any]:
        return s3_ref


class TestS3Results(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, s3_ref: dict[str, Any]) -> dict[str, Any]:
        return s3_ref


class TestS3Events(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, s3_ref: dict[str, Any]) -> dict[str, Any]:
        return s3_ref
