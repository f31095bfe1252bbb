"""A success whose completion is never written still gets its one report: a real
``omniq worker`` process, its SQLite file locked by the test past the worker's patience.

The body returns while another process holds the file's write lock; every write of the
completion fails; the worker is stopped (SIGTERM), and its writer gives up on the
completion (the lease lapses, the task runs again). The middleware was told
``after_success``; it must then be told ``after_completion(accepted=False)``, as for a
refused completion (the Prometheus plugin counts ``interrupted``, the OpenTelemetry
span ends), and the worker logs the attempt's outcome, never ``succeeded``. So with a
body that raises: its dead letter is never written, the middleware told ``on_failure``
is told ``after_failure_completion(accepted=False)``, and the worker logs
``lease_lost``, never ``failed``.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from omniq import OmniQ
from omniq.testing import until

DEADLINE = 60.0

APP = """
import os, pathlib, time
from omniq import Middleware, OmniQ

MARKS = pathlib.Path(os.environ["MARKS"])
URL = os.environ["STORE"]

def mark(text):
    with MARKS.open("a") as f:
        f.write(text + "\\n")

class Marks(Middleware):
    async def after_success(self, task, value):
        mark(f"after_success {task.id}")

    def after_completion(self, task, *, accepted):
        mark(f"after_completion {task.id} {accepted}")

    async def on_failure(self, task, exc, *, will_retry):
        mark(f"on_failure {task.id} {type(exc).__name__}")

    def after_failure_completion(self, task, exc, *, will_retry, accepted):
        mark(f"after_failure_completion {task.id} {accepted}")

app = OmniQ(task_queue=URL, result_storage=URL, event_storage=URL)
app.aio.add_middleware(Marks())

@app.task(name="t.hold")
def hold(folder: str, fail: bool = False) -> str:
    here = pathlib.Path(folder)
    (here / "running").touch()
    deadline = time.monotonic() + 60
    while not (here / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    if fail:
        raise RuntimeError("it failed on purpose")
    return "done"
"""


@pytest.mark.slow
@pytest.mark.parametrize("fails", [False, True], ids=["returns", "raises"])
def test_an_outcome_whose_write_is_given_up_is_told_to_middleware(
    tmp_path: Path, fails: bool
) -> None:
    db = tmp_path / "q.db"
    url = f"sqlite:///{db}?busy_timeout=0.2"
    (tmp_path / "marks_app.py").write_text(textwrap.dedent(APP))
    marks = tmp_path / "marks.txt"
    marks.touch()
    env = dict(os.environ, MARKS=str(marks), STORE=url)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    log = tmp_path / "worker.log"
    producer = OmniQ(task_queue=url, result_storage=url, event_storage=url)

    @producer.task(name="t.hold")
    def hold(folder: str, fail: bool = False) -> str:  # (the worker's module runs the body)
        return folder

    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "omniq.cli", "worker", "--app", "marks_app:app", "-c", "1"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    lock: sqlite3.Connection | None = None
    try:
        ref = hold.delay(str(tmp_path), fails)
        until(lambda: (tmp_path / "running").exists(), "the body started", deadline=DEADLINE)
        # Every write of the worker now fails (after busy_timeout): its completion too.
        lock = sqlite3.connect(db, isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")
        (tmp_path / "release").touch()
        ended = f"on_failure {ref.id}" if fails else f"after_success {ref.id}"
        until(lambda: ended in marks.read_text(), "the body's end", deadline=DEADLINE)
        until(
            lambda: "writing 1 completions failed" in log.read_text(),
            "a failed write",
            deadline=DEADLINE,
        )
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not stop:\n{log.read_text()}")
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        producer.close()
    output = log.read_text()
    assert "giving up on 1 completions" in output, output
    # Told once, as not accepted (the task runs again): a span ends, a count is made.
    point = "after_failure_completion" if fails else "after_completion"
    told = re.findall(rf"(\w+) {ref.id} (True|False)", marks.read_text())
    assert told == [(point, "False")], (marks.read_text(), output)
    # Its outcome line says so; it is no success nor failure, and the exit summary
    # counts none.
    assert re.search(rf"{ref.id} lease_lost .*could not be written", output), output
    assert not re.search(rf"{ref.id} (succeeded|failed|retrying)", output), output
    assert not re.search(r"(succeeded|failed)=", output.split("stopped (")[-1]), output
