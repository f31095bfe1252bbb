"""A process killed while deleting a finished task (file://).

Deleting a task (its retention over, at cleanup; or purged) removes two files: the
record (``tasks/<id>``) and its index entry (the finished directory, filed under the
time it is due for deletion). Nothing but the entry leads to the record, so the record
must go first: a crash between the two then leaves the entry, which the next cleanup
lists again and deletes as an orphan. These tests make one of the two deletions fail
(the file is made immutable), ``kill -9`` the worker once it logs the failed cleanup,
and let a second worker, or a purge, finish.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from omniq import OmniQ

if TYPE_CHECKING:
    from conftest import Crash  # (a fixture's class: test modules cannot import it)

#: The retention of the task made here: it is due for deletion almost at once.
RETENTION = 0.05


def _finished_and_due(crash: Crash) -> tuple[Path, Path]:
    """A task cancelled before it ran, its retention over: its record and its entry."""
    producer = OmniQ(task_queue=crash.url, result_ttl=RETENTION)
    try:
        ref = producer.enqueue("crashapp.hold", "never")
        assert producer.cancel(ref.id)
        finished_at = producer.get_task(ref.id).finished_at
    finally:
        producer.close()
    assert finished_at is not None
    crash.poll("retention over", lambda: time.time() > finished_at + RETENTION)
    [record] = list((crash.queue / "tasks").iterdir())
    [entry] = crash.entries("cancelled")
    return record, entry


def _killed_in_a_failing_cleanup(crash: Crash, undeletable: Path) -> None:
    """Start a worker (it cleans up as it starts) with ``undeletable`` made so, and
    ``kill -9`` it once it logs the failed cleanup. The file is made so before the
    worker starts: made after, a worker quicker than this process deleted it first."""
    with crash.undeletable(undeletable):
        first = crash.worker("first")
        try:
            crash.kill_when_logged(first, "first", "maintenance failed")
        finally:
            crash.kill(first)


def _nothing_left(crash: Crash) -> bool:
    return not list((crash.queue / "tasks").iterdir()) and not crash.entries("cancelled")


def _second_worker_deletes_what_is_left(crash: Crash) -> None:
    """Start a second worker and wait until its cleanup left no record and no entry."""
    second = crash.worker("second")
    try:
        crash.poll(
            "record and entry deleted by the second worker",
            lambda: _nothing_left(crash),
            show=lambda: (list(crash.queue.rglob("*")), crash.log("second")),
        )
    finally:
        crash.stop(second)


@pytest.mark.slow
def test_a_drop_killed_before_the_record_is_deleted_is_finished(crash: Crash) -> None:
    """The record's deletion fails. Whichever file went first, a second worker's
    cleanup must delete the task; with the entry deleted first, the record stayed,
    listed by nothing, forever."""
    record, _entry = _finished_and_due(crash)
    _killed_in_a_failing_cleanup(crash, record)
    _second_worker_deletes_what_is_left(crash)
    assert crash.app.stats() == {}


@pytest.mark.parametrize("finisher", ["worker", "purge"])
@pytest.mark.slow
def test_a_drop_killed_before_the_entry_is_deleted_leaves_a_stray_entry(
    crash: Crash, finisher: str
) -> None:
    """The entry's deletion fails: the record is already gone (it goes first), and the
    entry left behind must be tolerated, and removed without being counted, by whoever
    lists it next: a second worker's cleanup, or a purge (which deleted no task)."""
    record, entry = _finished_and_due(crash)
    _killed_in_a_failing_cleanup(crash, entry)
    assert not record.exists()
    assert entry.exists()
    if finisher == "purge":
        assert crash.app.purge() == 0
        assert _nothing_left(crash)
    else:
        _second_worker_deletes_what_is_left(crash)
    assert crash.app.stats() == {}
