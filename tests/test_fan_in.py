"""Fan-in (groups and chords) end to end on every backend that declares dependencies:
the callback's calling convention, both failure policies, ``get_result`` on a group,
and a worker killed with SIGKILL right after the last parent finished."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import GroupRef, OmniQ, TaskFailedError
from omniq.errors import ConfigError, DependencyFailedError
from omniq.models import TaskState
from omniq.testing import until
from omniq.testing.services import require_service

REDIS_URL = os.environ.get("OMNIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
NATS_URL = os.environ.get("OMNIQ_TEST_NATS_URL", "nats://127.0.0.1:4222")

APP = """
import os, time
from pathlib import Path
from omniq import OmniQ

app = OmniQ(task_queue={ref!r}, lease=30, worker={{"grace_period": 0}})


@app.task
def part(folder: str, i: int) -> int:
    root = Path(folder)
    (root / f"part-{{i}}-{{os.getpid()}}-{{time.monotonic_ns()}}").touch()
    if i == 0:  # the last to finish: waits for the test's go
        (root / "last-started").touch()
        while not (root / "go").exists():
            time.sleep(0.01)
    return i * 10


@app.task
def broken(folder: str, i: int) -> int:
    (Path(folder) / f"part-{{i}}-{{os.getpid()}}-{{time.monotonic_ns()}}").touch()
    raise ValueError(f"part {{i}} fails on purpose")


@app.task(queue="callbacks")
def gather(results: list, folder: str) -> list:
    shown = [type(r).__name__ if isinstance(r, BaseException) else r for r in results]
    with open(Path(folder) / "callback-runs", "a") as out:
        out.write(repr(shown) + "\\n")
    return shown


if __name__ == "__main__":
    import sys
    app.run_worker(queues=sys.argv[1].split(","), concurrency=1, prefetch=0)
"""


async def _drop_nats_prefix(prefix: str) -> None:
    import nats
    import nats.js.errors

    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        for stream in ("queue", "events"):
            await _delete_stream(js, f"{prefix}_{stream}")
        for bucket in ("tasks", "leases", "children", "schedules", "results", "workers", "limits"):
            await _delete_stream(js, f"KV_{prefix}_{bucket}")
    finally:
        await nc.close()


async def _delete_stream(js: Any, name: str) -> None:
    import nats.js.errors

    try:
        await js.delete_stream(name)
    except nats.js.errors.NotFoundError:
        pass


async def _drop_pg_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _drop_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


#: Backends whose completion of a parent settles its dependents and stores its result in
#: the same atomic step; the others settle them right after, and their cleanup sweep
#: (which a worker runs as it starts) repairs a crash in between (docs/architecture.md,
#: section 8).
ATOMIC_RELEASE = {"sqlite", "redis", "postgres"}
ENDED = (TaskState.SUCCEEDED, TaskState.DEAD)


@pytest.fixture(params=["sqlite", "file", "redis", "postgres", "nats"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend that declares DEPENDENCIES."""
    return str(request.param)


@pytest.fixture
def store_ref(backend: str, tmp_path: Path) -> Iterator[Any]:
    """One store for all three roles, fresh per test."""
    name = f"omniq_fanin_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'q.db'}"
    elif backend == "file":
        yield f"file://{tmp_path / 'store'}"
    elif backend == "redis":
        require_service("Redis", REDIS_URL)
        yield {"backend": "redis", "url": REDIS_URL, "key_prefix": name}
        _drop_redis_prefix(name)
    elif backend == "postgres":
        require_service("PostgreSQL", POSTGRES_URL)
        yield {"backend": "postgres", "url": POSTGRES_URL, "schema": name, "max_size": 4}
        asyncio.run(_drop_pg_schema(name))
    else:
        require_service("NATS", NATS_URL)
        prefix = f"t{uuid.uuid4().hex[:12]}"
        yield {"backend": "nats", "url": NATS_URL, "prefix": prefix}
        asyncio.run(_drop_nats_prefix(prefix))


@pytest.fixture
def app(store_ref: Any) -> Iterator[OmniQ]:
    with OmniQ(task_queue=store_ref, worker={"grace_period": 0}) as app:

        @app.task(name="square")
        def square(x: int) -> int:
            return x * x

        @app.task(name="boom")
        def boom(x: int) -> int:
            raise ValueError(f"boom {x}")

        @app.task(name="summary")
        def summary(results: list[Any], label: str = "") -> list[Any]:
            """The callback: its parents' outcomes, failures shown by type, and a label."""
            shown = [type(r).__name__ if isinstance(r, BaseException) else r for r in results]
            return [*shown, label]

        yield app


def test_a_chord_gets_every_result_in_the_group_s_order(app: OmniQ) -> None:
    group = app.group("square", [(i,) for i in range(6)])
    assert isinstance(group, GroupRef) and len(group) == 6
    callback = app.chord(group, "summary", label="done")
    assert app.get_task(callback.id).state is TaskState.WAITING
    app.run_worker(burst=True)
    assert app.get_result(callback, timeout=10) == [0, 1, 4, 9, 16, 25, "done"]
    assert app.get_result(group, timeout=10) == [0, 1, 4, 9, 16, 25]
    rebuilt = app.group_ref(list(group.ids))
    assert rebuilt == group and app.get_result(rebuilt, timeout=1) == [0, 1, 4, 9, 16, 25]


