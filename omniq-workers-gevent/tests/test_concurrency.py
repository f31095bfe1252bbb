"""The point of the pool: many blocking waits at once, and patching at the right moment."""

from __future__ import annotations

from types import ModuleType

import pytest
from gevent_workers import StartWorker, finish

from omniq.models import TaskState


def busy_span(mod: ModuleType, count: int) -> float:
    """Seconds from the first task's start to the last one's finish (all must succeed)."""
    tasks = mod.app.list_tasks(states=[TaskState.SUCCEEDED], limit=count + 1)
    assert len(tasks) == count
    return max(t.finished_at for t in tasks) - min(t.started_at for t in tasks)


def run_blocking_batch(
    mod: ModuleType, start_worker: StartWorker, pool: str, concurrency: str, *extra: str
) -> float:
    mod.app.purge()
    mod.app.enqueue_many(mod.nap, [(0.2,) for _ in range(250)])
    mod.app.enqueue_many(mod.wait_on_socket, [(0.2,) for _ in range(250)])
    finish(start_worker(pool, concurrency, True, *extra), timeout=120)
    return busy_span(mod, 500)


@pytest.mark.slow
def test_500_blocking_tasks_finish_far_faster_on_gevent_than_on_the_thread_pool(
    producer, start_worker
):
    gevent = run_blocking_batch(producer, start_worker, "gevent", "500")
    thread = run_blocking_batch(producer, start_worker, "thread", "default")
    print(
        f"500 x 0.2 s blocking: gevent(500) {gevent:.2f} s, thread(default) {thread:.2f} s, "
        f"ratio {thread / gevent:.1f}"
    )
    # 10 threads need >= 10 s; 500 greenlets need 0.2 s plus reserving/writing overhead.
    assert thread / gevent > 3


@pytest.mark.slow
@pytest.mark.parametrize("late", [False, True], ids=["prepared", "patched-at-start"])
def test_names_bound_at_import_are_cooperative_only_when_patched_first(
    producer, start_worker, late
):
    producer.app.enqueue_many(producer.nap_bound, [(0.2,) for _ in range(10)])
    out = finish(start_worker("gevent", 10, True, *(["late"] if late else [])))
    span = busy_span(producer, 10)
    if late:  # `from time import sleep` kept the blocking sleep: the greenlets ran one by one
        assert span > 10 * 0.2 * 0.9
        assert "after the application was imported" in out
    else:
        assert span < 10 * 0.2 / 3
        assert "after the application was imported" not in out
