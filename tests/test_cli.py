"""The ``omniq`` command line against a temporary SQLite file: each command's happy
path and its error path (exit code != 0 with one line naming the problem)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from omniq import BackendSpec, OmniQ, hookimpl, register_plugin
from omniq.cli import cli
from omniq.cli.state import CliState
from omniq.registry import registry
from omniq.testing import until


class Runner(CliRunner):
    """Runs the CLI in this process as in a program without a logging set-up of its own:
    pytest's capture handlers on the root logger would otherwise count as the
    application's, and the CLI would (rightly) leave logging to them."""

    def invoke(self, *args: Any, **kwargs: Any) -> Result:  # type: ignore[override]
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        root.handlers.clear()
        try:
            return super().invoke(*args, **kwargs)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)


pytest.importorskip("omniq_backend_sqlite")

Invoke = Callable[..., Result]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No omniq.yaml or OMNIQ_* variable of the developer's shell leaks in."""
    for name in list(os.environ):
        if name.startswith("OMNIQ_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")


def created(url: str) -> str:
    """``url`` once its database exists (only a worker creates one from the CLI)."""
    app = OmniQ(task_queue=url)
    app.open()
    app.close()
    return url


@pytest.fixture
def url(tmp_path: Path) -> str:
    return created(f"sqlite:///{tmp_path / 'omniq.db'}")


@pytest.fixture
def invoke(url: str) -> Invoke:
    def run(*args: str, input: str | None = None) -> Result:
        return Runner().invoke(cli, ["--task-queue", url, *args], input=input, obj=CliState())

    return run


@pytest.fixture
def app(url: str) -> Iterator[OmniQ]:
    app = OmniQ(task_queue=url)
    yield app
    app.close()


