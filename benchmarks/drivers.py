"""What the CPU drivers share (``latency_cpu.py``, ``bulk_cpu.py``, ``process_cpu.py``,
``enqueue_cpu.py``, ``bulk_driver.py`` and the NATS ones): the stores they point the app
at, the CPU a process has used, the database's server processes, and the medians line of
their rounds."""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
STORES = ("OMNIQ_TASK_QUEUE", "OMNIQ_RESULT_STORAGE", "OMNIQ_EVENT_STORAGE")


def use_store(url: str, *, events: bool = True) -> None:
    """Every store of the app made next on ``url``, events on (or off), through the
    environment the app reads (a worker subprocess inherits it)."""
    for name in STORES:
        os.environ[name] = url
    os.environ["OMNIQ_EVENTS"] = "true" if events else "false"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


async def backend_pids(url: str) -> list[int]:
    """The server processes of every session on ``url``'s database but this one (none
    for a server other than PostgreSQL)."""
    if not url.startswith(("postgres://", "postgresql://")):
        return []
    import asyncpg

    conn = await asyncpg.connect(url.split("?")[0])
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [row[0] for row in rows]


def print_medians(results: Sequence[dict[str, float]]) -> None:
    """The ``median k v ...`` line of several rounds' figures (nothing for one round)."""
    if len(results) > 1:
        medians = {k: statistics.median(f[k] for f in results) for k in results[0]}
        print("median " + " ".join(f"{k} {v:,.1f}" for k, v in medians.items()))


def noop_app(*, blocking: bool = False) -> tuple[Any, Any]:
    """An app (``OmniQ`` when ``blocking``, else ``AsyncOmniQ``) on the stores
    :func:`use_store` set, and its no-op task under ``bench_tasks``' name."""
    from omniq import AsyncOmniQ, OmniQ

    app: Any = OmniQ() if blocking else AsyncOmniQ()

    @app.task(name="noop_async")
    async def noop() -> None:
        pass

    return app, noop


def arguments(doc: str | None, n: int = 10_000, pid: bool = False) -> argparse.ArgumentParser:
    """A driver's command line: its docstring's first paragraph, the store's ``url`` and
    ``-n``, the tasks to measure; with ``pid``, ``--pid``, the server process whose CPU
    to read (:func:`cpu_seconds`)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("-n", type=int, default=n)
    if pid:
        parser.add_argument("--pid", type=int, default=None, help="the server's process id")
    return parser


def print_round(figures: dict[str, float]) -> None:
    """One round's ``k v ...`` line."""
    print(" ".join(f"{k} {v:,.1f}" for k, v in figures.items()), flush=True)
