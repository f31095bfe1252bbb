"""What a worker reports about one attempt (its log line, its events, its metrics) is
what the attempt did: real ``omniq worker`` processes, read as an operator reads them.

- A process-pool child that starts up slowly (its task module sleeps at import) does
  not charge its start-up to the first attempt it runs: not to its duration, nor to
  its timeout.
- A worker paused (SIGSTOP) past its lease, whose attempt then returns, has its
  completion refused: the attempt is reported as ``lease_lost`` (the log line; the
  ``interrupted`` outcome in the metrics), never as a success. So is one whose attempt
  then raises, its retry refused: never reported as ``retrying`` or ``retried``.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_workers import DEADLINE, WorkerProcess

from omniq.models import EventType, TaskState
from omniq.testing import until

#: How long a process-pool child's import of the task module takes: far more than the
#: body (0.2 s), so a duration that counts it cannot pass for one that does not.
IMPORT_DELAY = 5.0


def _outcome_line(w: WorkerProcess, task_id: str) -> re.Match[str] | None:
    return re.search(
        rf"task \S+ {task_id} (\w+) queue=\S+ attempt=1 duration=([\d.]+)s", w.output()
    )


@pytest.mark.slow
def test_a_slow_starting_child_is_not_charged_to_the_attempt_it_runs(
    producer: Any, start_worker: Any, worker_env: dict[str, str]
) -> None:
    worker_env["SLOW_CHILD_IMPORT"] = str(IMPORT_DELAY)
    w: WorkerProcess = start_worker("--pool", "process", "-c", "1")
    ref = producer.nap.delay(0.2)  # timeout 3 s: less than the child's start-up

    # Its timeout runs from the body's start, as docs/workers/pools.md says: the attempt
    # succeeds (checked last: first what it is about, its duration).
    left = producer.app.get_result(ref, timeout=DEADLINE)

    line = until(lambda: _outcome_line(w, ref.id), "the attempt's outcome line", deadline=DEADLINE)
    assert line[1] == "succeeded"
    logged = float(line[2])
    assert 0.2 <= logged < 2.0, f"logged duration={logged}s for a 0.2 s body:\n{w.output()}"

    (event,) = [e for e in producer.app.events(task_id=ref.id) if e.type is EventType.SUCCEEDED]
    assert 0.2 <= event.detail["duration"] < 2.0, event.detail

    s = w.wait_until(
        "the attempt's run time",
        lambda s: s.value("omniq_task_duration_seconds_count", task="shop.nap") == 1,
    )
    timed = s.value("omniq_task_duration_seconds_sum", task="shop.nap")
    assert 0.2 <= timed < 2.0, f"omniq_task_duration_seconds recorded {timed} s"
    # The deadline the body saw (current_task().deadline) was its whole timeout ahead.
    assert 2.0 < left <= 3.0, f"the body began {left:.3f} s before its deadline"


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"


def _write_locked(db: Path) -> bool:
    """Whether a process holds the SQLite file's write lock."""
    conn = sqlite3.connect(db, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def _pause(w: WorkerProcess, db: Path) -> None:
    """SIGSTOP the worker at a moment it holds no write lock on the store (a paused
    holder would stop the other worker too: SQLite has one writer)."""
    for _ in range(500):
        w.proc.send_signal(signal.SIGSTOP)
        until(lambda: _stopped(w.proc.pid), "the stop", deadline=DEADLINE)
        if not _write_locked(db):
            return
        w.proc.send_signal(signal.SIGCONT)
        time.sleep(0.003)
    pytest.fail("the worker held the SQLite write lock at every try")


@pytest.mark.slow
@pytest.mark.parametrize("fails", [False, True], ids=["returns", "raises"])
def test_a_worker_paused_past_its_lease_reports_its_refused_attempt_as_lease_lost(
    producer: Any, start_worker: Any, worker_env: dict[str, str], tmp_path: Path, fails: bool
) -> None:
    worker_env["OMNIQ_LEASE"] = "2"
    workers: list[WorkerProcess] = [start_worker("-c", "1") for _ in range(2)]
    for w in workers:  # both serve before the task is there
        w.wait_until("the worker's metrics", lambda s: s.value("omniq_worker_concurrency") == 1)
    folder = tmp_path / "stall"
    folder.mkdir()
    ref = producer.stall.delay(str(folder), fails)
    (first,) = until(lambda: list(folder.glob("attempt-*")), "the first attempt", deadline=DEADLINE)
    zombie = next(w for w in workers if first.name == f"attempt-{w.proc.pid}")
    winner = next(w for w in workers if w is not zombie)
    _pause(zombie, tmp_path / "q.db")
    try:
        # (its body blocks its event loop: resumed, it returns, or raises, before any
        # heartbeat could find the lease gone, and its completion, or its retry, goes
        # to the store)
        until(
            lambda: producer.app.get_task(ref.id).state is TaskState.SUCCEEDED,
            "the take-over by the other worker after the lease lapsed",
            deadline=DEADLINE,
        )
        (folder / "go").touch()
    finally:
        zombie.proc.send_signal(signal.SIGCONT)
    assert producer.app.get_result(ref, timeout=DEADLINE) == winner.proc.pid
    until(
        lambda: f"completion of task {ref.id} refused" in zombie.output(),
        "the zombie's refused completion",
        deadline=DEADLINE,
    )

    said = zombie.output()
    line = _outcome_line(zombie, ref.id)
    assert line is not None and line[1] == "lease_lost", f"the zombie logged:\n{said}"
    assert not re.search(rf"{ref.id} (succeeded|retrying|failed)", said), said
    s = zombie.scrape()
    for counted in ("succeeded", "retried", "failed"):
        assert s.value("omniq_tasks_total", task="shop.stall", outcome=counted) == 0, s.text
    assert s.value("omniq_tasks_total", task="shop.stall", outcome="interrupted") == 1
    assert s.value("omniq_task_duration_seconds_count", task="shop.stall") == 1
    assert s.value("omniq_tasks_in_progress", task="shop.stall") == 0
    s = winner.scrape()
    assert s.value("omniq_tasks_total", task="shop.stall", outcome="succeeded") == 1
