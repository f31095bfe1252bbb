"""The same worker scenarios on the thread pool and the gevent pool: results, events,
retries, timeouts, dependencies, cancellation and SIGTERM behave alike. Each worker is a
subprocess (gevent's monkey-patching is process-wide)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import ModuleType

import pytest
from gevent_workers import StartWorker, finish

from omniq.errors import TaskFailedError, TaskTimeoutError
from omniq.models import EventType, TaskState
from omniq.testing import until

POOLS = ["thread", "gevent"]


def types_of(mod: ModuleType, task_id: str) -> list[EventType]:
    return [e.type for e in mod.app.events(task_id=task_id)]


def run_scenarios(
    mod: ModuleType, start_worker: StartWorker, tmp_path: Path, pool: str, *extra: str
) -> dict[str, tuple[str, list[EventType], int]]:
    """Enqueue one task per scenario, run a burst worker, return each task's outcome."""
    app = mod.app
    tmp_path.mkdir()
    refs = {
        "success": mod.nap.delay(0.01),
        "socket": mod.wait_on_socket.delay(0.05),
        "retry": mod.flaky.delay(str(tmp_path / "attempts")),
        "failure": mod.boom.delay(),
        "timeout": mod.too_slow.delay(),
    }
    parent = mod.step.delay("parent")
    refs["parent"] = parent
    refs["child"] = app.enqueue(mod.step, "child", depends_on=[parent.id])
    refs["orphan"] = app.enqueue(mod.step, "orphan", depends_on=[refs["failure"].id])
    out = finish(start_worker(pool, 4, True, *extra))
    assert "stopped: burst" in out

    assert app.get_result(refs["success"], timeout=5) > 0
    assert app.get_result(refs["socket"], timeout=5) == "timed out"
    assert app.get_result(refs["retry"], timeout=5) == "ok on attempt 2"
    with pytest.raises(ValueError, match="boom"):
        app.get_result(refs["failure"], timeout=5)
    with pytest.raises(TaskTimeoutError, match=r"timeout of 0\.3 s"):
        app.get_result(refs["timeout"], timeout=5)
    assert app.get_result(refs["child"], timeout=5) == "child"
    with pytest.raises(TaskFailedError):
        app.get_result(refs["orphan"], timeout=5)
    outcome = {}
    for name, ref in refs.items():
        task = app.get_task(ref.id)
        outcome[name] = (task.state.value, types_of(mod, ref.id), task.attempts)
    return outcome


@pytest.mark.slow
def test_gevent_behaves_exactly_like_the_thread_pool(producer, start_worker, tmp_path):
    thread = run_scenarios(producer, start_worker, tmp_path / "thread", "thread")
    producer.app.purge()
    gevent = run_scenarios(producer, start_worker, tmp_path / "gevent", "gevent")
    assert gevent == thread
    assert thread["retry"] == (
        "succeeded",
        [
            EventType.ENQUEUED,
            EventType.STARTED,
            EventType.FAILED,
            EventType.RETRYING,
            EventType.STARTED,
            EventType.SUCCEEDED,
        ],
        2,
    )
    assert thread["timeout"][0] == TaskState.DEAD.value and thread["timeout"][2] == 2
    assert thread["orphan"][0] == TaskState.CANCELLED.value


@pytest.mark.slow
@pytest.mark.parametrize("pool", POOLS)
def test_sigterm_drains_running_tasks(producer, start_worker, tmp_path, pool):
    marker = tmp_path / "started"
    ref = producer.nap.delay(1.0, str(marker))
    proc = start_worker(pool, 4, False)
    until(marker.exists, "the task started", deadline=20.0)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc, timeout=30)
    assert "stopped: signal" in out
    assert producer.app.get_result(ref, timeout=1) == proc.pid


@pytest.mark.slow
@pytest.mark.parametrize("pool", POOLS)
def test_sigterm_after_the_grace_period_releases_the_task_uncounted(
    producer, start_worker, tmp_path, pool
):
    marker = tmp_path / "started"
    ref = producer.nap.delay(3.0, str(marker))
    proc = start_worker(pool, 4, False, grace=0)
    until(marker.exists, "the task started", deadline=20.0)
    proc.send_signal(signal.SIGTERM)
    finish(proc, timeout=30)
    task = producer.app.get_task(ref.id)
    if pool == "thread":  # a thread body cannot be stopped: never handed back, left to its lease
        assert task.state is TaskState.RUNNING
        assert EventType.RELEASED not in types_of(producer, ref.id)
    else:  # the greenlet is killed where it sleeps
        assert task.state is TaskState.PENDING and task.attempts == 0
        assert EventType.RELEASED in types_of(producer, ref.id)


@pytest.mark.slow
def test_a_cancelled_task_is_killed_in_its_greenlet(producer, start_worker, tmp_path):
    started, after = tmp_path / "started", tmp_path / "after"
    ref = producer.until_cancelled.delay(str(started), str(after))
    proc = start_worker("gevent", 4, True)
    until(started.exists, "the task started", deadline=20.0)
    t0 = time.monotonic()
    assert producer.app.cancel(ref.id)
    finish(proc, timeout=30)  # the heartbeat sees the lease gone and stops the call
    assert time.monotonic() - t0 < 10
    assert producer.app.get_task(ref.id).state is TaskState.CANCELLED
    assert not after.exists()
