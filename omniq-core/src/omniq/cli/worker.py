"""``omniq worker``: run a worker on the main thread's event loop.

That loop is a fresh one for an :class:`~omniq.app.AsyncOmniQ` app, and the app's own
portal loop for a blocking :class:`~omniq.app.OmniQ` app (its tasks' ``delay()`` and
``get_result()`` go through that portal; the stores must be used on one loop). SIGTERM
and SIGINT stop it (the first drains, a second stops at once): the worker installs the
handlers on a loop the main thread runs; the portal may run the worker on its own
thread instead (it does once a blocking call, at import, left the loop idling there),
where asyncio cannot, so for a blocking app they are installed in the main thread and
hand the stop to the loop (:class:`~omniq.worker.signals.StopOnSignal`, as
``OmniQ.run_worker()`` does). A
worker that stops to recycle (``max-tasks``, ``max-memory``) on a pool without child
processes re-executes this process, so memory that leaked into it is returned to the
system.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from ..config import load_config
from ..interfaces import Capability
from ..progress import WorkerProgress
from ..registry import registry
from ..worker.signals import StopOnSignal
from .root import app_option, cli
from .state import CliState, describe_ref
from .tasks import parse_duration
from .ui import err, flush_logging, log_early_records, release_logging, setup_logging

if TYPE_CHECKING:
    from ..app import AsyncOmniQ

log = logging.getLogger("omniq.cli")

RECYCLE_REASONS = {
    "max-tasks": "it ran --max-tasks-per-child tasks",
    "max-memory": "it used more than --max-memory-mb",
}


def _warn_single_process(app: AsyncOmniQ) -> None:
    """This worker is a process of its own: a task queue that several processes cannot
    share (no ``CROSS_PROCESS``) shows it none of the tasks other processes enqueue, and a
    user who is not told meets only an empty queue or the backend's own lock error."""
    queue = app.task_queue
    if Capability.CROSS_PROCESS in queue.capabilities:
        return
    log.warning(
        "the task queue %s (%s) does not declare the cross_process capability: its data "
        "lives in one process, so this worker sees only tasks enqueued inside this process, "
        "never those of another process (a second program opening the same store sees other "
        "data or fails on the backend's own lock). Use a store several processes share "
        "(sqlite, postgres, redis, nats, file://), or run the worker in the process that "
        "enqueues (app.run_worker())",
        describe_ref(app.config.store_ref("task_queue")),
        type(queue).__name__,
    )


async def _run_worker(
    app: AsyncOmniQ, options: dict[str, Any], progress: bool, stop: StopOnSignal | None = None
) -> str:
    worker = app.worker(**options)
    if stop is not None:
        stop.made(worker)
    _warn_single_process(app)
    if not app.tasks:
        log.warning(
            "the app has no registered tasks: pass --app module:app or list modules under the "
            "'imports' config key, or tasks will be dead-lettered as unknown"
        )
    display = asyncio.create_task(WorkerProgress(worker, err).run()) if progress else None
    try:
        return await worker.run(install_signals=stop is None or not stop.installed)
    finally:
        if display is not None:
            display.cancel()
            await asyncio.gather(display, return_exceptions=True)
        await app.close()


def _reexec(state: CliState, reason: str) -> None:
    """Replace this process with a fresh one running the same command line."""
    why = RECYCLE_REASONS[reason]
    if state.argv is None:
        log.warning(
            "worker stopped to recycle (%s); not started from the console script, so not "
            "restarting it",
            why,
        )
        return
    log.warning("worker recycles because %s: re-executing the process (pid %d)", why, os.getpid())
    flush_logging()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "omniq.cli", *state.argv])


@cli.command()
@app_option
@click.option(
    "--pool",
    metavar="NAME",
    help="Execution pool: async, thread, process, or one a plugin adds "
    "(default: config worker.pool, else async).",
)
@click.option(
    "--concurrency", "-c", type=click.IntRange(min=1), help="Tasks run at once (default 10)."
)
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Queue to serve (repeatable; default: config worker.queues, else 'default').",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=0),
    help="Tasks reserved beyond --concurrency, so the pool never waits for a round trip "
    "(default 4 x concurrency; 0 for long tasks shared by many workers).",
)
@click.option(
    "--burst", is_flag=True, help="Stop when the queues are empty instead of waiting for work."
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="Recycle after this many tasks (process pool: per child; else this process restarts).",
)
@click.option(
    "--max-memory-mb",
    type=click.FloatRange(min=0, min_open=True),
    help="Recycle when resident memory exceeds this (this process restarts).",
)
@click.option(
    "--grace-period",
    callback=functools.partial(parse_duration, above=False),
    metavar="SECONDS",
    help="Seconds a stopping worker waits for running tasks before releasing them (default "
    "30; 90, 90s, 2m).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Lowest level logged (default INFO, DEBUG with --debug): one line per task "
    "outcome at INFO.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for log pipelines (one object a line; keys in "
    "docs/operations.md). Applies when the application has not set up logging.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live display of counts and queue sizes (default: when stderr is a terminal).",
)
@click.option(
    "--health-file",
    metavar="PATH",
    help="Touch this file on every heartbeat and remove it on stop, for probes that "
    "check a file ('omniq health --file PATH --max-age 60s').",
)
@click.pass_obj
def worker(
    state: CliState,
    app_ref: str | None,
    pool: str | None,
    concurrency: int | None,
    queues: tuple[str, ...],
    prefetch: int | None,
    burst: bool,
    max_tasks_per_child: int | None,
    max_memory_mb: float | None,
    grace_period: float | None,
    log_level: str | None,
    log_format: str,
    progress: bool | None,
    health_file: str | None,
) -> None:
    """Run a worker until stopped (SIGTERM/Ctrl-C drain; twice stops at once)."""
    level = (
        getattr(logging, log_level.upper())
        if log_level
        else (logging.DEBUG if state.debug else logging.INFO)
    )
    setup_logging(level, log_format)
    log_early_records()  # plugin loading's warnings, in this format
    # The pool prepares the process before the user's modules load (gevent patches here);
    # an unknown pool fails before the app is imported.
    registry.pool(pool or load_config(state.config).worker.pool).prepare_process()
    release_logging()  # the application's import may set up logging as it would alone
    try:
        app = state.build_app(app_ref, create=True)
    finally:
        # Again, now that the application is imported: if it set up logging, its handlers win.
        setup_logging(level, log_format, force_level=bool(log_level or state.debug))
    options = {
        k: v
        for k, v in {
            "pool": pool,
            "concurrency": concurrency,
            "queues": list(queues) or None,
            "prefetch": prefetch,
            "burst": burst or None,
            "max_tasks_per_child": max_tasks_per_child,
            "max_memory_mb": max_memory_mb,
            "grace_period": grace_period,
            "health_file": health_file,
        }.items()
        if v is not None
    }
    show = err.is_terminal if progress is None else progress
    portal = app.portal()
    if portal is None:
        reason = asyncio.run(_run_worker(app, options, show))
    else:
        # A blocking app (OmniQ): its task bodies enqueue and read results through its
        # portal, so the worker runs on that loop (driven by this, the main thread, or
        # by the portal's own), where the stores are opened and used, as
        # app.run_worker() does.
        try:
            with StopOnSignal(portal) as stop:
                reason = portal.call(_run_worker, app, options, show, stop)
        finally:
            portal.stop()
    if reason in RECYCLE_REASONS:
        _reexec(state, reason)
