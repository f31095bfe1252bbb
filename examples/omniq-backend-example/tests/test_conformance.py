"""The OmniQ conformance suite on the example backend: one class per store kind.

Run with ``pytest tests/`` once the distribution is installed (its entry point must be
registered: the suite resolves refs through the plugin registry, as an app does).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from omniq.records import stand_in
from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract


@pytest.fixture
def namespace() -> str:
    """A fresh namespace per test (the suite needs an empty one each time)."""
    return f"example://{uuid.uuid4().hex}"


class TestExampleQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, namespace: str) -> str:
        return namespace

    async def corrupt_task(self, store: Any, task_id: str) -> None:
        """Make a stored task unreadable. This store keeps Task objects, not bytes, so it
        keeps what a store that decodes bytes hands out for a bad record: the stand-in."""
        old = store.ns.tasks[task_id]
        store.ns.tasks[task_id] = stand_in(
            task_id,
            "not msgpack",
            "the example namespace",
            name=old.name,
            queue=old.queue,
            state=old.state.value,
        )

    async def corrupt_schedule(self, store: Any, schedule_id: str) -> None:
        pytest.skip("this store keeps Schedule objects, not bytes: no read decodes one")


class TestExampleResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, namespace: str) -> str:
        return namespace

    async def corrupt_result(self, store: Any, task_id: str) -> None:
        pytest.skip("this store keeps TaskResult objects, not bytes: no read decodes one")


class TestExampleEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, namespace: str) -> str:
        return namespace

    async def corrupt_event(self, store: Any, event: Any) -> None:
        pytest.skip("this store keeps TaskEvent objects, not bytes: no read decodes one")
