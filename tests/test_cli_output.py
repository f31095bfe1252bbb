"""The command line in pipes and scripts, as real processes: tables that survive a
pipe, a closed pipe, commands that must not create stores, and configuration that
means the same from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from omniq import OmniQ

pytest.importorskip("omniq_backend_sqlite")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    return {**clean, "COLUMNS": "40"}  # a narrow terminal's width must not matter in a pipe


def omniq(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omniq.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_tables_in_a_pipe_are_tab_separated_and_whole(tmp_path: Path, env: dict[str, str]) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with OmniQ(task_queue=url) as app:
        ids = [
            app.enqueue("reports.build_monthly_summary", queue="reports.monthly").id
            for _ in range(2)
        ]
        app.schedule("reports.build_monthly_summary", interval=3600, schedule_id="monthly-summary")
    events = omniq(env, "--task-queue", url, "events")
    assert events.returncode == 0, events.stderr
    header, *rows = events.stdout.splitlines()
    assert header.split("\t") == ["time", "event", "task", "name", "queue", "detail"]
    assert [row.split("\t")[1:5] for row in rows] == [
        ["enqueued", i, "reports.build_monthly_summary", "reports.monthly"] for i in ids
    ]
    queues = omniq(env, "--task-queue", url, "queues").stdout.splitlines()
    assert queues[0].split("\t")[0] == "queue" and queues[1].split("\t")[:2] == [
        "reports.monthly",
        "2",
    ]
    schedules = omniq(env, "--task-queue", url, "schedules", "list").stdout.splitlines()
    assert schedules[1].split("\t")[:3] == [
        "monthly-summary",
        "reports.build_monthly_summary",
        "3600 s",
    ]
    assert schedules[1].split("\t")[-1] == "active", "markup is not printed"
    task = omniq(env, "--task-queue", url, "task", ids[0]).stdout.splitlines()
    assert f"id\t{ids[0]}" in task and "name\treports.build_monthly_summary" in task


@pytest.mark.parametrize("args", [["plugins", "--json"], ["plugins"], ["demo", "--help"]])
def test_a_closed_pipe_ends_the_command_quietly(env: dict[str, str], args: list[str]) -> None:
    """As ``omniq plugins --json | head``: the reader is gone before the command writes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) in (0, 1)
    assert stderr == "", f"a closed pipe must end the command quietly, got:\n{stderr}"


@pytest.mark.parametrize(
    "command",
    [
        ["queues"],
        ["events"],
        ["workers"],
        ["schedules", "list"],
        ["task", "some-id"],
        ["purge", "--yes"],
        ["health"],
    ],
)
def test_commands_other_than_worker_never_create_a_store(
    tmp_path: Path, env: dict[str, str], command: list[str]
) -> None:
    typo = tmp_path / "omnq.db"
    result = omniq(env, "--task-queue", f"sqlite:///{typo}", *command)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: SQLite database '{typo}' does not exist"), (
        result.stderr
    )
    assert not typo.exists(), "a mistyped path must not become an empty database"


def test_a_missing_fsspec_directory_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    pytest.importorskip("omniq_backend_fsspec")
    result = omniq(env, "--task-queue", f"file://{tmp_path / 'nowhere'}", "queues")
    assert result.returncode == 1 and "does not exist" in result.stderr, result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_yaml_file_means_the_same_stores_from_any_directory(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Relative SQLite paths resolve against the file's directory; durations are text."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "omniq.yaml").write_text(
        textwrap.dedent("""
        task_queue: sqlite:///var/omniq.db
        lease: 90s
        result_ttl: 1d
        worker:
          grace_period: 1m
          queues: [mail]
    """)
    )
    (project / "var").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = str(project / "omniq.yaml")
    ran = omniq(env, "--config", config, "worker", "--burst", "--no-progress", cwd=elsewhere)
    assert ran.returncode == 0, ran.stderr
    assert (project / "var" / "omniq.db").is_file() and not (elsewhere / "var").exists()
    with OmniQ(config=config) as app:
        assert (app.config.lease, app.config.result_ttl, app.config.worker.grace_period) == (
            90,
            86400,
            60,
        )
        app.enqueue("some.task", queue="mail")
    shown = omniq(env, "--config", "../project/omniq.yaml", "queues", cwd=elsewhere)
    assert shown.returncode == 0 and shown.stdout.splitlines()[1].startswith("mail\t1"), shown


