"""A zombie worker's late result never wins: real worker processes, SIGSTOP past a lease.

Two workers share the stores. The one that starts the task is paused (SIGSTOP) inside it
until its lease lapses and the other worker takes the task over and completes it; then it
is resumed (SIGCONT), finishes its stale attempt at once (returning, or raising) and is
stopped gracefully, so everything it had to write is written or refused. The task must
read as the second worker left it: its result, exactly one ``succeeded`` event, and no
``failed`` or ``dead`` event; and the zombie must report its attempt as ``lease_lost``,
never as ``succeeded`` or, when it raised, as ``retrying`` (its retry was refused).

The other side of that rule: a worker whose completion the server applied but whose
answer it never got (the connection reset by a proxy process in between) has its repeat
refused, its token spent, and must tell its own change from a lost lease
(``lifecycle.applied``) and still store its result, where the result is not written in
the same step as the completion (NATS; results on another server than the task queue).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ
from omniq.models import EventType, TaskState
from omniq.testing import until
from omniq.testing.proxies import forwarding
from omniq.testing.services import require_service

REDIS_URL = os.environ.get("OMNIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
NATS_URL = os.environ.get("OMNIQ_TEST_NATS_URL", "nats://127.0.0.1:4222")
#: Long enough that a worker starved by a loaded machine keeps its lease until paused.
LEASE = 3.0

APP = """
import os, pathlib, sys, time
from omniq import OmniQ

app = OmniQ(task_queue={ref!r}, result_storage={ref!r}, event_storage={ref!r},
            lease={lease}, worker={{"grace_period": 10}})

@app.task(retries=1)
def race(marks: str) -> int:
    here = pathlib.Path(marks)
    first = not any(here.glob("*-*"))
    (here / f"{{'first' if first else 'later'}}-{{os.getpid()}}").touch()
    if first:  # the test pauses this process in here; resumed past the deadline, it returns
        until = time.time() + 3.0
        while time.time() < until:
            time.sleep(0.001)
        if {zombie_fails}:
            raise RuntimeError("the zombie's attempt failed")
    return os.getpid()

if __name__ == "__main__":
    app.run_worker(pool="thread", concurrency=1)
"""


def _drop_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


def _drop_pg_schema(schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def _drop_nats_streams(prefix: str) -> None:
    import nats

    async def drop() -> None:
        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                if info.config.name and info.config.name.startswith(
                    (f"{prefix}_", f"KV_{prefix}_")
                ):
                    await js.delete_stream(info.config.name)
        finally:
            await nc.close()

    asyncio.run(drop())


@pytest.fixture(params=["sqlite", "redis", "postgres", "nats"])
def store_ref(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The same ref for all three stores (siblings: PostgreSQL finishes in one statement,
    NATS writes the accepted results and events in its own step)."""
    name = f"zombie_{uuid.uuid4().hex[:12]}"
    cleanup: Callable[[], None] | None = None
    if request.param == "sqlite":
        ref: Any = f"sqlite:///{tmp_path / 'q.db'}"
    elif request.param == "redis":
        require_service("Redis", REDIS_URL)
        ref = {"backend": "redis", "url": REDIS_URL, "key_prefix": name}
        cleanup = lambda: _drop_redis_keys(name)  # noqa: E731
    elif request.param == "nats":
        require_service("NATS", NATS_URL)
        ref = {"backend": "nats", "url": NATS_URL, "prefix": name}
        cleanup = lambda: _drop_nats_streams(name)  # noqa: E731
    else:
        require_service("PostgreSQL", POSTGRES_URL)
        ref = {"backend": "postgres", "url": POSTGRES_URL, "schema": name, "max_size": 2}
        cleanup = lambda: _drop_pg_schema(name)  # noqa: E731
    yield ref
    if cleanup is not None:
        cleanup()


