"""The OmniQ conformance suite on the example backend: one class per store kind.

Run with ``pytest tests/`` once the distribution is installed (its entry point must be
registered: the suite resolves refs through the plugin registry, as an app does).
"""

from __future__ import annotations

import uuid

import pytest

from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract


@pytest.fixture
def namespace() -> str:
    """A fresh namespace per test (the suite needs an empty one each time)."""
    return f"example://{uuid.uuid4().hex}"


class TestExampleQueue(TaskQueueContract):
    @pytest.fixture
    def task_queue_ref(self, namespace: str) -> str:
        return namespace


class TestExampleResults(ResultStorageContract):
    @pytest.fixture
    def result_storage_ref(self, namespace: str) -> str:
        return namespace


class TestExampleEvents(EventStorageContract):
    @pytest.fixture
    def event_storage_ref(self, namespace: str) -> str:
        return namespace