@pytest.fixture
def tasks_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of tasks in tmp_path, under a unique name (each test imports it afresh)."""
    name = f"omniq_cli_tasks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
        import time
        from omniq import OmniQ

        app = OmniQ()

        @app.task
        def double(x):
            return 2 * x

        @app.task
        def boom():
            raise ValueError("no good")

        @app.task
        def nap(i):
            time.sleep(0.2)
            return i
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def processed(invoke: Invoke, app: OmniQ, tasks_module: str) -> dict[str, str]:
    """Two tasks run by `omniq worker --burst`: one succeeds, one is dead-lettered."""
    ok = app.enqueue(f"{tasks_module}.double", 21)
    bad = app.enqueue(f"{tasks_module}.boom")
    result = invoke("worker", "--app", f"{tasks_module}:app", "--burst", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "stopped (burst)" in result.stderr
    return {"ok": ok.id, "bad": bad.id}


# -- errors ----------------------------------------------------------------------------


def test_unknown_backend_is_one_line_naming_it() -> None:
    result = Runner().invoke(cli, ["--task-queue", "nosuch://x", "queues"], obj=CliState())
    one_line_error(result, "'nosuch'", "sqlite")


@pytest.mark.parametrize(
    "ref", ["bad_scheme!://user:hunter2@host/x.db", "sqlite://user:hunter2@host/x.db"]
)
def test_password_is_masked_in_errors(ref: str) -> None:
    result = Runner().invoke(cli, ["--task-queue", ref, "queues"], obj=CliState())
    one_line_error(result, "user:***@host")
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    ("ref", "shown"),
    [
        ("nats://tok-S3CRET@127.0.0.1:1?connect_timeout=0.5", "nats://***@127.0.0.1:1"),
        ("redis://:S3CRET@p/w@127.0.0.1:notaport/0", "redis://:***@127.0.0.1:notaport/0"),
        ("redis://:S3C@RET@127.0.0.1:6379/abc", "redis://:***@127.0.0.1:6379/abc"),
    ],
)
def test_tokens_and_odd_passwords_are_masked_in_errors(ref: str, shown: str) -> None:
    """A token URL failing to open, and passwords holding '/' or '@' refused at
    configuration: the one-line error shows the URL masked."""
    pytest.importorskip(f"omniq_backend_{ref.split(':')[0]}")
    result = Runner().invoke(cli, ["--task-queue", ref, "queues"], obj=CliState())
    one_line_error(result, shown)
    assert "S3C" not in result.output and "RET" not in result.output


def test_debug_raises_the_original_error() -> None:
    result = Runner().invoke(
        cli, ["--debug", "--task-queue", "nosuch://x", "queues"], obj=CliState()
    )
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "UnknownBackendError"


def test_bad_config_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("task_queeu: sqlite:///x.db\n")
    result = Runner().invoke(cli, ["--config", "bad.yaml", "queues"], obj=CliState())
    one_line_error(result, "task_queeu", "task_queue")


# -- plugins ---------------------------------------------------------------------------


def test_plugins_json_lists_sqlite(invoke: Invoke) -> None:
    entries = {e["name"]: e for e in as_json(invoke("plugins", "--json"))}
    sqlite = entries["sqlite"]
    assert sqlite["error"] is None
    assert sqlite["backends"][0]["schemes"] == ["sqlite"]
    assert set(sqlite["backends"][0]["provides"]) == {
        "task_queue",
        "result_storage",
        "event_storage",
    }
    assert not any(e["builtin"] for e in entries.values())


def test_plugins_all_includes_builtin_pools(invoke: Invoke) -> None:
    builtin = [e for e in as_json(invoke("plugins", "--json", "--all")) if e["builtin"]]
    assert {"async", "thread", "process"} <= {w for e in builtin for w in e["pools"]}
    table = invoke("plugins", "--all")
    assert table.exit_code == 0 and "sqlite" in table.stdout and "built-in" in table.stdout


class _CliPlugin:
    @hookimpl
    def omniq_register_cli_commands(self, cli: click.Group) -> None:
        @cli.command()
        def hello() -> None:
            click.echo("hello from a plugin")


class _BrokenCliPlugin:
    @hookimpl
    def omniq_register_cli_commands(self, cli: click.Group) -> None:
        raise RuntimeError("cannot build my commands")


class _GreedyCliPlugin:
    @hookimpl
    def omniq_register_cli_commands(self, cli: click.Group) -> None:
        @cli.command("worker")
        def my_worker() -> None:
            """Not the real worker."""


@pytest.fixture
def cli_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    names = {
        "test-cli-ok": _CliPlugin(),
        "test-cli-broken": _BrokenCliPlugin(),
        "test-cli-greedy": _GreedyCliPlugin(),
    }
    for name, plugin in names.items():
        register_plugin(plugin, name)
    monkeypatch.setattr(cli, "_plugins_loaded", False)
    monkeypatch.setattr(cli, "plugin_errors", {})
    monkeypatch.setattr(cli, "commands", dict(cli.commands))
    yield
    for name in names:
        registry.unregister_plugin(name)


@pytest.mark.usefixtures("cli_plugins")
def test_plugin_commands_are_added_and_failures_reported(invoke: Invoke) -> None:
    result = invoke("hello")
    assert result.exit_code == 0, result.output
    assert "hello from a plugin" in result.stdout
    assert (
        "'test-cli-broken' could not add its commands: RuntimeError: cannot build my commands"
        in result.stderr
    )
    assert "'test-cli-greedy' could not add its commands" in result.stderr
    assert "Run a worker" in invoke("worker", "--help").stdout  # the built-in one stayed
    errors = {e["name"]: e["cli_error"] for e in as_json(invoke("plugins", "--json"))}
    assert "cannot build my commands" in errors["test-cli-broken"]
    assert errors["test-cli-ok"] is None


class _RivalPlugin:
    """A backend claiming the scheme 'contested' (and one of its own)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def omniq_register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        register(
            BackendSpec(
                name=self.name, schemes=("contested", self.name), task_queue="nowhere:Queue"
            )
        )