def test_on_failure_run_gives_the_callback_the_failures_as_exceptions(app: OmniQ) -> None:
    good = app.group("square", [(2,), (3,)])
    bad = app.group("boom", [(1,)])
    # depends_on takes groups and refs mixed; results follow depends_on's order
    callback = app.enqueue(
        "summary", label="ran", depends_on=[good, bad], pass_results=True, on_failure="run"
    )
    app.run_worker(burst=True)
    assert app.get_result(callback, timeout=10) == [4, 9, "ValueError", "ran"]
    with pytest.raises(ValueError, match="boom 1"):
        app.get_result(app.group_ref([*good.ids, *bad.ids]), timeout=10)
    assert app.gather_results(bad.ids, timeout=1)[0].args == ("boom 1",)


def test_on_failure_cancel_cancels_the_callback(app: OmniQ) -> None:
    group = app.group("boom", [(1,), (2,)])
    callback = app.chord(group, "summary")
    app.run_worker(burst=True)
    with pytest.raises(TaskFailedError) as info:
        app.get_result(callback, timeout=10)
    assert info.value.error_type == DependencyFailedError.__name__
    assert app.get_task(callback.id).state is TaskState.CANCELLED


def test_fan_in_options_are_checked(app: OmniQ) -> None:
    group = app.group("square", [(1,)])
    with pytest.raises(ConfigError, match=r"on_failure='later'.*'cancel'.*'run'"):
        app.chord(group, "summary", on_failure="later")
    with pytest.raises(ConfigError, match="depends_on"):
        app.enqueue("summary", pass_results=True)
    with pytest.raises(ConfigError, match="no calls"):
        app.group("square", [])


class Scene:
    """The app module written to a folder, imported here to enqueue and read, and run
    as worker processes."""

    def __init__(self, folder: Path, ref: Any) -> None:
        self.folder = folder
        module = f"fanin_{uuid.uuid4().hex[:8]}"
        self.path = folder / f"{module}.py"
        self.path.write_text(textwrap.dedent(APP.format(ref=ref)))
        sys.path.insert(0, str(folder))
        try:
            self.mod = importlib.import_module(module)
        finally:
            sys.path.pop(0)
        self.app: OmniQ = self.mod.app
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(self, queues: str) -> subprocess.Popen[bytes]:
        """A worker process on ``queues``; its output goes to ``worker-<n>.log``."""
        with open(self.folder / f"worker-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(self.path), queues],
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def parts(self) -> list[str]:
        return sorted(p.name.split("-")[1] for p in self.folder.glob("part-*"))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        self.app.close()


@pytest.fixture
def scene(store_ref: Any, tmp_path: Path) -> Iterator[Scene]:
    made = Scene(tmp_path, store_ref)
    yield made
    made.close()


@pytest.mark.parametrize("last", ["succeeds", "fails"])
def test_a_worker_killed_right_after_the_last_parent_loses_nothing(
    scene: Scene, backend: str, last: str
) -> None:
    """Kill -9 the worker the moment its last parent reads as finished: the callback was
    released in the same step (or, where settling follows the completion, the next
    worker's sweep releases it), and it runs exactly once, on another worker, with every
    result."""
    mod, folder = scene.mod, str(scene.folder)
    early = scene.app.group(mod.part, [(folder, i) for i in (1, 2, 3)])
    last_one = mod.broken if last == "fails" else mod.part
    final = scene.app.group(last_one, [(folder, 0)])
    callback = mod.gather.apply(
        (folder,),
        depends_on=[*early.ids, *final.ids],
        pass_results=True,
        on_failure="run" if last == "fails" else "cancel",
    )
    worker = scene.worker("default")
    if last == "succeeds":
        until(
            lambda: (scene.folder / "last-started").exists(),
            "the last parent started",
            deadline=30.0,
            interval=0.005,
        )
        (scene.folder / "go").touch()
    parents = [*early.ids, *final.ids]
    until(
        lambda: all(scene.app.get_task(p).state in ENDED for p in parents),
        "every parent finished",
        deadline=30.0,
        interval=0.005,  # the kill must come right after the last parent finished
    )
    if backend not in ATOMIC_RELEASE:  # their results follow the completions (a window of
        # its own, the same for every task: docs/architecture.md, section 8)
        until(
            lambda: all(scene.app.get_task_result(p) for p in parents),
            "the parents' results",
            deadline=30.0,
            interval=0.005,
        )
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    if backend in ATOMIC_RELEASE:
        assert scene.app.get_task(callback.id).state is TaskState.PENDING, (
            "the last parent's completion must release the callback in the same step"
        )
    scene.worker("callbacks")
    expected = [10, 20, 30, 0] if last == "succeeds" else [10, 20, 30, "ValueError"]
    assert scene.app.get_result(callback, timeout=30) == expected
    runs = (scene.folder / "callback-runs").read_text().splitlines()
    assert runs == [repr(expected)], f"the callback must run exactly once, ran {runs}"
    assert scene.parts() == ["0", "1", "2", "3"], "each parent runs once"
