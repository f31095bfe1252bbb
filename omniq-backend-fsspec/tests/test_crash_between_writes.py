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

import importlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from omniq.models import TaskState
from omniq.testing import until

LEASE = 2.0

APP = """
import logging, os, pathlib, sys, time
from omniq import OmniQ

app = OmniQ(task_queue={url!r}, lease={lease})

@app.task
def hold(go: str) -> int:
    until = time.monotonic() + 60
    while not pathlib.Path(go).exists() and time.monotonic() < until:
        time.sleep(0.005)
    return os.getpid()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True)
    app.run_worker(pool="thread", concurrency=1)
"""


@pytest.fixture
def crashapp(tmp_path: Path) -> Iterator[ModuleType]:
    """The app module, written to ``tmp_path`` and imported here (the producer); its
    queue is ``tmp_path/q`` on ``file://``."""
    script = tmp_path / "crashapp.py"
    script.write_text(textwrap.dedent(APP.format(url=f"file://{tmp_path / 'q'}", lease=LEASE)))
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("crashapp", None)
        mod = importlib.import_module("crashapp")
    finally:
        sys.path.pop(0)
    try:
        yield mod
    finally:
        mod.app.close()
        sys.modules.pop("crashapp", None)


def _worker(tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    with (tmp_path / f"{name}.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(tmp_path / "crashapp.py")], cwd=tmp_path, stdout=out, stderr=out
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _entries(tmp_path: Path, state: str) -> list[Path]:
    return [p for p in (tmp_path / "q" / "queues" / "default" / state).rglob("*") if p.is_file()]


def _killed_in_a_failing_completion(tmp_path: Path, mod: ModuleType, block: Path) -> str:
    """Run one task on a worker process; once it is running (its ``started`` event
    stored), turn the directory ``block`` into a regular file and let the task return;
    ``kill -9`` the worker as soon as it logs that writing the completion failed; put
    ``block`` back. Returns the task's id."""
    go = tmp_path / "go"
    away = block.with_name(block.name + "-away")
    ref = mod.hold.delay(str(go))
    first = _worker(tmp_path, "first")
    try:
        until(
            lambda: mod.app.events(task_id=ref.id, types=["started"]),
            "started event",
            deadline=30.0,
        )
        if block.exists():
            block.rename(away)
        block.write_bytes(b"")
        go.touch()
        log = tmp_path / "first.log"
        until(
            lambda: "writing 1 completions failed" in log.read_text(),
            "failed completion",
            deadline=30.0,
        )
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    block.unlink()
    if away.exists():
        away.rename(block)
    return str(ref.id)


@pytest.mark.slow
def test_a_completion_killed_before_its_record_is_written_runs_again(
    tmp_path: Path, crashapp: ModuleType
) -> None:
    """The record write fails (``.tmp``, where records are written before their rename,
    is a file): the record still says ``running``. Its lease must lapse and the task run
    again; with the entry moved first, it had gone to the finished directory, listed
    only when the retention ends, and the task stayed ``running`` with nothing to lapse
    it (a chaos run's stuck task)."""
    task_id = _killed_in_a_failing_completion(tmp_path, crashapp, tmp_path / "q" / ".tmp")
    second = _worker(tmp_path, "second")
    try:
        task = until(
            lambda: (t := crashapp.app.get_task(task_id)).state is TaskState.SUCCEEDED and t,
            "task finished by the second worker",
            deadline=LEASE * 10,
            show=lambda: crashapp.app.get_task(task_id).state,
        )
        assert task.attempts == 2
        assert crashapp.app.get_result(task_id, timeout=10) == second.pid
        until(lambda: not _entries(tmp_path, "running"), "no entry left in running/", deadline=30.0)
        assert len(_entries(tmp_path, "succeeded")) == 1
    finally:
        _stop(second)


@pytest.mark.slow
def test_a_completion_killed_before_its_entry_is_moved_is_finished(
    tmp_path: Path, crashapp: ModuleType
) -> None:
    """The entry's move fails (the finished directory is a file): whichever write came
    first, the task must end ``succeeded`` once, and its entry must reach the finished
    directory (the lease sweep lists ``running/`` and moves a stale entry), so that
    ``stats`` and the retention cleanup see it."""
    finished = tmp_path / "q" / "queues" / "default" / "succeeded"
    task_id = _killed_in_a_failing_completion(tmp_path, crashapp, finished)
    second = _worker(tmp_path, "second")
    try:
        until(
            lambda: (
                crashapp.app.get_task(task_id).state is TaskState.SUCCEEDED
                and not _entries(tmp_path, "running")
                and len(_entries(tmp_path, "succeeded")) == 1
            ),
            "task finished, its entry in succeeded/ only",
            deadline=LEASE * 10,
            show=lambda: (crashapp.app.get_task(task_id).state, crashapp.app.stats()),
        )
        assert crashapp.app.stats() == {"default": {TaskState.SUCCEEDED: 1}}
    finally:
        _stop(second)
