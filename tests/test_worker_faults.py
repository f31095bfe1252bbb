"""The worker under faults, as real OS processes against the real stores: a retry due at
once, kill -9 of a process-pool child, a timeout beside healthy tasks, a forced stop
while thread bodies run, and ``started`` events of long tasks."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq.models import EventType, TaskState
from omniq.testing import until
from omniq.testing.services import require_service

REDIS_URL = os.environ.get("OMNIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

APP = """
import os, time
from pathlib import Path
from omniq import OmniQ

app = OmniQ(task_queue={ref!r}, lease={lease}, worker={{"grace_period": 0}})


@app.task(retries=3, retry_backoff=0)
def flaky(counter: str, fail_times: int, pause: float = 0.02) -> int:
    time.sleep(pause)  # the slot is busy while the retry of another one is written
    path = Path(counter)
    runs = int(path.read_text() or 0) + 1 if path.exists() else 1
    path.write_text(str(runs))
    if runs <= fail_times:
        raise RuntimeError(f"run {{runs}} fails on purpose")
    return runs


@app.task
def body(folder: str, name: str, seconds: float = 0.0) -> int:
    # Records each start and end with the pid of the process that ran it. Sleeps while
    # folder/slow exists (up to `seconds`), so a test can let a second run go fast.
    root = Path(folder)
    (root / f"start-{{name}}-{{os.getpid()}}-{{time.monotonic_ns()}}").touch()
    end = time.monotonic() + seconds
    while time.monotonic() < end and (root / "slow").exists():
        time.sleep(0.05)
    (root / f"end-{{name}}-{{os.getpid()}}-{{time.monotonic_ns()}}").touch()
    return os.getpid()


@app.task
async def anap(seconds: float) -> None:
    import asyncio
    await asyncio.sleep(seconds)


if __name__ == "__main__":
    import sys
    pool, concurrency, prefetch = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    app.run_worker(pool=pool, concurrency=concurrency,
                   prefetch=None if prefetch == "default" else int(prefetch))