@pytest.fixture
def rival_plugins() -> Iterator[None]:
    names = ["rival-one", "rival-two"]
    for name in names:
        register_plugin(_RivalPlugin(name), name)
    yield
    for name in names:
        registry.unregister_plugin(name)


@pytest.mark.usefixtures("rival_plugins")
def test_plugins_flags_a_scheme_claimed_by_two_plugins(invoke: Invoke) -> None:
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for name in ("rival-one", "rival-two"):
        assert re.search(r"conflict \[\d+\]", rows[name]), result.stdout
    text = " ".join(result.stdout.split())
    assert (
        "URL scheme 'contested' is claimed by rival-one (registered in code) and rival-two "
        "(registered in code): resolving it fails"
    ) in text, text
    entries = {e["name"]: e for e in as_json(invoke("plugins", "--json"))}
    assert entries["rival-one"]["conflicts"] == ["URL scheme 'contested'"]
    assert entries["sqlite"]["conflicts"] == []


@pytest.mark.usefixtures("rival_plugins", "cli_plugins")
def test_plugins_table_is_readable_at_80_columns(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is cut short with an ellipsis, nothing passes column 80, and errors are
    shown whole (under the table), not squeezed into a narrow cell."""
    from omniq.cli import ui

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(ui.out, "_force_terminal", True)  # a pipe gets tab-separated lines
    result = invoke("plugins", "--all")
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    assert "…" not in result.stdout, result.stdout
    assert "register_cli_commands" in result.stdout  # a hook's name, unbroken
    text = " ".join(result.stdout.split())
    assert "RuntimeError: cannot build my commands" in text, result.stdout


# -- worker ----------------------------------------------------------------------------


def test_worker_burst_runs_tasks_of_app_module(processed: dict[str, str], app: OmniQ) -> None:
    assert app.get_result(processed["ok"], timeout=0) == 42
    assert app.get_task(processed["bad"]).state.value == "dead"


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        ((), "concurrency=3 prefetch=12"),  # the default, 4 x concurrency
        (("--prefetch", "0"), "concurrency=3 prefetch=0"),
        (("--prefetch", "5"), "concurrency=3 prefetch=5"),
    ],
)
def test_worker_prefetch_option_reaches_the_worker(
    invoke: Invoke, tasks_module: str, flags: tuple[str, ...], shown: str
) -> None:
    result = invoke(
        "worker", "--app", f"{tasks_module}:app", "-c", "3", *flags, "--burst", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    assert f"started: pool=async {shown} queues=default" in result.stderr


def test_worker_negative_prefetch_is_refused(invoke: Invoke, tasks_module: str) -> None:
    result = invoke("worker", "--app", f"{tasks_module}:app", "--prefetch", "-1", "--burst")
    assert result.exit_code != 0
    assert "--prefetch" in result.stderr and "-1" in result.stderr


def test_worker_bad_pool_is_one_line(invoke: Invoke, tasks_module: str) -> None:
    one_line_error(
        invoke("worker", "--app", f"{tasks_module}:app", "--pool", "nopool", "--burst"),
        "'nopool'",
        "async",
    )


def test_worker_warns_when_its_task_queue_cannot_be_shared_between_processes(
    tasks_module: str,
) -> None:
    """A memory:// queue lives in one process: the worker says so at start, and why,
    instead of leaving the user with an empty queue (or a backend's lock error)."""
    pytest.importorskip("omniq_backend_fsspec")
    result = Runner().invoke(
        cli,
        [
            "--task-queue",
            "memory://lonely",
            "worker",
            "--app",
            f"{tasks_module}:app",
            "--burst",
            "--no-progress",
        ],
        obj=CliState(),
    )
    assert result.exit_code == 0, result.output
    assert "memory://lonely" in result.stderr and "cross_process" in result.stderr
    assert "never those of another process" in result.stderr


def test_worker_on_a_shared_queue_does_not_warn(invoke: Invoke, tasks_module: str) -> None:
    result = invoke("worker", "--app", f"{tasks_module}:app", "--burst", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "cross_process" not in result.stderr


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("nosuchmodule:app", "cannot import 'nosuchmodule'"),
        ("{mod}:nothere", "has no attribute 'nothere'"),
        ("{mod}:double", "expected an OmniQ or AsyncOmniQ instance"),
        ("no-colon", "expected 'module:attribute'"),
    ],
)
def test_worker_bad_app_is_one_line(
    invoke: Invoke, tasks_module: str, ref: str, fragment: str
) -> None:
    one_line_error(invoke("worker", "--app", ref.format(mod=tasks_module), "--burst"), fragment)


def test_store_flag_ignored_by_app_is_an_error(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"omniq_cli_pinned_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        f"from omniq import OmniQ\napp = OmniQ(task_queue={url!r})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    other = f"sqlite:///{tmp_path / 'other.db'}"
    result = Runner().invoke(
        cli, ["--task-queue", other, "worker", "--app", f"{name}:app", "--burst"], obj=CliState()
    )
    one_line_error(result, "--task-queue", "sets task_queue")


def test_worker_recycles_by_reexecuting(
    tmp_path: Path, url: str, app: OmniQ, tasks_module: str
) -> None:
    """--max-tasks-per-child on the async pool: the process re-executes itself and the
    new one finishes the queue."""
    refs = app.enqueue_many(f"{tasks_module}.nap", [(i,) for i in range(8)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "omniq.cli",
            "--task-queue",
            url,
            "worker",
            "--app",
            f"{tasks_module}:app",
            "--burst",
            "-c",
            "1",
            "--max-tasks-per-child",
            "2",
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "re-executing the process" in proc.stderr
    assert "stopped (burst)" in proc.stderr
    assert [app.get_result(r, timeout=0) for r in refs] == list(range(8))


def test_worker_drains_on_sigterm(tmp_path: Path, url: str, tasks_module: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    log = tmp_path / "worker.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "omniq.cli",
                "--task-queue",
                url,
                "worker",
                "--app",
                f"{tasks_module}:app",
                "--no-progress",
            ],
            cwd=tmp_path,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:

        def started() -> bool:
            assert proc.poll() is None, log.read_text()
            return "started: pool=async" in log.read_text()

        until(started, "the worker started", deadline=30.0, show=log.read_text)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        proc.kill()
    assert "stopped (signal)" in log.read_text()


def test_a_store_that_fails_to_open_ends_the_command(tmp_path: Path) -> None:
    """The stores opened before the failing one are closed: the process exits with its
    one-line error instead of hanging on their connections."""
    pytest.importorskip("omniq_backend_postgres")
    unreachable = "postgresql://omniq:hunter2@127.0.0.1:1/test"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "omniq.cli",
            "--task-queue",
            created(f"sqlite:///{tmp_path / 'omniq.db'}"),
            "--event-storage",
            unreachable,
            "events",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("Error: cannot connect to PostgreSQL at host 127.0.0.1:1")
    assert "hunter2" not in line


# -- task, events, queues --------------------------------------------------------------


def test_task_shows_result_and_error(invoke: Invoke, processed: dict[str, str]) -> None:
    ok = invoke("task", processed["ok"])
    assert ok.exit_code == 0, ok.output
    assert "succeeded" in ok.stdout and "42" in ok.stdout and "[21]" in ok.stdout
    bad = as_json(invoke("task", processed["bad"], "--json"))
    assert bad["task"]["state"] == "dead"
    assert bad["result"]["error"]["message"] == "no good"
    shown = invoke("task", processed["bad"], "--traceback")
    assert "ValueError: no good" in shown.stdout and 'raise ValueError("no good")' in shown.stdout


def test_task_unknown_id_is_a_clear_error(invoke: Invoke) -> None:
    one_line_error(invoke("task", "no-such-task"), "no task with id 'no-such-task'")
    one_line_error(invoke("task", "../etc"), "invalid task id")


def test_events_filters(invoke: Invoke, processed: dict[str, str]) -> None:
    every = as_json(invoke("events", "--json"))
    assert {e["type"] for e in every} >= {"enqueued", "started", "succeeded", "failed", "dead"}
    assert [e["timestamp"] for e in every] == sorted(e["timestamp"] for e in every)

    mine = as_json(invoke("events", "--task", processed["ok"], "--json"))
    assert [e["type"] for e in mine] == ["enqueued", "started", "succeeded"]
    dead = as_json(invoke("events", "--type", "dead", "--type", "FAILED", "--json"))
    assert {e["type"] for e in dead} == {"dead", "failed"}
    assert {e["task_id"] for e in dead} == {processed["bad"]}
    assert len(as_json(invoke("events", "--limit", "2", "--json"))) == 2
    assert (
        as_json(invoke("events", "--limit", "1", "--json"))[0]["id"] == every[-1]["id"]
    )  # the newest
    assert len(as_json(invoke("events", "--since", "10m", "--json"))) == len(every)
    assert as_json(invoke("events", "--since", "2999-01-01T00:00", "--json")) == []
    assert as_json(invoke("events", "--queue", "elsewhere", "--json")) == []
    table = invoke("events", "--task", processed["bad"])
    assert table.exit_code == 0 and "no good" in table.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--since", "yesterday"], "'yesterday' is neither a duration ago"),
        (["--type", "exploded"], "'exploded' is not one of"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_events_bad_filters(invoke: Invoke, args: list[str], fragment: str) -> None:
    result = invoke("events", *args)
    assert result.exit_code == 2
    assert fragment in result.stderr


def test_queues(invoke: Invoke, app: OmniQ) -> None:
    assert "No tasks" in invoke("queues").stdout
    app.enqueue("some.task", queue="emails")
    app.enqueue("some.task", queue="emails")
    app.enqueue("some.task", delay=3600)
    assert as_json(invoke("queues", "--json")) == {
        "default": {"scheduled": 1},
        "emails": {"pending": 2},
    }
    table = invoke("queues").stdout
    assert "emails" in table and "pending" in table and "succeeded" not in table


def test_purge(invoke: Invoke, app: OmniQ) -> None:
    for q in ("a", "a", "b"):
        app.enqueue("some.task", queue=q)
    refused = invoke("purge", "--queue", "a", input="n\n")
    assert refused.exit_code == 1 and "Delete 2 task(s) in queue 'a'" in refused.stderr
    assert as_json(invoke("queues", "--json")) == {"a": {"pending": 2}, "b": {"pending": 1}}
    assert "Nothing to purge" in invoke("purge", "--state", "dead", "--yes").stdout
    assert "Deleted 2 task(s)" in invoke("purge", "--queue", "a", "--yes").stdout
    assert "Deleted 1 task(s)" in invoke("purge", "--state", "pending", input="y\n").stdout
    assert as_json(invoke("queues", "--json")) == {}
    one_line_error(invoke("purge", "--queue", "no/slash", "--yes"), "invalid queue name")


# -- schedules -------------------------------------------------------------------------


def test_schedules_list_pause_resume(invoke: Invoke, app: OmniQ) -> None:
    assert "No schedules" in invoke("schedules", "list").stdout
    app.schedule("some.task", interval=60, schedule_id="every-minute")

    def listed() -> dict[str, Any]:
        return {s["id"]: s for s in as_json(invoke("schedules", "list", "--json"))}

    assert listed()["every-minute"]["paused"] is False
    assert "paused" in invoke("schedules", "pause", "every-minute").stdout
    assert listed()["every-minute"]["paused"] is True
    assert "paused" in invoke("schedules", "list").stdout
    assert "resumed" in invoke("schedules", "resume", "every-minute").stdout
    resumed = listed()["every-minute"]
    assert resumed["paused"] is False and resumed["next_run"] > time.time()
    one_line_error(invoke("schedules", "pause", "nope"), "no schedule 'nope'", "every-minute")