def _stopped(proc: subprocess.Popen[bytes]) -> bool:
    with open(f"/proc/{proc.pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"


def _sqlite_write_locked(ref: Any) -> bool:
    """Whether a process holds the SQLite file's write lock (a worker paused inside a
    transaction would block every other worker until resumed: SQLite has one writer)."""
    if not (isinstance(ref, str) and ref.startswith("sqlite:///")):
        return False
    conn = sqlite3.connect(ref.removeprefix("sqlite:///"), timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def _pause(proc: subprocess.Popen[bytes], ref: Any) -> None:
    """SIGSTOP ``proc`` at a moment it holds no store lock."""
    for _ in range(500):
        proc.send_signal(signal.SIGSTOP)
        until(lambda: _stopped(proc), "the stop", deadline=15.0)
        if not _sqlite_write_locked(ref):
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.003)
    raise AssertionError("the worker held the SQLite write lock at every try")


@pytest.mark.slow
@pytest.mark.parametrize("zombie_fails", [False, True], ids=["zombie-returns", "zombie-raises"])
def test_a_paused_workers_late_outcome_never_wins(
    tmp_path: Path, store_ref: Any, zombie_fails: bool
) -> None:
    app_path = tmp_path / "zombieapp.py"
    app_path.write_text(
        textwrap.dedent(APP.format(ref=store_ref, lease=LEASE, zombie_fails=zombie_fails))
    )
    marks = tmp_path / "marks"
    marks.mkdir()
    sys.path.insert(0, str(tmp_path))
    try:
        import zombieapp  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    app: OmniQ = zombieapp.app
    procs: list[subprocess.Popen[bytes]] = []
    # What the workers said, for a failure's autopsy.
    with open(tmp_path / "workers.log", "ab") as log:
        try:
            ref = zombieapp.race.delay(str(marks))
            procs = [
                subprocess.Popen(
                    [sys.executable, str(app_path)],
                    cwd=tmp_path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                for _ in range(2)
            ]
            first = until(lambda: list(marks.glob("first-*")), "the first attempt", deadline=15.0)[
                0
            ]
            zombie = next(p for p in procs if first.name == f"first-{p.pid}")
            winner = next(p for p in procs if p is not zombie)
            _pause(zombie, store_ref)
            try:
                until(
                    lambda: app.get_task(ref.id).state is TaskState.SUCCEEDED,
                    "the take-over by the other worker after the lease lapsed",
                    deadline=15.0,
                )
                # Resumed, the zombie must be past its attempt's 3 s, so the attempt ends
                # at once and writes its (refused) outcome. After a quick take-over (a
                # worker woken at once by the commit) it would resume mid-attempt, and
                # its heartbeat, finding the lease gone, would stop the attempt first.
                started = first.stat().st_mtime
                until(
                    lambda: time.time() >= started + 3.1, "the zombie's attempt time", deadline=15.0
                )
            finally:
                zombie.send_signal(signal.SIGCONT)
            assert app.get_result(ref, timeout=5) == winner.pid
            # The zombie's attempt ends at once; it tells when its state change was refused,
            # or, when its overdue heartbeat runs first on resuming (its timer and the
            # attempt's end are due together), that it found its lease gone and dropped
            # the attempt. Either way its outcome must not win, checked below.
            said = tmp_path / "workers.log"
            # (The outcome line names no worker: the zombie's attempt is the first.)
            refused = rf":{zombie.pid}:\w+: completion of task {ref.id} refused"
            dropped = rf"task \S+ {ref.id} lease_lost queue=\S+ attempt=1 .*cancelled or lapsed"
            noticed = re.compile(f"{refused}|{dropped}".encode())
            until(
                lambda: noticed.search(said.read_bytes()),
                "the zombie's finishing of its attempt",
                deadline=20,
            )
            zombie.send_signal(signal.SIGTERM)
            zombie.wait(timeout=20)
            assert app.get_result(ref, timeout=5) == winner.pid, (
                "the zombie's outcome overwrote the winner's"
            )
            events = [e.type for e in app.events(task_id=ref.id)]
            assert events.count(EventType.SUCCEEDED) == 1, f"exactly one succeeded event: {events}"
            assert EventType.FAILED not in events and EventType.DEAD not in events, (
                f"the zombie's failure must leave no event: {events}"
            )
            task = app.get_task(ref.id)
            assert task.state is TaskState.SUCCEEDED and task.attempts == 2
            # The first attempt's outcome lines (the zombie's; a lease sweep's) all say
            # its lease was lost, whichever way it ended: none reads as its outcome.
            text = said.read_text()
            lines = re.findall(rf"task \S+ {ref.id} (\w+) queue=\S+ attempt=1 ", text)
            assert lines and set(lines) == {"lease_lost"}, text
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                p.wait(timeout=10)
            app.close()
            sys.modules.pop("zombieapp", None)


LOST_APP = """
import json, os, sys, time
from pathlib import Path
from omniq import OmniQ

app = OmniQ(**json.loads(os.environ["LOST_ANSWER_STORES"]), worker={"grace_period": 0})


def ready(folder: str, name: str) -> None:
    # Says it runs, then waits for the test to arm the proxy (or take a store away).
    root = Path(folder)
    (root / f"running-{name}").touch()
    end = time.monotonic() + 20
    while not (root / "armed").exists() and time.monotonic() < end:
        time.sleep(0.01)


@app.task
def warm() -> int:
    return 1


@app.task(retries=0)
def spoiled() -> None:
    raise ValueError("spoiled on purpose")


@app.task
def answer(folder: str) -> int:
    ready(folder, "answer")
    return 42


@app.task(retries=0)
def broken(folder: str) -> None:
    ready(folder, "broken")
    raise ValueError("broken on purpose")


@app.task(retries=0, max_deliveries=1)
def doomed(folder: str) -> None:
    # Run by a process-pool child, which the test kills (kill -9): its only delivery.
    (Path(folder) / f"doomed-{os.getpid()}").touch()
    time.sleep(60)


if __name__ == "__main__":
    app.run_worker(pool=sys.argv[1], concurrency=1, prefetch=0)
"""


def _through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    scheme, _, rest = url.partition("://")
    path = rest.partition("/")[2]
    return f"{scheme}://127.0.0.1:{port}" + (f"/{path}" if path else "")


#: The servers a lost answer is tried on: URL, the option naming the test's own space
#: there, and how that space is removed.
_LOST_ON: dict[str, tuple[str, str, Callable[[str], None]]] = {
    "nats": (NATS_URL, "prefix", _drop_nats_streams),
    "redis": (REDIS_URL, "key_prefix", _drop_redis_keys),
    "postgres": (POSTGRES_URL, "schema", _drop_pg_schema),
}


def _outcomes(app: OmniQ, task_id: str, last: EventType) -> Counter[EventType] | None:
    """The task's events by type, once ``last`` is among them."""
    kinds = Counter(e.type for e in app.events(task_id=task_id))
    return kinds if kinds[last] else None


class _Lost:
    """The lost-answer app: imported here on the stores' direct refs (``mine``), run as
    a worker process on ``theirs`` (some store through a proxy), its output in a file."""

    def __init__(
        self, tmp_path: Path, mine: dict[str, Any], theirs: dict[str, Any], pool: str
    ) -> None:
        self.folder = tmp_path
        module = tmp_path / f"lostapp_{uuid.uuid4().hex[:8]}.py"
        module.write_text(LOST_APP)
        os.environ["LOST_ANSWER_STORES"] = json.dumps(mine)
        sys.path.insert(0, str(tmp_path))
        try:
            self.mod = importlib.import_module(module.stem)
        finally:
            sys.path.pop(0)
            del os.environ["LOST_ANSWER_STORES"]
        self.app: OmniQ = self.mod.app
        self.log = tmp_path / "worker.log"
        with self.log.open("w") as out:
            self.worker = subprocess.Popen(
                [sys.executable, str(module), pool],
                cwd=tmp_path,
                env={**os.environ, "LOST_ANSWER_STORES": json.dumps(theirs)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def warmed(self) -> None:
        """One task through the worker first: what its first completion loads (a script
        the server answers "unknown" to) is loaded before a cut, which must lose the
        answer of a change the server ran."""
        assert self.app.get_result(self.mod.warm.delay(), timeout=20) == 1
        with pytest.raises(ValueError, match="spoiled"):  # (and a dead letter's)
            self.app.get_result(self.mod.spoiled.delay(), timeout=20)

    def started(self, name: str) -> None:
        until(lambda: (self.folder / f"running-{name}").exists(), f"{name}'s start", deadline=15.0)

    def go(self) -> None:
        (self.folder / "armed").touch()

    def output(self) -> str:
        return self.log.read_text()

    def close(self) -> None:
        """Stop the worker and close the app (the worker's output stays readable)."""
        self.worker.terminate()
        self.worker.wait(timeout=30)
        self.app.close()
        sys.modules.pop(self.mod.__name__, None)


@contextmanager
def _lost(
    tmp_path: Path,
    mine: dict[str, Any],
    theirs: dict[str, Any],
    drop: Callable[[], None],
    pool: str = "thread",
) -> Iterator[_Lost]:
    """A :class:`_Lost` app and worker (of ``pool``), closed on exit, then ``drop`` (what
    the test made on its server) run, whatever happened."""
    try:
        lost = _Lost(tmp_path, mine, theirs, pool)
        try:
            yield lost
        finally:
            lost.close()
    finally:
        drop()


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    ["nats", "redis", "postgres"],
    ids=["nats", "redis-queue-results-elsewhere", "postgres-queue-results-elsewhere"],
)
def test_a_completion_whose_answer_was_lost_keeps_its_result(kind: str, tmp_path: Path) -> None:
    url, option, drop = _LOST_ON[kind]
    require_service(kind, url)
    name = f"lost_{uuid.uuid4().hex[:10]}"
    ref = {"backend": kind, "url": url, option: name}
    if kind == "nats":  # every store on NATS: the results are written after the change
        mine: dict[str, Any] = {"task_queue": ref}
    else:  # results and events on a file: written after the completion, not with it
        elsewhere = f"sqlite:///{tmp_path / 'results.db'}"
        mine = {"task_queue": ref, "result_storage": elsewhere, "event_storage": elsewhere}
    with (
        forwarding(url) as proxy,
        _lost(
            tmp_path,
            mine,
            {**mine, "task_queue": {**ref, "url": _through(url, proxy.port)}},
            lambda: drop(name),
        ) as lost,
    ):
        lost.warmed()
        handle = lost.mod.answer.delay(str(tmp_path))
        lost.started("answer")
        # The worker's next request naming the new state is its completion.
        proxy.lose_next_answer(TaskState.SUCCEEDED.value)
        lost.go()
        proxy.cut()
        assert lost.app.get_result(handle, timeout=20) == 42, "the task's result"
        assert lost.app.get_task(handle.id).state is TaskState.SUCCEEDED
    assert "already succeeded by this attempt" in lost.output(), lost.output()


def _redis_queue_results_elsewhere(tmp_path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A Redis task queue under a fresh key prefix (its name and ref) with results and
    events in a SQLite file (written after the change, not with it): the stores of the
    lost-answer tests on Redis."""
    name = f"lost_{uuid.uuid4().hex[:10]}"
    ref = {"backend": "redis", "url": REDIS_URL, "key_prefix": name}
    elsewhere = f"sqlite:///{tmp_path / 'results.db'}"
    return name, ref, {"task_queue": ref, "result_storage": elsewhere, "event_storage": elsewhere}


@pytest.mark.slow
def test_a_dead_letter_applied_keeps_its_result_when_the_read_that_tells_it_fails(
    tmp_path: Path,
) -> None:
    """The dead letter's answer is lost, its repeat refused, and the read of the record
    that would recognise it loses its answer too: the worker must ask again, not take
    the refusal it saw for the outcome, and store the ``dead`` result and events once."""
    require_service("Redis", REDIS_URL)
    name, ref, mine = _redis_queue_results_elsewhere(tmp_path)
    with forwarding(REDIS_URL) as proxy:
        # (no retry inside the backend: the lost answers reach the worker)
        proxied = {**ref, "url": _through(REDIS_URL, proxy.port), "retries": 0}
        with _lost(
            tmp_path, mine, {**mine, "task_queue": proxied}, lambda: _drop_redis_keys(name)
        ) as lost:
            lost.warmed()
            handle = lost.mod.broken.delay(str(tmp_path))
            lost.started("broken")
            # The dead letter (the only request carrying the task's error), then the
            # record's read (the only one naming the task's key: the scripts build it).
            proxy.lose_next_answer("broken on purpose")
            proxy.lose_next_answer(f"{name}:t:{handle.id}")
            lost.go()
            proxy.cut()
            proxy.cut()
            with pytest.raises(ValueError, match="broken on purpose"):
                lost.app.get_result(handle, timeout=20)
            assert lost.app.get_task(handle.id).state is TaskState.DEAD
            kinds = until(  # (written beside the result, not before it)
                lambda: _outcomes(lost.app, handle.id, EventType.DEAD),
                "the dead event",
                deadline=15.0,
            )
            assert kinds[EventType.FAILED] == 1 and kinds[EventType.DEAD] == 1, kinds
    assert "already dead by this attempt" in lost.output(), lost.output()


@pytest.mark.slow
def test_a_requeue_s_dead_letter_whose_answer_was_lost_keeps_its_result_and_event(
    tmp_path: Path,
) -> None:
    """A process-pool child dies (kill -9) on the task's last delivery: the worker
    dead-letters it (a requeue), the answer is lost, its repeat refused; it must read the
    change as its own, as it does a task's own dead letter, and store the ``dead``
    result and event."""
    require_service("Redis", REDIS_URL)
    name, ref, mine = _redis_queue_results_elsewhere(tmp_path)
    with forwarding(REDIS_URL) as proxy:
        proxied = {**ref, "url": _through(REDIS_URL, proxy.port)}
        with _lost(
            tmp_path,
            mine,
            {**mine, "task_queue": proxied},
            lambda: _drop_redis_keys(name),
            pool="process",
        ) as lost:
            lost.warmed()
            handle = lost.mod.doomed.delay(str(tmp_path))
            [mark] = until(
                lambda: list(tmp_path.glob("doomed-*")),
                "the task's start in a child",
                deadline=15.0,
            )
            child = int(mark.name.partition("-")[2])
            # The dead letter is the only request carrying the dead child's pid.
            proxy.lose_next_answer(f"(pid {child}) died")
            os.kill(child, signal.SIGKILL)
            proxy.cut()
            with pytest.raises(Exception, match=f"pid {child}"):
                lost.app.get_result(handle, timeout=20)
            assert lost.app.get_task(handle.id).state is TaskState.DEAD
            kinds = until(
                lambda: _outcomes(lost.app, handle.id, EventType.DEAD),
                "the dead event",
                deadline=15.0,
            )
            assert kinds[EventType.DEAD] == 1, kinds
            stored = lost.app.get_task_result(handle.id)
            assert stored is not None and stored.state is TaskState.DEAD
    assert "already dead by this attempt" in lost.output(), lost.output()


@pytest.mark.slow
def test_a_success_whose_result_store_was_away_keeps_its_result_and_one_event(
    tmp_path: Path,
) -> None:
    """The completion is accepted and its ``succeeded`` event written, but the result's
    store is away (kill -9 of its proxy) past the writer's tries: the batch is tried
    again, its completion refused (its token spent) and recognised as the attempt's own.
    Once the store is back (a proxy on the same port), the result is written, and the
    event, stored already, not again."""
    require_service("Redis", REDIS_URL)
    name = f"lost_{uuid.uuid4().hex[:10]}"
    here = f"sqlite:///{tmp_path / 'tasks.db'}"
    results = {"backend": "redis", "url": REDIS_URL, "key_prefix": name}
    mine = {"task_queue": here, "result_storage": results, "event_storage": here}
    with forwarding(REDIS_URL) as proxy:
        away = {**results, "url": _through(REDIS_URL, proxy.port), "outage_timeout": 1.0}
        theirs = {**mine, "result_storage": away}
        with _lost(tmp_path, mine, theirs, lambda: _drop_redis_keys(name)) as lost:
            handle = lost.mod.answer.delay(str(tmp_path))
            lost.started("answer")
            proxy.kill()
            lost.go()
            until(
                lambda: lost.output().count("writing 1 completions failed") >= 2,
                "the worker's tries while the result store is away",
                deadline=30,
            )
            with forwarding(REDIS_URL, proxy.port):  # the store back, on the same port
                assert lost.app.get_result(handle, timeout=30) == 42
                kinds = until(
                    lambda: _outcomes(lost.app, handle.id, EventType.SUCCEEDED),
                    "the succeeded event",
                    deadline=15.0,
                )
                assert kinds[EventType.SUCCEEDED] == 1, kinds
    assert "already succeeded by this attempt" in lost.output(), lost.output()


TWICE_APP = """
import json, logging, os, time
from pathlib import Path
from omniq import Middleware, OmniQ
from omniq.context import current_task

app = OmniQ(**json.loads(os.environ["TWICE_STORES"]), lease=1.0, worker={"grace_period": 0})


# Says when an attempt is in the outbox: after_success runs in the very loop step that
# hands the success to the writer (its outcome line waits for the store's answer).
class Outbox(Middleware):

    async def after_success(self, task, value):
        print(f"returned {task.id} attempt={task.attempts}", flush=True)


app.add_middleware(Outbox())


@app.task
def warm() -> int:
    return 1


@app.task
def twice(folder: str) -> int:
    attempt = current_task().attempt
    if attempt == 1:  # waits here until the test has let this attempt's lease lapse
        root = Path(folder)
        (root / "running-twice").touch()
        end = time.monotonic() + 30
        while not (root / "go").exists() and time.monotonic() < end:
            time.sleep(0.01)
    return attempt


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app.run_worker(pool="thread", concurrency=4, prefetch=0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("queue", ["sqlite", "nats", "postgres"])
def test_a_stale_and_a_new_attempt_of_one_task_waiting_together_keep_the_new_ones_result(
    queue: str, tmp_path: Path
) -> None:
    """One worker holds both attempts of a task: its writer is held up (the result store's
    proxy stopped, SIGSTOP, mid-write) while the first attempt's lease lapses and the
    same worker runs the task again. Written in one batch, the stale attempt's refusal
    took the accepted one's result and ``succeeded`` event with it: the task read
    ``succeeded`` with neither (NATS under server restarts, in a chaos run). Each attempt
    must go in its own write: the task keeps attempt 2's result and one event. (Before,
    the three queues broke it three ways: NATS left no result, PostgreSQL with the results
    elsewhere stored both attempts' ``succeeded`` events, and SQLite, which completes a
    task listed twice once, the first, did not try the accepted attempt: the task ran a
    third time.)"""
    require_service("Redis", REDIS_URL)
    name = f"twice_{uuid.uuid4().hex[:10]}"
    here: Any = f"sqlite:///{tmp_path / 'tasks.db'}"
    drop_queue: Callable[[], None] = lambda: None  # noqa: E731
    if queue != "sqlite":
        url, option, drop = _LOST_ON[queue]
        require_service(queue, url)
        here = {"backend": queue, "url": url, option: name}
        drop_queue = lambda: drop(name)  # noqa: E731
    results = {"backend": "redis", "url": REDIS_URL, "key_prefix": name}
    mine = {"task_queue": here, "result_storage": results, "event_storage": here}
    module = tmp_path / "twiceapp.py"
    module.write_text(TWICE_APP)
    os.environ["TWICE_STORES"] = json.dumps(mine)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("twiceapp")
    finally:
        sys.path.pop(0)
        del os.environ["TWICE_STORES"]
    app: OmniQ = mod.app
    log = tmp_path / "worker.log"
    worker: subprocess.Popen[bytes] | None = None
    try:
        with forwarding(REDIS_URL) as proxy, log.open("w") as out:
            away = {**results, "url": _through(REDIS_URL, proxy.port)}
            worker = subprocess.Popen(
                [sys.executable, str(module)],
                cwd=tmp_path,
                env={**os.environ, "TWICE_STORES": json.dumps({**mine, "result_storage": away})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            assert app.get_result(mod.warm.delay(), timeout=20) == 1  # its connection is open
            handle = mod.twice.delay(str(tmp_path))
            until(
                lambda: (tmp_path / "running-twice").exists(),
                "the first attempt's start",
                deadline=15.0,
            )
            proxy.proc.send_signal(signal.SIGSTOP)  # the result store stops answering
            held = mod.warm.delay()  # its result write hangs: the writer is held up in it
            until(
                lambda: app.get_task(held.id).state is TaskState.SUCCEEDED,
                "the held write's completion",
                deadline=15.0,
            )
            (tmp_path / "go").touch()  # the first attempt ends: it waits behind the held write
            until(
                lambda: re.search(rf"returned {handle.id} attempt=1", log.read_text()),
                "the first attempt's end",
                deadline=15.0,
            )
            _pause(worker, here)  # no heartbeat: the first attempt's lease lapses
            until(
                lambda: handle.id in asyncio.run(_lapsed(here)),
                "the first attempt's lapse",
                deadline=15.0,
            )
            worker.send_signal(signal.SIGCONT)
            until(
                lambda: re.search(rf"returned {handle.id} attempt=2", log.read_text()),
                "the second attempt, run by the same worker",
                deadline=15.0,
            )
            proxy.proc.send_signal(signal.SIGCONT)
            assert app.get_result(handle, timeout=20) == 2
            kinds = until(
                lambda: _outcomes(app, handle.id, EventType.SUCCEEDED),
                "the succeeded event",
                deadline=15.0,
            )
            assert kinds[EventType.SUCCEEDED] == 1, kinds
            task = app.get_task(handle.id)
            assert task.state is TaskState.SUCCEEDED and task.attempts == 2, task

            # Each attempt reported once, by the store's answer: the stale one refused.
            def outcome_lines() -> list[tuple[str, str]]:
                found = re.findall(rf"{handle.id} (\w+) queue=\S+ attempt=(\d)", log.read_text())
                return found if len(found) >= 2 else []

            outcomes = until(outcome_lines, "both attempts' outcome lines", deadline=15.0)
            assert sorted(outcomes) == [("lease_lost", "1"), ("succeeded", "2")], outcomes
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGCONT)
            worker.terminate()
            worker.wait(timeout=30)
        app.close()
        sys.modules.pop("twiceapp", None)
        _drop_redis_keys(name)
        drop_queue()


async def _lapsed(ref: Any) -> list[str]:
    """The ids of the tasks whose leases lapsed, returned to their queue (the sweep a
    worker's maintenance runs)."""
    from omniq import AsyncOmniQ

    app = AsyncOmniQ(task_queue=ref, result_storage=ref, event_storage=ref)
    await app.open()
    try:
        return [t.id for t in await app.task_queue.release_expired_leases()]
    finally:
        await app.close()
