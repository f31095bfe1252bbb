"""Operator commands: ``cancel``, ``workers`` and ``health`` (the probe for Kubernetes
and other supervisors)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from ..models import validate_name
from ..options import to_duration
from .root import app_option, cli
from .state import CliState
from .ui import fmt_time, out, print_json, print_table

if TYPE_CHECKING:
    from ..app import AsyncOmniQ
    from ..models import WorkerInfo


def parse_duration(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> float | None:
    """Seconds as a number or a text such as ``90s``, ``15m``, ``1d`` (as in the config)."""
    if value is None:
        return None
    try:
        return to_duration(value, above=True)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a duration: expected {exc}") from None


@cli.command()
@click.argument("task_id")
@app_option
@click.pass_obj
def cancel(state: CliState, task_id: str, app_ref: str | None) -> None:
    """Cancel a task that has not finished (a running one loses its lease and is stopped
    by its worker); its dependents are cancelled too. Exits 1 if it had finished."""
    validate_name("task id", task_id)

    async def run(app: AsyncOmniQ) -> tuple[bool, str]:
        cancelled = await app.cancel(task_id)
        task = await app.task_queue.get(task_id)
        return cancelled, task.state.value if task is not None else "deleted"

    cancelled, now_state = state.run(state.build_app(app_ref), run)
    if not cancelled:
        raise click.ClickException(
            f"task {task_id} had already finished ({now_state}); nothing to cancel"
        )
    out.print(f"Task {task_id} cancelled.")


def _serves(worker: WorkerInfo, queue: str | None) -> bool:
    return queue is None or queue in worker.queues


@cli.command()
@click.option("--queue", "-q", metavar="NAME", help="Only workers serving this queue.")
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def workers(state: CliState, queue: str | None, app_ref: str | None, as_json: bool) -> None:
    """List the live workers (each registers in the task queue's store and refreshes on
    its heartbeat; a stopped or killed one drops out within three heartbeats)."""
    if queue:
        validate_name("queue name", queue)

    async def fetch(app: AsyncOmniQ) -> list[WorkerInfo]:
        return [w for w in await app.workers() if _serves(w, queue)]

    found = state.run(state.build_app(app_ref), fetch)
    if as_json:  # every field, also those at their defaults (in_flight 0)
        print_json([{f: getattr(w, f) for f in w.__struct_fields__} for w in found])
        return
    if not found:
        out.print("No live workers" + (f" serve queue {queue!r}." if queue else "."))
        return
    at = time.time()
    table = Table(
        "id",
        "host",
        "pid",
        "pool",
        "concurrency",
        "queues",
        "in flight",
        "started",
        "heartbeat",
        "version",
    )
    for w in found:
        table.add_row(
            escape(w.id),
            escape(w.host),
            str(w.pid),
            w.pool,
            str(w.concurrency),
            ",".join(w.queues),
            str(w.in_flight),
            fmt_time(w.started_at),
            f"{max(at - w.heartbeat_at, 0):.1f} s ago",
            w.version,
        )
    print_table(table)


def _file_health(path: str, max_age: float | None) -> None:
    """The worker's ``--health-file``: touched on each heartbeat, removed on stop."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        raise click.ClickException(
            f"unhealthy: health file {path!r} does not exist (no worker "
            f"runs with --health-file {path}, or it stopped)"
        ) from None
    if max_age is not None and age > max_age:
        raise click.ClickException(
            f"unhealthy: health file {path!r} was last touched {age:.1f} s "
            f"ago (--max-age {max_age:g} s)"
        )
    out.print(f"healthy: health file {path} touched {age:.1f} s ago")


@cli.command()
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    metavar="NAME",
    help="A queue that must be served by a live worker (repeatable; default: any "
    "live worker will do).",
)
@click.option(
    "--max-age",
    callback=parse_duration,
    metavar="SECONDS",
    help="A worker counts only if its last heartbeat is at most this old (90, 90s, 5m).",
)
@click.option(
    "--file",
    "health_file",
    metavar="PATH",
    help="Check the file a worker touches with --health-file instead of the store.",
)
@app_option
@click.pass_obj
def health(
    state: CliState,
    queues: tuple[str, ...],
    max_age: float | None,
    health_file: str | None,
    app_ref: str | None,
) -> None:
    """Exit 0 when live workers serve every queue asked for, else 1 with the reason:
    for liveness/readiness probes (Kubernetes exec probes, systemd, scripts)."""
    if health_file is not None:
        _file_health(health_file, max_age)
        return
    for q in queues:
        validate_name("queue name", q)

    async def fetch(app: AsyncOmniQ) -> list[WorkerInfo]:
        return await app.workers()

    at = time.time()
    live = [
        w
        for w in state.run(state.build_app(app_ref), fetch)
        if max_age is None or at - w.heartbeat_at <= max_age
    ]
    fresh = f" with a heartbeat in the last {max_age:g} s" if max_age is not None else ""
    unserved = [q for q in queues if not any(_serves(w, q) for w in live)]
    if unserved:
        names = ", ".join(repr(q) for q in unserved)
        raise click.ClickException(f"unhealthy: no live worker{fresh} serves queue {names}")
    if not live:
        raise click.ClickException(f"unhealthy: no live worker{fresh}")
    targets: tuple[str | None, ...] = queues or (None,)
    for target in targets:
        serving = [w for w in live if _serves(w, target)]
        newest = min(at - w.heartbeat_at for w in serving)
        where = f"queue {target!r}" if target else "any queue"
        out.print(
            f"healthy: {where}: {len(serving)} live worker(s), "
            f"last heartbeat {max(newest, 0):.1f} s ago"
        )
