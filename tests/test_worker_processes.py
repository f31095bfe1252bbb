"""Workers as real OS processes on one SQLite file: signals, draining, sharing."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from omniq import OmniQ
from omniq.models import EventType, TaskState
from omniq.testing import until

APP = """
import os, time
from omniq import OmniQ

app = OmniQ(task_queue="sqlite:///{db}", worker={{"grace_period": {grace}}})

@app.task
def nap(seconds: float, marker: str = "") -> int:
    if marker:
        open(marker, "w").close()
    time.sleep(seconds)
    return os.getpid()

@app.task
async def anap(seconds: float, marker: str = "") -> None:
    import asyncio
    if marker:
        open(marker, "w").close()
    await asyncio.sleep(seconds)

if __name__ == "__main__":
    print("ready", flush=True)
    reason = app.run_worker(pool="thread", concurrency={concurrency}, burst={burst})
    print("stopped:", reason, flush=True)
"""


def write_app(
    tmp_path: Path, *, grace: float = 30, concurrency: int = 4, burst: bool = False
) -> Path:
    path = tmp_path / "procapp.py"
    path.write_text(
        textwrap.dedent(
            APP.format(db=tmp_path / "q.db", grace=grace, concurrency=concurrency, burst=burst)
        )
    )
    return path


def start_worker(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(path)],
        cwd=path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def producer(tmp_path: Path):
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        if "procapp" in sys.modules:
            del sys.modules["procapp"]
        return importlib.import_module("procapp")
    finally:
        sys.path.pop(0)


@pytest.mark.slow
def test_sigterm_drains_running_tasks_within_the_grace_period(tmp_path):
    write_app(tmp_path)
    mod = producer(tmp_path)
    marker = tmp_path / "started"
    ref = mod.nap.delay(1.0, str(marker))
    proc = start_worker(tmp_path / "procapp.py")
    try:
        until(marker.exists, "the task started", deadline=20.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "stopped: signal" in out
    assert mod.app.get_result(ref, timeout=1) == proc.pid
    mod.app.close()


@pytest.mark.slow
def test_sigterm_after_grace_releases_the_task_without_counting_the_attempt(tmp_path):
    write_app(tmp_path, grace=0)
    mod = producer(tmp_path)
    marker = tmp_path / "started"
    # A coroutine is stopped where it waits, so it is handed back at once. (A thread body
    # cannot be stopped: its task is left to its lease, see test_worker_faults.py.)
    ref = mod.anap.delay(30.0, str(marker))
    proc = start_worker(tmp_path / "procapp.py")
    try:
        until(marker.exists, "the task started", deadline=20.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    task = mod.app.get_task(ref.id)
    assert task.state is TaskState.PENDING and task.attempts == 0
    assert EventType.RELEASED in [e.type for e in mod.app.events(task_id=ref.id)]
    mod.app.close()


@pytest.mark.slow
def test_several_worker_processes_share_one_file_and_run_each_task_once(tmp_path):
    write_app(tmp_path, burst=True, concurrency=4)
    mod = producer(tmp_path)
    refs = mod.app.enqueue_many(mod.nap, [(0.0,) for _ in range(300)])
    procs = [start_worker(tmp_path / "procapp.py") for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    pids = Counter(mod.app.get_result(r, timeout=5) for r in refs)
    assert sum(pids.values()) == 300
    started = Counter(e.task_id for e in mod.app.events(types=["started"], limit=None))
    assert set(started) == {r.id for r in refs} and set(started.values()) == {1}
    mod.app.close()


def test_worker_exits_non_zero_with_the_reason_when_the_store_cannot_open(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    code = textwrap.dedent(f"""
        from omniq import OmniQ
        app = OmniQ(task_queue="sqlite:///{blocker}/q.db")
        app.run_worker(burst=True)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "not-a-dir" in run.stderr.splitlines()[-1]


def test_sync_facade_is_usable_from_many_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with OmniQ(task_queue=f"sqlite:///{tmp_path}/t.db") as app:

        @app.task
        def square(x: int) -> int:
            return x * x

        with ThreadPoolExecutor(8) as pool:
            refs = list(pool.map(lambda i: square.delay(i), range(40)))
        app.run_worker(burst=True)
        assert sorted(app.get_result(r, timeout=5) for r in refs) == sorted(
            i * i for i in range(40)
        )