@pytest.mark.parametrize(
    ("name", "key"),
    [("OMNIQ_LAESE", "'laese'"), ("OMNIQ_WORKER__CONCURENCY", "'worker.concurency'")],
)
def test_an_unknown_omniq_variable_is_reported_like_an_unknown_yaml_key(
    tmp_path: Path, env: dict[str, str], name: str, key: str
) -> None:
    result = omniq({**env, name: "3"}, "--task-queue", f"sqlite:///{tmp_path / 'q.db'}", "queues")
    assert result.returncode == 1
    assert f"unknown config key {key} in the environment ({name}); did you mean" in result.stderr
    plugin_own = omniq({**env, "OMNIQ_TEST_REDIS_URL": "redis://x"}, "plugins")
    assert plugin_own.returncode == 0, "a variable far from every key belongs to someone else"


def test_messages_in_a_pipe_are_whole_lines(tmp_path: Path, env: dict[str, str]) -> None:
    """A narrow terminal's width (COLUMNS=40 here) must not break a message in a pipe:
    ``omniq cancel ID | grep`` and scripts read the task id on the line it is named on."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with OmniQ(task_queue=url) as app:
        task_id = app.enqueue("reports.build_monthly_summary", queue="reports.monthly").id
        app.schedule("reports.build_monthly_summary", interval=3600, name="monthly-summary-long")
    cancelled = omniq(env, "--task-queue", url, "cancel", task_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"Task {task_id} cancelled.\n"
    paused = omniq(env, "--task-queue", url, "schedules", "pause", "monthly-summary-long")
    assert paused.stdout == "Schedule monthly-summary-long paused.\n"


def on_a_terminal(env: dict[str, str], *args: str, columns: int = 80) -> str:
    """What ``omniq ARGS`` shows on a terminal ``columns`` wide (a pseudo-terminal)."""
    import pty
    import re

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq.cli", *args],
        stdout=follower,
        stderr=follower,
        env={**env, "COLUMNS": str(columns), "TERM": "xterm"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, b"".join(chunks)
    return re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())


def test_tables_on_an_80_column_terminal_cut_no_value(tmp_path: Path, env: dict[str, str]) -> None:
    """A table wider than the terminal cut every column to fit: `omniq queues` on 80
    columns showed its queues as ``rep…``, `omniq workers` its ids as ``vm:1…``."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with OmniQ(task_queue=url) as app:
        ref = app.enqueue("reports.build_monthly_summary", queue="reports.monthly")
        app.cancel(ref.id)
        app.enqueue("reports.build_monthly_summary", queue="reports.monthly", ttl=0.001)
        app.schedule("shop.tick", interval=3600, name="monthly-summary")
        app.schedule("shop.tick", cron="0 3 * * *", name="nightly-summary")
    schedules = on_a_terminal(env, "--task-queue", url, "schedules", "list")
    assert "┃ id" in schedules, "a table that fits with its cells wrapped is drawn"
    assert "monthly-summary" in schedules and "…" not in schedules, schedules
    queues = on_a_terminal(env, "--task-queue", url, "queues")
    assert "reports.monthly" in queues and "…" not in queues, queues
    events = on_a_terminal(env, "--task-queue", url, "events")
    assert ref.id in events and "reports.build_monthly_summary" in events, events
    assert "…" not in events, events


def test_a_no_wrap_column_is_not_narrowed_to_fit(tmp_path: Path, env: dict[str, str]) -> None:
    """`omniq events` keeps its time, event and task columns on one line (no_wrap): fitting
    the table by narrowing them made rich cut the time to '2026-12-08 02:…' on terminals
    a little narrower than the table."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with OmniQ(task_queue=url) as app:
        ref = app.enqueue("job", queue="mail")
    for columns in (100, 108, 112, 116, 124):
        events = on_a_terminal(env, "--task-queue", url, "events", columns=columns)
        assert ref.id in events and "…" not in events, (columns, events)
