"""What a running system shows: the worker's log lines (text and JSON), the task's own
log records with its id, and omniq.current_task(), in every pool, from a real
``omniq worker`` process."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from omniq import Middleware, OmniQ, Task, current_task

OUTCOME_KEYS = {
    "ts",
    "level",
    "logger",
    "message",
    "outcome",
    "task_id",
    "task_name",
    "queue",
    "attempt",
    "duration",
    "worker_id",
}

TASKS = """
import asyncio, logging, time
from omniq import OmniQ, current_task

log = logging.getLogger("usercode")
app = OmniQ()


def where():
    t = current_task()
    return {"id": t.id, "name": t.name, "queue": t.queue, "attempt": t.attempt,
            "deadline": t.deadline, "enqueued_at": t.enqueued_at, "headers": t.headers}


@app.task
def inside():
    log.info("info inside")
    log.warning("warning inside")
    return where()


@app.task
async def inside_async():
    log.info("info inside")
    return where()


@app.task
def caught():
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("caught it")


@app.task(retry_backoff=0)
def boom():
    raise ValueError("no good")


@app.task
def slow():
    time.sleep(3)
"""


class Tagger(Middleware):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def before_enqueue(self, task: Task) -> None:
        task.headers["x-pool"] = self.tag


@pytest.fixture
def tasks_module(tmp_path: Path) -> str:
    name = f"omniq_observe_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TASKS))
    return name


def run_worker(
    tmp_path: Path, url: str, module: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "omniq.cli",
            "--task-queue",
            url,
            "worker",
            "--app",
            f"{module}:app",
            "--burst",
            "--no-progress",
            *args,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one object


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'omniq.db'}"


def test_json_logs_one_line_per_outcome(tmp_path: Path, url: str, tasks_module: str) -> None:
    app = OmniQ(task_queue=url)
    ok = app.enqueue(f"{tasks_module}.inside")
    bad = app.enqueue(f"{tasks_module}.boom", retries=1)  # (the module is not imported here)
    slow = app.enqueue(f"{tasks_module}.slow", timeout=0.2)
    unknown = app.enqueue("nosuch.task")
    app.close()
    proc = run_worker(tmp_path, url, tasks_module, "--pool", "thread", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stderr)
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    outcomes = [(r["task_id"], r["outcome"], r["attempt"]) for r in records if "outcome" in r]
    assert sorted(outcomes) == sorted(
        [
            (ok.id, "succeeded", 1),
            (bad.id, "retrying", 1),
            (bad.id, "failed", 2),
            (slow.id, "timed_out", 1),
            (unknown.id, "dead", 1),
        ]
    )
    for r in records:
        if "outcome" in r:
            assert r.keys() >= OUTCOME_KEYS, r
            assert r["queue"] == "default"
    [started] = [r for r in records if r.get("event") == "worker_started"]
    assert started["config"]["pool"] == "thread" and started["config"]["task_queue"] == url
    [stopped] = [r for r in records if r.get("event") == "worker_stopped"]
    assert stopped["reason"] == "burst" and stopped["counts"]["succeeded"] == 1
    failed = next(r for r in records if r.get("outcome") == "failed")
    assert failed["level"] == "ERROR" and failed["error"] == "ValueError: no good"


@pytest.mark.parametrize("pool", ["async", "thread", "process", "gevent"])
def test_task_logs_and_current_task_in_every_pool(
    tmp_path: Path, url: str, tasks_module: str, pool: str
) -> None:
    """A task's own log.info() is emitted (not dropped) with its task id, and
    current_task() describes it, in each pool (a process-pool child included)."""
    if pool == "gevent":
        pytest.importorskip("omniq_workers_gevent")
    app = OmniQ(task_queue=url)
    app.add_middleware(Tagger(pool))
    plain = app.enqueue(f"{tasks_module}.inside", timeout=30)
    coro = app.enqueue(f"{tasks_module}.inside_async", timeout=30)
    proc = run_worker(tmp_path, url, tasks_module, "--pool", pool, "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    try:
        records = json_lines(proc.stderr)
        mine = [r for r in records if r["logger"] == "usercode"]
        assert sorted((r["message"], r["task_id"]) for r in mine) == sorted(
            [("info inside", plain.id), ("warning inside", plain.id), ("info inside", coro.id)]
        )
        assert all(
            r["task_name"] in (f"{tasks_module}.inside", f"{tasks_module}.inside_async")
            for r in mine
        )
        for ref, name in ((plain, "inside"), (coro, "inside_async")):
            seen = app.get_result(ref.id, timeout=0)
            task = app.get_task(ref.id)
            assert seen["id"] == ref.id and seen["name"] == f"{tasks_module}.{name}"
            assert seen["queue"] == "default" and seen["attempt"] == 1
            assert seen["enqueued_at"] == pytest.approx(task.created_at)
            assert seen["deadline"] == pytest.approx(task.started_at + 30, abs=5)
            assert seen["headers"] == {"x-pool": pool}  # carried by the record to the pool
    finally:
        app.close()


def test_text_logs_name_the_task(tmp_path: Path, url: str, tasks_module: str) -> None:
    app = OmniQ(task_queue=url)
    ref = app.enqueue(f"{tasks_module}.inside")
    app.close()
    proc = run_worker(tmp_path, url, tasks_module, "--pool", "process")
    assert proc.returncode == 0, proc.stderr
    assert f"INFO usercode: info inside [task {tasks_module}.inside {ref.id}]" in proc.stderr
    assert (
        f"INFO omniq.task: task {tasks_module}.inside {ref.id} succeeded queue=default "
        "attempt=1 duration=" in proc.stderr
    )


def test_log_level_warning_hides_successes(tmp_path: Path, url: str, tasks_module: str) -> None:
    app = OmniQ(task_queue=url)
    app.enqueue(f"{tasks_module}.inside")
    app.close()
    proc = run_worker(tmp_path, url, tasks_module, "--log-level", "warning", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stderr)
    assert [r["message"] for r in records] == ["warning inside"]


def test_an_application_logging_set_up_gets_the_records(
    tmp_path: Path, url: str, tasks_module: str
) -> None:
    """The omniq logger propagates: an app that configured logging gets OmniQ's lines in
    its own format, and the CLI installs no handler of its own."""
    module = tmp_path / f"{tasks_module}.py"
    module.write_text(
        "import logging\nlogging.basicConfig(format='APP %(name)s %(message)s', "
        "level=logging.INFO)\n" + module.read_text()
    )
    app = OmniQ(task_queue=url)
    ref = app.enqueue(f"{tasks_module}.inside")
    app.close()
    proc = run_worker(tmp_path, url, tasks_module, "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert f"APP omniq.task task {tasks_module}.inside {ref.id} succeeded" in proc.stderr
    assert "APP usercode info inside" in lines
    assert not any(line.startswith("{") for line in lines)


def test_a_process_pool_child_s_traceback_reaches_the_worker_s_log(
    tmp_path: Path, url: str, tasks_module: str
) -> None:
    app = OmniQ(task_queue=url)
    ref = app.enqueue(f"{tasks_module}.caught")
    app.close()
    proc = run_worker(tmp_path, url, tasks_module, "--pool", "process", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    [record] = [r for r in json_lines(proc.stderr) if r["logger"] == "usercode"]
    assert record["message"] == "caught it" and record["level"] == "ERROR"
    assert record["task_id"] == ref.id
    assert "ZeroDivisionError: division by zero" in record["exc"]


def test_current_task_is_none_outside_a_task() -> None:
    assert current_task() is None


HOLD_FOREVER = """
from omniq.cli.ui import _StderrHandler
_StderrHandler.HOLD = 3600.0  # held lines go out only at MAX_HELD, a warning or the end
"""


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_outcome_line_is_written_by_a_burst_worker(
    tmp_path: Path, url: str, tasks_module: str, fmt: str
) -> None:
    """Lines come faster than the handler writes them: all are written, the worker's
    stopped line last, and in JSON each line is still one whole object."""
    module = tmp_path / f"{tasks_module}.py"
    module.write_text(module.read_text() + HOLD_FOREVER)
    app = OmniQ(task_queue=url)
    ids = {app.enqueue(f"{tasks_module}.inside_async").id for _ in range(300)}
    app.close()
    proc = run_worker(tmp_path, url, tasks_module, "--log-format", fmt)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    if fmt == "json":
        records = json_lines(proc.stderr)
        assert {r["task_id"] for r in records if r.get("outcome") == "succeeded"} == ids
        assert records[-1]["event"] == "worker_stopped"
    else:
        assert sum(" succeeded queue=default" in line for line in lines) == 300
        assert " stopped (burst)" in lines[-1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_held_lines_are_written_when_the_worker_is_stopped_by_a_signal(
    tmp_path: Path, url: str, tasks_module: str, sig: signal.Signals
) -> None:
    module = tmp_path / f"{tasks_module}.py"
    module.write_text(module.read_text() + HOLD_FOREVER)
    app = OmniQ(task_queue=url)
    refs = [app.enqueue(f"{tasks_module}.inside_async") for _ in range(50)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    log = tmp_path / "worker.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omniq.cli", "--task-queue", url, "worker", "--app",
             f"{tasks_module}:app", "--no-progress"],
            cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        for ref in refs:  # all done: their lines (but the first) are held, not written
            app.get_result(ref.id, timeout=30)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        proc.kill()
        app.close()
    text = log.read_text()
    assert all(f"{ref.id} succeeded" in text for ref in refs), text
    assert "stopped (signal)" in text


def test_the_cli_handler_writes_held_lines_to_the_stream_they_were_logged_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """click's test runner swaps sys.stderr: held lines go to the one they were logged
    under; a warning writes at once, with the lines before it."""
    from omniq.cli.ui import _StderrHandler, flush_logging, release_logging, setup_logging

    monkeypatch.setattr(_StderrHandler, "HOLD", 3600.0)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    first, second = io.StringIO(), io.StringIO()
    log = logging.getLogger("omniq.test")
    try:
        setup_logging(logging.INFO, "json")
        monkeypatch.setattr(sys, "stderr", first)
        log.info("one")  # after a quiet spell: at once
        log.info("two")
        log.info("three")
        assert [json.loads(line)["message"] for line in first.getvalue().splitlines()] == ["one"]
        log.warning("four")
        assert len(first.getvalue().splitlines()) == 4
        log.info("five")
        monkeypatch.setattr(sys, "stderr", second)
        log.info("six")
        assert json.loads(first.getvalue().splitlines()[-1])["message"] == "five"
        assert second.getvalue() == ""
        flush_logging()
        assert json.loads(second.getvalue())["message"] == "six"
    finally:
        release_logging()
        root.handlers[:] = handlers
        root.setLevel(level)
