"""The task-queue contract: every rule of :class:`omniq.interfaces.BaseTaskQueue` and
the delivery contract of docs/architecture.md, as one test class to subclass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from ..interfaces import BaseTaskQueue
from ..registry import StoreKind
from .arguments import QueueArgumentTests
from .base import StoreContract, abstract_ref, open_store
from .idle import IdleWaitTests
from .purge import PurgeTests
from .queue_concurrency import ConcurrencyTests
from .queue_delivery import DeliveryTests
from .queue_dependencies import DependencyTests
from .queue_fan_in import RunOnFailureTests
from .queue_finishing import FinishTests
from .queue_limits import LimitTests
from .queue_outage import OutageTests
from .queue_paging import PagingTests
from .queue_records import RecordTests
from .queue_schedules import ScheduleTests
from .queue_storage import StorageTests
from .queue_workers import WorkerRegistryTests
from .start import StartSweepTests

__all__ = ["TaskQueueContract"]


class TaskQueueContract(
    StoreContract,
    StorageTests,
    DeliveryTests,
    FinishTests,
    DependencyTests,
    RunOnFailureTests,
    ScheduleTests,
    ConcurrencyTests,
    OutageTests,
    RecordTests,
    PagingTests,
    QueueArgumentTests,
    WorkerRegistryTests,
    LimitTests,
    IdleWaitTests,
    StartSweepTests,
    PurgeTests,
):
    """Conformance tests for a :class:`~omniq.interfaces.BaseTaskQueue`.

    Subclass it in your backend's ``tests/test_conformance.py`` and override
    :meth:`task_queue_ref`::

        class TestMyQueue(TaskQueueContract):
            @pytest.fixture
            def task_queue_ref(self, tmp_path):
                return f"mydb:///{tmp_path}/q.db"

    Override :meth:`corrupt_task` too (the suite corrupts a stored record through it).
    Tests that need ``DELAYED``, ``PRIORITY``, ``SCHEDULES``, ``DEPENDENCIES``,
    ``CROSS_PROCESS``, ``BLOCKING_RESERVE`` or ``LIMITS`` skip unless the class declares it.
    """

    kind: ClassVar[StoreKind] = "task_queue"

    @pytest.fixture
    def task_queue_ref(self) -> Any:
        """Override: a URL or mapping for an EMPTY task-queue namespace of your backend."""
        raise abstract_ref("task_queue", 'f"mydb:///{tmp_path}/queue.db"')

    @pytest.fixture
    async def task_queue(self, task_queue_ref: Any) -> AsyncIterator[BaseTaskQueue]:
        """The store under test, opened from ``task_queue_ref`` and closed afterwards."""
        async with open_store("task_queue", task_queue_ref) as store:
            yield store
