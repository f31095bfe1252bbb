"""Inspection and control of tasks: ``task``, ``events``, ``queues``, ``purge``."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from ..errors import SerializationError, TaskNotFoundError
from ..models import (
    ACTIVE_STATES,
    PURGE_DEFAULT_STATES,
    READY_STATES,
    EventType,
    TaskState,
    validate_name,
)
from ..options import to_duration
from ..serialization import binding
from .root import app_option, cli
from .state import CliState
from .ui import confirm, fmt_time, out, print_json, print_table

if TYPE_CHECKING:
    from ..app import AsyncOmniQ
    from ..models import Task, TaskEvent, TaskResult

STATE_NAMES = [s.value for s in TaskState]


def parse_duration(
    ctx: click.Context | None,
    param: click.Parameter | None,
    value: str | None,
    *,
    above: bool = True,
) -> float | None:
    """Seconds as a number or a text such as ``90s``, ``15m``, ``1d`` (as in the config);
    above 0, or at least 0 with ``above=False``."""
    if value is None:
        return None
    try:
        return to_duration(value, above=above)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a duration: expected {exc}") from None


def parse_when(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> float | None:
    """A duration meaning that long ago (``10m``, ``2h``, ``1d``, ``1w``: the config's
    duration texts), or an ISO time (local time when it has no zone)."""
    if value is None:
        return None
    if ctx is not None and param is not None:  # for a message naming the option as typed
        ctx.meta[f"when:{param.name}"] = value
    try:
        return time.time() - to_duration(value, above=False)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.strip()).astimezone().timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration ago (e.g. 30s, 10m, 2h, 1d, 1w) nor an ISO time "
            f"(e.g. 2026-01-31T14:00 or 2026-01-31T14:00:00+00:00)"
        ) from None


def _decode(
    app: AsyncOmniQ, data: bytes | None, store: Any, what: str, bind: bytes | None = None
) -> Any:
    """Decode a stored value under the worker's trust rules; a value that cannot be
    decoded here (a class this process does not import) is shown, not fatal."""
    if data is None:
        return None
    try:
        return app.serializer.loads(data, local_only=store.local_only, origin=what, bind=bind)
    except SerializationError as exc:
        return f"<cannot decode: {exc}>"


def _task_view(app: AsyncOmniQ, task: Task | None, result: TaskResult | None) -> dict[str, Any]:
    view: dict[str, Any] = {}
    if task is not None:
        call = _decode(
            app,
            task.payload,
            app.task_queue,
            f"task {task.id}",
            binding(task.name, task.queue, task.id),
        )
        fields = {
            k: getattr(task, k)
            for k in task.__struct_fields__
            if k not in ("payload", "lease_token")
        }
        view["task"] = fields
        if isinstance(call, list) and len(call) >= 2:
            view["args"], view["kwargs"] = call[0], call[1]
    if result is not None:
        view["result"] = {
            "state": result.state,
            "value": _decode(app, result.value, app.result_storage, f"result of {result.task_id}"),
            "error": result.error,
            "attempts": result.attempts,
            "started_at": result.started_at,
            "finished_at": result.finished_at,
            "worker_id": result.worker_id,
        }
    return view


def _print_task(task_id: str, view: dict[str, Any], traceback: bool) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    task, result = view.get("task"), view.get("result")
    grid.add_row("id", task_id)
    if task is None:
        grid.add_row("task", "deleted after its retention; its result remains")
    else:
        grid.add_row("name", escape(task["name"]))
        grid.add_row("queue", f"{task['queue']}  (priority {task['priority']})")
        grid.add_row("state", str(task["state"].value))
        grid.add_row("attempts", f"{task['attempts']} (retries allowed: {task['max_retries']})")
        grid.add_row("args", escape(repr(view.get("args"))))
        grid.add_row("kwargs", escape(repr(view.get("kwargs"))))
        for label, key in (
            ("created", "created_at"),
            ("eta", "eta"),
            ("started", "started_at"),
            ("finished", "finished_at"),
        ):
            if task[key]:
                grid.add_row(label, fmt_time(task[key]))
        now = time.time()
        if task["expires_at"]:
            ago = now - task["expires_at"]
            passed = (
                f" (passed {ago:.1f} s ago: it will not run; a worker's cleanup marks it "
                "expired within a minute)"
                if ago > 0 and task["state"] in READY_STATES | {TaskState.WAITING}
                else ""
            )
            grid.add_row("expires", fmt_time(task["expires_at"]) + passed)
        if task["depends_on"]:
            grid.add_row("depends on", ", ".join(task["depends_on"]))
        if task["schedule_id"]:
            grid.add_row("schedule", task["schedule_id"])
        if task["lease_owner"]:
            deadline = task["lease_deadline"] or 0.0
            lease = (
                f"lease ran out at {fmt_time(deadline)}, {now - deadline:.1f} s ago: the worker "
                "stopped heartbeating (killed, paused, or cut off from the store); a live "
                "worker's sweep returns the task to its queue"
                if task["state"] is TaskState.RUNNING and deadline < now
                else f"lease until {fmt_time(deadline)}"
            )
            grid.add_row("worker", f"{escape(task['lease_owner'])} ({lease})")
        if task["error"] and (result is None or result["error"] is None):
            grid.add_row("last error", escape(f"{task['error'].type}: {task['error'].message}"))
    if result is not None:
        if result["error"] is None:
            grid.add_row("result", escape(repr(result["value"])))
        else:
            grid.add_row("error", escape(f"{result['error'].type}: {result['error'].message}"))
        grid.add_row("ran on", result["worker_id"] or "-")
    if view.get("requeued_from"):
        grid.add_row("requeued from", escape(view["requeued_from"]))
    for new in view.get("requeued_to", []):
        grid.add_row("requeued as", escape(new))
    print_table(grid)
    error = (result or {}).get("error") or (task or {}).get("error")
    if traceback and error is not None and error.traceback:
        out.print(escape(error.traceback.rstrip()), soft_wrap=True)


@cli.command("task")
@click.argument("task_id")
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--traceback", is_flag=True, help="Also print the traceback of the task's error.")
@click.pass_obj
def task_cmd(
    state: CliState, task_id: str, app_ref: str | None, as_json: bool, traceback: bool
) -> None:
    """Show a task: state, attempts, arguments, and its result or error."""
    validate_name("task id", task_id)

    async def fetch(app: AsyncOmniQ) -> dict[str, Any]:
        task = await app.task_queue.get(task_id)
        result = await app.get_task_result(task_id)
        if task is None and result is None:
            raise TaskNotFoundError(task_id, " (never enqueued, or deleted after its retention)")
        view = _task_view(app, task, result)
        if app.config.events:  # where an operator's requeue took it, or brought it from
            found = await app.event_storage.query(
                task_id=task_id, types=[EventType.REQUEUED.value, EventType.ENQUEUED.value]
            )
            view["requeued_to"] = [
                str(e.detail.get("to")) for e in found if e.type is EventType.REQUEUED
            ]
            view["requeued_from"] = next(
                (
                    str(e.detail["requeued_from"])
                    for e in found
                    if e.type is EventType.ENQUEUED and "requeued_from" in e.detail
                ),
                None,
            )
        return view

    view = state.run(state.build_app(app_ref), fetch)
    if as_json:
        print_json({"id": task_id, **view})
    else:
        _print_task(task_id, view, traceback)


def _detail(event: TaskEvent) -> str:
    return " ".join(f"{k}={v}" for k, v in event.detail.items() if k != "name")


@cli.command()
@click.option("--task", "task_id", metavar="ID", help="Only this task's events.")
@click.option("--queue", metavar="NAME", help="Only events of this queue.")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=click.Choice([t.value for t in EventType], case_sensitive=False),
    help="Only these event types (repeatable).",
)
@click.option(
    "--since",
    callback=parse_when,
    metavar="WHEN",
    help="Only events since a relative time (10m, 2h, 1d) or an ISO time.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show at most the newest N events.",
)
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def events(
    state: CliState,
    task_id: str | None,
    queue: str | None,
    types: tuple[str, ...],
    since: float | None,
    limit: int,
    app_ref: str | None,
    as_json: bool,
) -> None:
    """Show task events (newest N, oldest first)."""

    async def query(app: AsyncOmniQ) -> list[TaskEvent]:
        found = await app.events(
            task_id=task_id,
            queue=queue,
            types=[t.lower() for t in types] or None,
            since=since,
            limit=limit,
            order="desc",
        )
        return found[::-1]

    found = state.run(state.build_app(app_ref), query)
    if as_json:
        print_json(found)
        return
    if not found:
        out.print("No events match.")
        return
    table = Table("time", "event", "task", "name", "queue", "detail")
    for col in table.columns[:3]:
        col.no_wrap = True
    for e in found:
        table.add_row(
            fmt_time(e.timestamp),
            e.type.value,
            e.task_id,
            escape(str(e.detail.get("name", ""))),
            e.queue,
            escape(_detail(e)),
        )
    print_table(table)


@cli.command()
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def queues(state: CliState, app_ref: str | None, as_json: bool) -> None:
    """Show the number of tasks per queue and state."""

    async def stats(app: AsyncOmniQ) -> dict[str, dict[TaskState, int]]:
        return await app.stats()

    found = state.run(state.build_app(app_ref), stats)
    if as_json:
        print_json(
            {
                q: {TaskState(s).value: n for s, n in counts.items() if n}
                for q, counts in sorted(found.items())
            }
        )
        return
    if not found:
        out.print("No tasks in any queue.")
        return
    # Active states always; a terminal state only when some queue has such tasks.
    rows = {q: {TaskState(s): n for s, n in counts.items()} for q, counts in sorted(found.items())}
    shown = [s for s in TaskState if s in ACTIVE_STATES or any(r.get(s) for r in rows.values())]
    table = Table("queue", *(s.value for s in shown), "total")
    for q, by_state in rows.items():
        table.add_row(q, *(str(by_state.get(s, 0)) for s in shown), str(sum(by_state.values())))
    print_table(table)


@cli.command()
@click.option("--queue", metavar="NAME", help="Only this queue (default: every queue).")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATE_NAMES, case_sensitive=False),
    help="Only tasks in these states (repeatable; default: every state but running, "
    "whose workers still hold them).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@app_option
@click.pass_obj
def purge(
    state: CliState, queue: str | None, states: tuple[str, ...], yes: bool, app_ref: str | None
) -> None:
    """Delete tasks (results and events stay until their TTL)."""
    wanted = [TaskState(s.lower()) for s in states] or None
    counted = set(wanted or PURGE_DEFAULT_STATES)
    if queue:
        validate_name("queue name", queue)

    async def run(app: AsyncOmniQ) -> int:
        stats = await app.stats()
        count = sum(
            n
            for q, counts in stats.items()
            if queue in (None, q)
            for s, n in counts.items()
            if TaskState(s) in counted
        )
        if count == 0:
            return 0
        where = f"queue {queue!r}" if queue else "every queue"
        which = ", ".join(s.value for s in wanted) if wanted else "every state but running"
        if not yes:
            confirm(f"Delete {count} task(s) in {where} ({which})?", "nothing was deleted")
        return await app.purge(queue=queue, states=wanted)

    deleted = state.run(state.build_app(app_ref), run)
    out.print(f"Deleted {deleted} task(s)." if deleted else "Nothing to purge.")