"""


def _drop_pg_schema(url: str, schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def _drop_redis_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store_ref(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """One store for all three roles, fresh per test."""
    name = f"omniq_t_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'q.db'}"
    elif request.param == "redis":
        pytest.importorskip("omniq_backend_redis")
        require_service("Redis", REDIS_URL)
        yield {"backend": "redis", "url": REDIS_URL, "key_prefix": name}
        _drop_redis_prefix(REDIS_URL, name)
    else:
        pytest.importorskip("omniq_backend_postgres")
        require_service("PostgreSQL", POSTGRES_URL)
        yield {"backend": "postgres", "url": POSTGRES_URL, "schema": name, "max_size": 4}
        _drop_pg_schema(POSTGRES_URL, name)


class Scene:
    """The app module written to a temporary folder, imported here to enqueue and read,
    and started as worker processes."""

    def __init__(self, tmp_path: Path, ref: Any, lease: float) -> None:
        self.folder = tmp_path
        module = f"faultapp_{uuid.uuid4().hex[:8]}"
        self.path = tmp_path / f"{module}.py"
        self.path.write_text(textwrap.dedent(APP.format(ref=ref, lease=lease)))
        sys.path.insert(0, str(tmp_path))
        try:
            self.mod = importlib.import_module(module)
        finally:
            sys.path.pop(0)
        self.app = self.mod.app
        self.procs: list[subprocess.Popen[str]] = []

    def worker(self, pool: str, concurrency: int, prefetch: str = "0") -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(self.path), pool, str(concurrency), prefetch],
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def cli_worker(self, pool: str, concurrency: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "omniq.cli",
                "worker",
                "--app",
                f"{self.path.stem}:app",
                "--pool",
                pool,
                "-c",
                str(concurrency),
                "--prefetch",
                "0",
                "--grace-period",
                "0",
                "--no-progress",
            ],
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(self.folder)},
        )
        self.procs.append(proc)
        return proc

    def marks(self, kind: str, name: str = "") -> list[tuple[str, int]]:
        """(task name, pid) of each start or end mark in the folder."""
        found = []
        for p in self.folder.glob(f"{kind}-{name}*" if name else f"{kind}-*"):
            _, task, pid, _ = p.name.split("-")
            found.append((task, int(pid)))
        return found

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            assert proc.stdout is not None
            proc.stdout.close()  # not read: a pool child left behind may hold it open
        self.app.close()


@pytest.fixture
def scene_factory(tmp_path: Path) -> Iterator[Callable[..., Scene]]:
    scenes: list[Scene] = []

    def make(ref: Any, lease: float = 30.0) -> Scene:
        scene = Scene(tmp_path, ref, lease)
        scenes.append(scene)
        return scene

    yield make
    for scene in scenes:
        scene.close()


@pytest.mark.slow
def test_a_retry_due_at_once_runs_promptly_on_the_same_worker(store_ref, scene_factory, tmp_path):
    """The worker that wrote the retry may reserve the task again before it forgets the
    old attempt, while its one slot runs the next task (the new reservation waits in the
    prefetch backlog); the new reservation must run, not wait out a whole lease."""
    scene = scene_factory(store_ref, lease=30.0)
    refs = [scene.mod.flaky.delay(str(tmp_path / f"count-{i}"), 2) for i in range(20)]
    scene.worker("thread", 1, "default")
    for ref in refs:  # well under the 30 s lease a dropped reservation would wait for
        assert scene.app.get_result(ref, timeout=12) == 3
    assert {scene.app.get_task(r.id).attempts for r in refs} == {3}


@pytest.mark.slow
def test_kill_9_of_a_pool_child_requeues_its_task_promptly(store_ref, scene_factory):
    """The killed task is requeued and reserved again while the one slot runs the task
    prefetched behind it; it runs next, not after a whole lease."""
    scene = scene_factory(store_ref, lease=30.0)
    (scene.folder / "slow").touch()
    ref = scene.mod.body.delay(str(scene.folder), "victim", 60.0)
    scene.mod.body.delay(str(scene.folder), "next", 1.0)
    scene.worker("process", 1, "default")
    [(_, child)] = until(
        lambda: scene.marks("start", "victim"), "the task started in a child", deadline=15.0
    )
    (scene.folder / "slow").unlink()
    os.kill(child, signal.SIGKILL)
    pid = scene.app.get_result(ref, timeout=12)  # not after the 30 s lease
    assert pid != child
    assert scene.app.get_task(ref.id).attempts == 2
    assert [pid] == [p for _, p in scene.marks("end", "victim")]


@pytest.mark.slow
def test_kill_9_of_a_process_pool_worker_ends_its_children(tmp_path, scene_factory):
    """A worker killed outright (kill -9, the OOM killer) must not leave its pool child
    running the task: the lease lapses and another worker runs it, so an orphan still
    running the body would run it twice at once."""
    scene = scene_factory(f"sqlite:///{tmp_path / 'q.db'}")
    (scene.folder / "slow").touch()
    scene.mod.body.delay(str(scene.folder), "orphan", 60.0)
    worker = scene.worker("process", 1)
    [(_, child)] = until(
        lambda: scene.marks("start", "orphan"), "the task started in a child", deadline=15.0
    )
    worker.kill()
    worker.wait(10)

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie waiting for its new parent to reap it has exited too
            with open(f"/proc/{child}/stat") as f:
                return f.read().split(") ")[-1].startswith("Z")
        except FileNotFoundError:
            return True

    try:
        until(gone, "the orphaned pool child exited", deadline=10.0)
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert scene.marks("end", "orphan") == [], "the body ran on after its worker died"


@pytest.mark.slow
def test_a_timeout_in_the_process_pool_kills_only_its_own_child(tmp_path, scene_factory):
    scene = scene_factory(f"sqlite:///{tmp_path / 'q.db'}")
    (scene.folder / "slow").touch()
    hog = scene.mod.body.apply((str(scene.folder), "hog", 30.0), timeout=2.0)
    calm = scene.mod.body.delay(str(scene.folder), "calm", 4.0)
    scene.worker("process", 2)
    until(lambda: len(scene.marks("start")) == 2, "both tasks started side by side", deadline=15.0)
    with pytest.raises(Exception, match="timeout"):
        scene.app.get_result(hog, timeout=15)
    scene.app.get_result(calm, timeout=15)
    assert len(scene.marks("start", "calm")) == 1 and len(scene.marks("end", "calm")) == 1
    assert scene.app.get_task(calm.id).attempts == 1
    assert scene.marks("end", "hog") == []


@pytest.mark.slow
def test_a_forced_stop_exits_at_once_and_never_hands_back_a_running_body(tmp_path, scene_factory):
    scene = scene_factory(f"sqlite:///{tmp_path / 'q.db'}", lease=4.0)
    (scene.folder / "slow").touch()
    refs = [scene.mod.body.delay(str(scene.folder), f"t{i}", 20.0) for i in range(3)]
    first = scene.cli_worker("thread", 3)
    until(lambda: len(scene.marks("start")) == 3, "the three tasks started", deadline=15.0)
    first.send_signal(signal.SIGTERM)  # drain (grace period 0)...
    first.send_signal(signal.SIGTERM)  # ...and at once: the loop handles them in order
    sent = time.monotonic()
    out, _ = first.communicate(timeout=15)
    assert time.monotonic() - sent < 5, f"a forced stop waited for the task bodies:\n{out}"
    # Not handed back while the bodies ran: no worker has recovered the leases yet, so
    # the tasks still read running; a release would have made them pending.
    assert {scene.app.get_task(r.id).state for r in refs} == {TaskState.RUNNING}, out
    (scene.folder / "slow").unlink()
    second = scene.cli_worker("thread", 3)  # takes them over once their 4 s leases lapse
    pids = [scene.app.get_result(r, timeout=15) for r in refs]
    assert set(pids) == {second.pid}
    # The first process's bodies never ended: they died with it, so none ran twice at once.
    assert sorted(scene.marks("end")) == sorted((f"t{i}", second.pid) for i in range(3))


@pytest.mark.slow
def test_a_long_task_s_started_event_is_written_while_it_runs(tmp_path, scene_factory):
    scene = scene_factory(f"sqlite:///{tmp_path / 'q.db'}")
    (scene.folder / "slow").touch()
    ref = scene.mod.body.delay(str(scene.folder), "long", 20.0)
    scene.worker("thread", 2)
    until(lambda: scene.marks("start", "long"), "the task started", deadline=15.0)

    def started() -> bool:
        return EventType.STARTED in [e.type for e in scene.app.events(task_id=ref.id)]

    until(started, "a started event while the task runs", deadline=5.0)
    assert scene.marks("end", "long") == []
    (scene.folder / "slow").unlink()
    scene.app.get_result(ref, timeout=10)
