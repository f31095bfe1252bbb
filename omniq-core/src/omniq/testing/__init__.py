"""OmniQ's conformance suite: the tests every storage backend must pass.

A backend author subclasses one contract per store kind and overrides one fixture
returning a *ref* for an empty, isolated namespace (see ``docs/conformance.md``)::

    import pytest
    from omniq.testing import TaskQueueContract

    class TestMyQueue(TaskQueueContract):
        @pytest.fixture
        def task_queue_ref(self, tmp_path):
            return f"mydb:///{tmp_path}/q.db"

The suite resolves the ref through the plugin registry, opens the store (fixtures
``task_queue`` / ``result_storage`` / ``event_storage``), and checks every rule of the
docstrings in :mod:`omniq.interfaces`. Tests needing a :class:`~omniq.interfaces.Capability`
the store class does not declare are skipped (:func:`requires`). Tests run on asyncio
through anyio's pytest plugin; no pytest-asyncio configuration is needed.

It also holds what an application needs to test its own tasks without a server
(docs/testing.md): the pytest fixtures ``omniq_app``, ``omniq_sync_app``,
``omniq_clock`` and ``omniq_store_url`` (a ``pytest11`` plugin, :mod:`.plugin`), and
:func:`run_queued`, :class:`JumpClock` and :func:`use_stores` (:mod:`.inline`).

Importing this package imports pytest: it is for test code only
(``pip install 'omniq-core[testing]'``).
"""

from __future__ import annotations

from .capabilities import requires
from .events import EventStorageContract
from .factories import make_error, make_event, make_result, make_schedule, make_task
from .inline import JumpClock, run_queued, use_stores
from .polling import eventually, until, wait_past
from .queue import TaskQueueContract
from .results import ResultStorageContract
from .services import require_service

__all__ = [
    "EventStorageContract",
    "JumpClock",
    "ResultStorageContract",
    "TaskQueueContract",
    "eventually",
    "make_error",
    "make_event",
    "make_result",
    "make_schedule",
    "make_task",
    "require_service",
    "requires",
    "run_queued",
    "until",
    "use_stores",
    "wait_past",
]
