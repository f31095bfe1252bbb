"""The process pool's timeout measures the task's body, not the child's start-up."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap

import pytest

from omniq.errors import TaskTimeoutError
from omniq.worker.pools import ProcessPool


@pytest.fixture
def slow_module(tmp_path, monkeypatch):
    """A task module that takes 1.5 s to import: a fresh child pays that before the body."""
    (tmp_path / "slow_import_tasks.py").write_text(
        textwrap.dedent(
            """
            import time

            time.sleep(1.5)


            def quick(x):
                return x * 2


            def endless():
                while True:
                    time.sleep(0.05)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("slow_import_tasks")
    yield module
    sys.modules.pop("slow_import_tasks", None)


def test_a_child_s_start_up_is_not_charged_to_the_task_s_timeout(slow_module):
    async def scenario() -> int:
        pool = ProcessPool(1)
        try:
            return await pool.run(slow_module.quick, (21,), {}, 1.0)
        finally:
            await pool.stop()

    assert asyncio.run(scenario()) == 42


def test_a_body_over_its_timeout_is_still_stopped(slow_module):
    async def scenario() -> None:
        pool = ProcessPool(1)
        try:
            await pool.run(slow_module.endless, (), {}, 0.5)
        finally:
            await pool.stop()

    with pytest.raises(TaskTimeoutError, match=r"timeout of 0\.5 s"):
        asyncio.run(scenario())
