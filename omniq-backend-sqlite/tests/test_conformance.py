"""The conformance suite on SQLite: each contract on its own file under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract


class TestSqliteQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/q.db"


class TestSqliteResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/r.db"


class TestSqliteEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/e.db"
