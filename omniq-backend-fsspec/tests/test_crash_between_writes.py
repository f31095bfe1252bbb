"""A worker killed between a task record's rewrite and its index entry's move (file://).

A change of a task on a local queue is two writes: the record (``tasks/<id>``) and its
index entry (moved from the old state's directory to the new one's). A worker killed
between the two leaves the entry in a directory its record does not name, and only
whoever lists that directory puts it back. These tests stop a real worker process there
and ``kill -9`` it: the write that would come second fails (a directory it needs is a
regular file, as a full disk or an I/O error would fail it), the worker logs the failed
completion, and it is killed. A second worker must then bring the task to its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from omniq.models import TaskState

if TYPE_CHECKING:
    from conftest import Crash  # (a fixture's class: test modules cannot import it)


def _killed_in_a_failing_completion(crash: Crash, block: Path) -> str:
    """Run one task on a worker process; once it is running (its ``started`` event
    stored), turn the directory ``block`` into a regular file and let the task return;
    ``kill -9`` the worker as soon as it logs that writing the completion failed; put
    ``block`` back. Returns the task's id."""
    go = crash.tmp_path / "go"
    away = block.with_name(block.name + "-away")
    ref = crash.mod.hold.delay(str(go))
    first = crash.worker("first")
    try:
        crash.poll("started event", lambda: crash.app.events(task_id=ref.id, types=["started"]))
        if block.exists():
            block.rename(away)
        block.write_bytes(b"")
        go.touch()
        crash.kill_when_logged(first, "first", "writing 1 completions failed")
    finally:
        crash.kill(first)
    block.unlink()
    if away.exists():
        away.rename(block)
    return str(ref.id)


@pytest.mark.slow
def test_a_completion_killed_before_its_record_is_written_runs_again(crash: Crash) -> None:
    """The record write fails (``.tmp``, where records are written before their rename,
    is a file): the record still says ``running``. Its lease must lapse and the task run
    again; with the entry moved first, it had gone to the finished directory, listed
    only when the retention ends, and the task stayed ``running`` with nothing to lapse
    it (a chaos run's stuck task)."""
    task_id = _killed_in_a_failing_completion(crash, crash.queue / ".tmp")
    second = crash.worker("second")
    try:
        task = crash.poll(
            "task finished by the second worker",
            lambda: (t := crash.app.get_task(task_id)).state is TaskState.SUCCEEDED and t,
            deadline=crash.lease * 10,
            show=lambda: crash.app.get_task(task_id).state,
        )
        assert task.attempts == 2
        assert crash.app.get_result(task_id, timeout=10) == second.pid
        crash.poll("no entry left in running/", lambda: not crash.entries("running"))
        assert len(crash.entries("succeeded")) == 1
    finally:
        crash.stop(second)


@pytest.mark.slow
def test_a_completion_killed_before_its_entry_is_moved_is_finished(crash: Crash) -> None:
    """The entry's move fails (the finished directory is a file): whichever write came
    first, the task must end ``succeeded`` once, and its entry must reach the finished
    directory (the lease sweep lists ``running/`` and moves a stale entry), so that
    ``stats`` and the retention cleanup see it."""
    finished = crash.queue / "queues" / "default" / "succeeded"
    task_id = _killed_in_a_failing_completion(crash, finished)
    second = crash.worker("second")
    try:
        crash.poll(
            "task finished, its entry in succeeded/ only",
            lambda: (
                crash.app.get_task(task_id).state is TaskState.SUCCEEDED
                and not crash.entries("running")
                and len(crash.entries("succeeded")) == 1
            ),
            deadline=crash.lease * 10,
            show=lambda: (crash.app.get_task(task_id).state, crash.app.stats()),
        )
        assert crash.app.stats() == {"default": {TaskState.SUCCEEDED: 1}}
    finally:
        crash.stop(second)
