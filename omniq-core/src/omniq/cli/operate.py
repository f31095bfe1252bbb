"""Operator commands: ``cancel``, ``requeue``, ``workers`` and ``health`` (the probe for
Kubernetes and other supervisors)."""

from __future__ import annotations

import getpass
import os
import socket
import time
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ..interfaces import REQUEUE_STATES
from ..models import TaskState, validate_name
from ..requeueing import RequeueSelection
from ..worker.presence import HEALTH_MAX_AGE
from .root import app_option, cli
from .state import CliState
from .tasks import parse_duration, parse_when
from .ui import confirm, err, fmt_time, out, print_json, print_table

if TYPE_CHECKING:
    from ..app import AsyncOmniQ
    from ..models import Task, WorkerInfo

#: The selected tasks ``requeue --dry-run`` lists (it counts them all).
_SHOWN = 50


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


def operator() -> str:
    """Who acts from this shell, for the events an operator command records."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's bare uid)
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


def _requeue_rows(tasks: list[Task], more: int) -> None:
    table = Table("id", "name", "queue", "state", "attempts", "ended", "error")
    for t in tasks:
        table.add_row(
            t.id,
            escape(t.name),
            t.queue,
            t.state.value,
            str(t.attempts),
            fmt_time(t.finished_at),
            escape(f"{t.error.type}: {t.error.message}"[:80]) if t.error else "",
        )
    print_table(table)
    if more:
        out.print(f"... and {more} more")


@cli.command()
@click.argument("task_ids", nargs=-1, metavar="[ID]...")
@click.option("--queue", "-q", metavar="NAME", help="Only tasks of this queue.")
@click.option("--name", metavar="TASK", help="Only tasks of this task name.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(sorted(s.value for s in REQUEUE_STATES), case_sensitive=False),
    help="Only tasks in these states (repeatable; default: dead).",
)
@click.option(
    "--since",
    callback=parse_when,
    metavar="WHEN",
    help="Only tasks that ended at or after this: a duration ago (1h: the last hour) or an "
    "ISO time.",
)
@click.option(
    "--until",
    callback=parse_when,
    metavar="WHEN",
    help="Only tasks that ended before this: a duration ago or an ISO time.",
)
@click.option(
    "--include-requeued",
    is_flag=True,
    help="Also tasks requeued before (by default a task whose requeued event is stored is "
    "left out, so repeating a command does not run its tasks twice).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be requeued; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--batch",
    type=click.IntRange(1, 1000),
    default=500,
    show_default=True,
    help="Tasks requeued per store call.",
)
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print the old and new ids as JSON.")
@click.pass_obj
def requeue(
    state: CliState,
    task_ids: tuple[str, ...],
    queue: str | None,
    name: str | None,
    states: tuple[str, ...],
    since: float | None,
    until: float | None,
    include_requeued: bool,
    dry_run: bool,
    yes: bool,
    batch: int,
    app_ref: str | None,
    as_json: bool,
) -> None:
    """Run dead (or failed, cancelled, expired) tasks again as new tasks, attempts reset;
    each original keeps its history and gets a requeued event naming you and the new id.

    Give task ids, or select by --queue, --name, --state and when they ended (--since,
    --until); a selection is confirmed before anything changes (--yes skips that). A
    running, pending or succeeded task is refused with its state, and then nothing is
    requeued."""
    filters = queue or name or states or since is not None or until is not None
    if task_ids and (filters or include_requeued):
        raise click.UsageError("give task ids or selection options, not both")
    for task_id in task_ids:
        validate_name("task id", task_id)
    if since is not None and until is not None and until <= since:
        typed = click.get_current_context().meta  # the texts as given, kept by parse_when
        raise click.UsageError(
            f"the window is empty: --until {typed.get('when:until')} ({fmt_time(until)[:19]}) "
            f"is not after --since {typed.get('when:since')} ({fmt_time(since)[:19]}); a "
            "duration means that long ago, so --since takes the longer one"
        )
    selection = (
        None
        if task_ids
        else RequeueSelection(
            queue=queue,
            name=name,
            states=tuple(TaskState(s.lower()) for s in states) or (TaskState.DEAD,),
            since=since,
            until=until,
            include_requeued=include_requeued,
        )
    )
    by = operator()

    async def pick(app: AsyncOmniQ) -> tuple[list[str], list[Task]]:
        if selection is None:
            shown = [await app.get_task(i) for i in task_ids]
            return list(dict.fromkeys(task_ids)), shown[:_SHOWN]
        ids: list[str] = []
        shown = []
        async for page in app.requeue_candidates(selection):
            ids += [t.id for t in page]
            shown += page[: _SHOWN - len(shown)]
        return ids, shown

    async def run(app: AsyncOmniQ) -> list[tuple[str, str | None]]:
        ids, shown = await pick(app)
        if dry_run or not ids:
            if as_json:  # JSON alone on stdout: a dry run lists what would be requeued
                return [(i, None) for i in ids]
            if ids:
                _requeue_rows(shown, len(ids) - len(shown))
            out.print(f"Would requeue {len(ids)} task(s)." if ids else "Nothing to requeue.")
            return []
        if selection is not None and not yes:
            which = ", ".join(s.value for s in selection.states)
            where = f"queue {selection.queue!r}" if selection.queue else "every queue"
            confirm(f"Requeue {len(ids)} {which} task(s) of {where}?", "nothing was requeued")
        done: list[tuple[str, str | None]] = []
        with Progress(console=err, transient=True, disable=len(ids) <= batch) as bar:
            job = bar.add_task("requeueing", total=len(ids))
            for at in range(0, len(ids), batch):
                chunk = ids[at : at + batch]
                new = await app.requeue_many(chunk, by=by)
                done += [(old, n.id) for old, n in zip(chunk, new, strict=True)]
                bar.update(job, completed=len(done))
        return done

    done = state.run(state.build_app(app_ref), run)
    if as_json:
        print_json([{"id": old, "requeued_as": new} for old, new in done])
    elif task_ids:
        for old, new in done:
            out.print(f"Task {old} requeued as {new}.")
    elif done:
        out.print(f"Requeued {len(done)} task(s); their requeued events record by={by}.")


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
    """The worker's ``--health-file``: touched on each heartbeat, removed on stop, and
    stating how old it may get; ``max_age`` (``--max-age``) overrides what it states."""
    try:
        age = time.time() - os.stat(path).st_mtime
        stated = _stated_max_age(path)
    except FileNotFoundError:
        raise click.ClickException(
            f"unhealthy: health file {path!r} does not exist (no worker "
            f"runs with --health-file {path}, or it stopped)"
        ) from None
    if max_age is None:
        if stated is None:  # a killed worker's file stays: without an age, healthy for ever
            raise click.UsageError(
                f"health file {path!r} does not say how old it may get (an older OmniQ "
                f"worker wrote it, or it is not a worker's file): give --max-age, more "
                f"than the worker's heartbeat interval (lease/3), e.g. --max-age 90s"
            )
        max_age, source = stated, "stated in the file"
    else:
        source = "--max-age"
    if age > max_age:
        raise click.ClickException(
            f"unhealthy: health file {path!r} was last touched {age:.1f} s "
            f"ago ({source}: {max_age:g} s)"
        )
    out.print(f"healthy: health file {path} touched {age:.1f} s ago")


def _stated_max_age(path: str) -> float | None:
    """The age past which the worker that wrote ``path`` counts as dead, as the file
    states it (``max-age <seconds>``), or None for a file that states none."""
    with open(path, "rb") as f:
        words = f.read(100).split()
    if len(words) == 2 and words[0] == HEALTH_MAX_AGE.encode():
        try:
            return float(words[1])
        except ValueError:
            return None
    return None


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
    help="Check the file a worker touches with --health-file instead of the store (it "
    "says how old it may get; --max-age overrides that).",
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
