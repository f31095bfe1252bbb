"""Operator commands as a user runs them, in real processes on a SQLite file:
``omniq workers``, ``omniq health`` against live and killed workers, ``cancel``,
``schedules delete`` and ``purge``'s default."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniq import OmniQ
from omniq.models import Task
from omniq.registry import registry
from omniq.testing import until

pytest.importorskip("omniq_backend_sqlite")

#: With a 1.5 s lease a worker heartbeats every 0.5 s and its registry entry lives 1.5 s.
FAST_LEASE = "1.5"


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite file that exists (the CLI's commands other than worker never create one)."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    app = OmniQ(task_queue=url)
    app.open()
    app.close()
    return url


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    return {**clean, "OMNIQ_LEASE": FAST_LEASE, "COLUMNS": "200"}


def omniq(url: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omniq.cli", "--task-queue", url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture
def worker(url: str, env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omniq.cli",
            "--task-queue",
            url,
            "worker",
            "-q",
            "mail",
            "-q",
            "sms",
            "--pool",
            "thread",
            "-c",
            "3",
            "--health-file",
            str(tmp_path / "health"),
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=20)
    assert proc.stderr is not None
    proc.stderr.close()


def listed(url: str, env: dict[str, str]) -> list[dict[str, object]]:
    result = omniq(url, env, "workers", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_a_live_worker_is_listed_and_health_fails_once_it_is_killed(
    url: str, env: dict[str, str], worker: subprocess.Popen[str], tmp_path: Path
) -> None:
    until(lambda: listed(url, env), "the worker registers itself", deadline=15.0)
    [info] = listed(url, env)
    assert info["pid"] == worker.pid and info["queues"] == ["mail", "sms"]
    assert info["pool"] == "thread" and info["concurrency"] == 3 and info["in_flight"] == 0
    assert info["heartbeat_at"] >= info["started_at"] > 0 and info["version"]
    table = omniq(url, env, "workers").stdout
    assert str(worker.pid) in table and "mail,sms" in table

    assert omniq(url, env, "health").returncode == 0
    ok = omniq(url, env, "health", "--queue", "sms", "--max-age", "30s")
    assert ok.returncode == 0 and "healthy: queue 'sms': 1 live worker(s)" in ok.stdout, ok
    unserved = omniq(url, env, "health", "--queue", "mail", "--queue", "reports")
    assert unserved.returncode == 1
    assert "no live worker serves queue 'reports'" in unserved.stderr, unserved.stderr
    assert (
        omniq(url, env, "health", "--file", str(tmp_path / "health"), "--max-age", "30s").returncode
        == 0
    )

    worker.kill()  # no chance to unregister: the entry must expire by itself
    worker.wait(timeout=20)
    failing: list[subprocess.CompletedProcess[str]] = []
    until(
        lambda: (
            failing.append(omniq(url, env, "health", "--queue", "mail")) or failing[-1].returncode
        ),
        "omniq health fails once the killed worker's entry expired",
        deadline=15.0,
    )
    assert failing[-1].returncode == 1
    assert "unhealthy: no live worker serves queue 'mail'" in failing[-1].stderr
    assert listed(url, env) == []
    assert omniq(url, env, "health").returncode == 1


@pytest.mark.slow
def test_a_stopped_worker_unregisters_and_removes_its_health_file(
    url: str, env: dict[str, str], worker: subprocess.Popen[str], tmp_path: Path
) -> None:
    health_file = tmp_path / "health"
    until(
        lambda: listed(url, env) and health_file.exists(),
        "the worker registers and touches its file",
        deadline=15.0,
    )
    first = health_file.stat().st_mtime
    until(
        lambda: health_file.stat().st_mtime > first,
        "the file is touched on every heartbeat",
        deadline=15.0,
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert not health_file.exists(), "a stopped worker's health file must not say it is alive"
    assert listed(url, env) == [], "a stopped worker unregisters at once"
    gone = omniq(url, env, "health", "--file", str(health_file), "--max-age", "90s")
    assert gone.returncode == 1 and "does not exist" in gone.stderr


@pytest.mark.slow
def test_a_health_file_says_how_old_it_may_get_so_a_killed_worker_s_file_fails_the_probe(
    url: str, env: dict[str, str], worker: subprocess.Popen[str], tmp_path: Path
) -> None:
    """A worker killed with kill -9 leaves its file behind: without --max-age the probe
    answered healthy for ever. The file states its max age (the registry entry's ttl,
    1.5 s here), so the probe with no option tells."""
    health_file = tmp_path / "health"
    until(health_file.exists, "the worker writes its health file", deadline=15.0)
    assert health_file.read_text().split() == ["max-age", "1.5"]
    live = omniq(url, env, "health", "--file", str(health_file))
    assert live.returncode == 0 and "healthy" in live.stdout, live
    worker.kill()
    worker.wait(timeout=20)
    assert health_file.exists(), "kill -9 leaves the file behind"
    failing: list[subprocess.CompletedProcess[str]] = []
    until(
        lambda: (
            failing.append(omniq(url, env, "health", "--file", str(health_file)))
            or failing[-1].returncode
        ),
        "the probe fails once the killed worker's file is older than it states",
        deadline=15.0,
    )
    assert failing[-1].returncode == 1, failing[-1]
    assert "stated in the file: 1.5 s" in failing[-1].stderr, failing[-1].stderr
    kept = omniq(url, env, "health", "--file", str(health_file), "--max-age", "1h")
    assert kept.returncode == 0, "--max-age overrides what the file states"


def test_a_health_file_that_states_no_max_age_needs_the_option(
    url: str, env: dict[str, str], tmp_path: Path
) -> None:
    """An empty file (an older worker's) states nothing: a usage error naming the option,
    not healthy for ever."""
    left = tmp_path / "health"
    left.touch()
    hour_ago = time.time() - 3600
    os.utime(left, (hour_ago, hour_ago))
    result = omniq(url, env, "health", "--file", str(left))
    assert result.returncode == 2, result
    assert "does not say how old it may get" in result.stderr, result.stderr
    assert "--max-age" in result.stderr
    stale = omniq(url, env, "health", "--file", str(left), "--max-age", "90s")
    assert stale.returncode == 1, stale
    told = re.search(r"last touched 36\d\d\.\d s ago \(--max-age: 90 s\)", stale.stderr)
    assert told, stale.stderr


def test_workers_and_health_with_no_worker(url: str, env: dict[str, str]) -> None:
    OmniQ(task_queue=url).close()
    assert "No live workers." in omniq(url, env, "workers").stdout
    assert listed(url, env) == []
    result = omniq(url, env, "health", "--max-age", "90s")
    assert (
        result.returncode == 1
        and "unhealthy: no live worker with a heartbeat in the last 90 s" in result.stderr
    )
    bad = omniq(url, env, "health", "--max-age", "soon")
    assert bad.returncode == 2 and "'soon' is not a duration" in bad.stderr


def test_cancel_from_the_command_line(url: str, env: dict[str, str]) -> None:
    with OmniQ(task_queue=url) as app:
        task = app.enqueue("some.task")
        result = omniq(url, env, "cancel", task.id)
        assert result.returncode == 0 and f"Task {task.id} cancelled." in result.stdout, result
        assert app.get_task(task.id).state.value == "cancelled"
        again = omniq(url, env, "cancel", task.id)
        assert again.returncode == 1 and "already finished (cancelled)" in again.stderr
        missing = omniq(url, env, "cancel", "no-such-task")
        assert missing.returncode == 1 and "no-such-task" in missing.stderr


def test_schedules_delete_from_the_command_line(url: str, env: dict[str, str]) -> None:
    with OmniQ(task_queue=url) as app:
        sid = app.schedule("some.task", interval=60)
        result = omniq(url, env, "schedules", "delete", sid)
        assert result.returncode == 0 and f"Schedule {sid} deleted." in result.stdout, result
        assert app.list_schedules() == []
        again = omniq(url, env, "schedules", "delete", sid)
        assert again.returncode == 1 and f"no schedule {sid!r}" in again.stderr


async def reserve_one(url: str) -> list[Task]:
    async with registry.resolve("task_queue", url) as queue:
        return await queue.reserve(["default"], "a-worker", 60.0)


def test_purge_without_a_state_keeps_running_tasks(url: str, env: dict[str, str]) -> None:
    with OmniQ(task_queue=url) as app:
        for _ in range(3):
            app.enqueue("some.task")
        [running] = asyncio.run(reserve_one(url))  # as a worker holding it would
        result = omniq(url, env, "purge", "--yes")
        assert result.returncode == 0 and "Deleted 2 task(s)." in result.stdout, result
        assert [t.id for t in app.list_tasks()] == [running.id]
        result = omniq(url, env, "purge", "--state", "running", "--yes")
        assert "Deleted 1 task(s)." in result.stdout
        assert app.list_tasks() == []


async def dead_letter(url: str, queue: str, count: int) -> list[Task]:
    """``count`` tasks of ``queue`` reserved and dead-lettered, as a worker giving up would."""
    async with registry.resolve("task_queue", url) as store:
        got = await store.reserve([queue], "a-worker", 60.0, limit=count)
        for t in got:
            assert await store.dead_letter(t.id, t.lease_token, None)
        return got


def test_requeue_from_the_command_line(url: str, env: dict[str, str]) -> None:
    with OmniQ(task_queue=url) as app:
        mail = [app.enqueue("shop.send_mail", queue="mail").id for _ in range(3)]
        app.enqueue("shop.report", queue="reports")
        asyncio.run(dead_letter(url, "mail", 3))
        asyncio.run(dead_letter(url, "reports", 1))
        dry = omniq(url, env, "requeue", "--queue", "mail", "--since", "1h", "--dry-run")
        assert dry.returncode == 0 and "Would requeue 3 task(s)." in dry.stdout, dry
        assert all(i in dry.stdout for i in mail)
        assert app.stats()["mail"].get("pending", 0) == 0, "a dry run changes nothing"
        later = omniq(url, env, "requeue", "--queue", "mail", "--until", "1h", "--yes")
        assert "Nothing to requeue." in later.stdout, "they all ended in the last hour"
        asked = subprocess.run(
            [sys.executable, "-m", "omniq.cli", "--task-queue", url, "requeue", "-q", "mail"],
            input="n\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert asked.returncode == 1 and "Requeue 3 dead task(s) of queue 'mail'?" in asked.stderr
        done = omniq(url, env, "requeue", "--queue", "mail", "--name", "shop.send_mail", "--yes")
        assert done.returncode == 0 and "Requeued 3 task(s)" in done.stdout, done
        who = done.stdout.split("by=", 1)[1].strip().rstrip(".")
        for old in mail:
            [event] = app.events(task_id=old, types=["requeued"])
            assert event.detail["by"] == who and who.startswith("cli:") and "@" in who
            new = app.get_task(str(event.detail["to"]))
            assert new.state.value == "pending" and new.attempts == 0
        again = omniq(url, env, "requeue", "--queue", "mail", "--yes")
        assert "Nothing to requeue." in again.stdout, "a task requeued before is left out"
        [report] = [t.id for t in app.list_tasks(queue="reports")]
        by_id = omniq(url, env, "requeue", report, "--json")
        assert json.loads(by_id.stdout)[0]["id"] == report, by_id
        running = app.enqueue("shop.report", queue="reports").id
        refused = omniq(url, env, "requeue", running)
        assert refused.returncode == 1 and "is pending" in refused.stderr, refused
        mixed = omniq(url, env, "requeue", running, "--queue", "mail")
        assert mixed.returncode == 2 and "not both" in mixed.stderr


def test_an_empty_requeue_window_names_the_options_as_given(url: str, env: dict[str, str]) -> None:
    """``--since 1h --until 2h`` (both mean that long ago) selects nothing: the error
    names both options as typed and when they are, not epoch seconds."""
    result = omniq(url, env, "requeue", "--since", "1h", "--until", "2h", "--dry-run")
    assert result.returncode == 2, result
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert "--since 1h" in line and "--until 2h" in line, line
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line), line
    assert not re.search(r"\d{10}\.\d", line), f"epoch seconds shown: {line}"
    # A duration so long it ends before any date: still the usage error, not a ValueError.
    result = omniq(url, env, "requeue", "--since", "1h", "--until", "99999999d", "--dry-run")
    assert result.returncode == 2, result
    assert "the window is empty: --until 99999999d" in result.stderr, result.stderr


def test_task_tells_a_lapsed_lease_and_a_passed_ttl(url: str, env: dict[str, str]) -> None:
    """A stuck task: its worker died, so its lease ran out, or its ttl passed before any
    worker took it. `omniq task` showed both times as if current; it says they passed."""

    async def reserve_briefly() -> list[Task]:
        async with registry.resolve("task_queue", url) as queue:
            return await queue.reserve(["default"], "gone-worker", 0.2)

    with OmniQ(task_queue=url) as app:
        app.enqueue("some.task")
        [held] = asyncio.run(reserve_briefly())
        late = app.enqueue("some.task", queue="later", ttl=0.05)
        expires = app.get_task(late.id).expires_at or 0
    until(
        lambda: time.time() > max(held.lease_deadline or 0, expires) + 0.1,
        "both passed",
        deadline=15.0,
    )
    shown = omniq(url, env, "task", held.id)
    assert shown.returncode == 0, shown
    assert re.search(r"worker\tgone-worker \(lease ran out at .* s ago", shown.stdout), shown.stdout
    shown = omniq(url, env, "task", late.id)
    assert re.search(r"expires\t.* \(passed .* s ago: it will not run", shown.stdout), shown.stdout


def test_a_health_file_that_cannot_be_written_stops_the_worker_naming_it(
    url: str, env: dict[str, str], tmp_path: Path
) -> None:
    """A probe reading a file the worker cannot write fails for ever, so the worker must
    say so at start: it printed ``Error: [Errno 17] File exists: '...'``, no path asked
    for, no option named."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "omniq.cli",
            "--task-queue",
            url,
            "worker",
            "--burst",
            "--no-progress",
            "--health-file",
            str(blocker / "health"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0, result
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert f"--health-file {blocker / 'health'}" in line, line


def test_grace_period_takes_a_duration_text(url: str, env: dict[str, str]) -> None:
    """The config takes ``grace_period: 1m``; the flag refused it with "'1m' is not a valid
    float range", naming no valid form."""

    def worker(grace: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "omniq.cli", "--task-queue", url, "worker", "--burst"),
                *("--no-progress", "--grace-period", grace),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    ok = worker("1m")
    assert ok.returncode == 0 and "grace_period=60.0" in ok.stderr, ok.stderr
    assert "grace_period=0.0" in worker("0").stderr
    bad = worker("soon")
    assert bad.returncode == 2 and "'soon' is not a duration" in bad.stderr, bad.stderr
    assert "'30s', '5m'" in bad.stderr


def test_task_names_where_it_was_requeued_to_and_from(url: str, env: dict[str, str]) -> None:
    """Inspecting a dead task did not say it was requeued already (and as which task),
    nor a requeued one where it came from: the dashboard's task page says both."""
    with OmniQ(task_queue=url) as app:
        app.enqueue("shop.send_mail", queue="mail")
        [dead] = asyncio.run(dead_letter(url, "mail", 1))
        new = app.requeue(dead.id, by="ops").id
    old_view = omniq(url, env, "task", dead.id)
    assert f"requeued as\t{new}" in old_view.stdout, old_view.stdout
    new_view = omniq(url, env, "task", new)
    assert f"requeued from\t{dead.id}" in new_view.stdout, new_view.stdout
    as_json = json.loads(omniq(url, env, "task", dead.id, "--json").stdout)
    assert as_json["requeued_to"] == [new]


def test_a_question_with_no_answer_says_to_add_yes(url: str, env: dict[str, str]) -> None:
    """Run from cron or CI (stdin closed), requeue and purge ended with "Aborted!"."""
    with OmniQ(task_queue=url) as app:
        app.enqueue("shop.send_mail", queue="mail")
        asyncio.run(dead_letter(url, "mail", 1))
    for args in (["requeue", "-q", "mail"], ["purge", "--queue", "mail"]):
        result = subprocess.run(
            [sys.executable, "-m", "omniq.cli", "--task-queue", url, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 1, result
        assert "Aborted!" not in result.stderr, result.stderr
        assert "--yes" in result.stderr and "nothing was" in result.stderr, result.stderr


def test_requeue_json_is_only_json(url: str, env: dict[str, str]) -> None:
    """``omniq requeue --json | jq`` broke when nothing matched ("Nothing to requeue."
    before the ``[]``) and on a dry run (the table, then ``[]``)."""
    with OmniQ(task_queue=url) as app:
        app.enqueue("shop.send_mail", queue="mail")
        [dead] = asyncio.run(dead_letter(url, "mail", 1))
    nothing = omniq(url, env, "requeue", "--queue", "sms", "--yes", "--json")
    assert nothing.returncode == 0 and json.loads(nothing.stdout) == [], nothing.stdout
    dry = omniq(url, env, "requeue", "--queue", "mail", "--dry-run", "--json")
    assert json.loads(dry.stdout) == [{"id": dead.id, "requeued_as": None}], dry.stdout
