"""A fan-in callback's attempt starts when its body does, not before its parents'
results were read: a real ``omniq worker`` process whose result store (a SQLite file of
its own) the test holds locked, so the parent's result is written late.

The callback is released by its parent's completion (in the queue's file) before the
parent's result is written (in the other file); the worker reserves it and waits for
that result (``PARENT_RESULT_WAIT``). That wait is not the body's: its duration (the
outcome line) and its ``current_task().deadline`` run from the body's start, as its
timeout does.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from omniq import OmniQ
from omniq.testing import until

DEADLINE = 60.0
#: How long the test holds the result store locked once the callback waits for it.
HELD = 2.0
TIMEOUT = 30.0

APP = """
import os, pathlib, time
from omniq import OmniQ, current_task

app = OmniQ(task_queue=os.environ["QUEUE"], result_storage=os.environ["RESULTS"],
            event_storage=os.environ["QUEUE"])

@app.task(name="t.parent")
def parent(folder: str) -> int:
    here = pathlib.Path(folder)
    (here / "running").touch()
    deadline = time.monotonic() + 60
    while not (here / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return 1

@app.task(name="t.callback", timeout={timeout})
def callback(results: list) -> float:
    task = current_task()
    return task.deadline - time.time()
"""


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["async", "thread", "process"])
def test_a_fan_in_callback_is_not_charged_its_wait_for_parent_results(
    tmp_path: Path, pool: str
) -> None:
    queue, results = f"sqlite:///{tmp_path / 'q.db'}", f"sqlite:///{tmp_path / 'r.db'}"
    (tmp_path / "fanin_app.py").write_text(textwrap.dedent(APP.format(timeout=TIMEOUT)))
    env = dict(os.environ, QUEUE=queue, RESULTS=results)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    producer = OmniQ(task_queue=queue, result_storage=results, event_storage=queue)

    @producer.task(name="t.parent")
    def parent(folder: str) -> int:  # (the worker's module runs the bodies)
        return 1

    @producer.task(name="t.callback", timeout=TIMEOUT)
    def callback(results: list[int]) -> float:
        return 0.0

    log = tmp_path / "worker.log"
    args = ["-c", "2", "--pool", pool]
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "omniq.cli", "worker", "--app", "fanin_app:app", *args],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    lock: sqlite3.Connection | None = None
    try:
        first = parent.delay(str(tmp_path))
        ref = producer.chord([first], callback)
        until(lambda: (tmp_path / "running").exists(), "the parent started", deadline=DEADLINE)
        # The parent's result waits for this lock; its completion (the queue's file) not.
        lock = sqlite3.connect(tmp_path / "r.db", isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")
        (tmp_path / "release").touch()
        until(
            lambda: producer.get_task(ref.id).state.value == "running",
            "the callback reserved, waiting for its parent's result",
            deadline=DEADLINE,
        )
        time.sleep(HELD)  # (the wait the callback must not be charged)
        lock.rollback()
        lock.close()
        lock = None
        left = producer.get_result(ref, timeout=DEADLINE)
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
        worker.terminate()
        try:
            worker.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        producer.close()
    output = log.read_text()
    line = re.search(rf"{ref.id} succeeded queue=\S+ attempt=1 duration=([\d.]+)s", output)
    assert line is not None, output
    assert float(line.group(1)) < HELD / 2, output
    assert left > TIMEOUT - HELD / 2, (left, output)
