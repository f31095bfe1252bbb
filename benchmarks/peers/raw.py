"""What the raw-client subjects share: their ids, their worker's command line and the
window file the worker leaves behind.

A raw subject is the backend's own client with no queue library: what the server and the
client cost by themselves, the ceiling a queue library is measured against (issue #20
asks OmniQ's one-by-one enqueue to reach 0.8x of it). Its "task" is an id pushed to a
list / row / stream message, and its worker only takes the ids (no result, no event);
in latency mode it writes a reply per id that the producer waits for. Each backend's
module (``raw_<backend>_subject.py``) holds its subject and, run with ``python -m``, its
worker; :func:`run_worker` is that worker's ``main``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from . import NAME

__all__ = ["RawSubject", "Tally", "run_worker"]


class Tally:
    """The burst worker's window: from the start of the first take that found work to
    the end of the last one, and how many ids were taken."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        self.count = 0

    def took(self, began: float, k: int) -> None:
        if k:
            self.first = began if self.first is None else self.first
            self.last = time.time()
            self.count += k


class RawSubject:
    """The parts of a raw subject that do not depend on the backend."""

    name = "raw"
    #: ``python -m`` module of the worker.
    module = ""

    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix=f"{NAME}-raw-window-", suffix=".json")
        os.close(fd)
        self.window_file = Path(path)
        self._ids = itertools.count()

    def new_id(self) -> str:
        return str(next(self._ids))

    def new_ids(self, n: int) -> list[str]:
        return [self.new_id() for _ in range(n)]

    def worker_command(self, burst: bool) -> list[str]:
        command = [sys.executable, "-m", self.module, "--window", str(self.window_file)]
        return command + (["--burst"] if burst else [])

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        text = self.window_file.read_text()
        if not text:
            raise RuntimeError("the raw worker left no window")
        window = json.loads(text)
        if window["count"] != len(task_ids) or window["first"] is None:
            raise RuntimeError(f"the raw worker took {window['count']} of {len(task_ids)} ids")
        return window["first"], window["last"]

    def remove_window_file(self) -> None:
        self.window_file.unlink(missing_ok=True)


def run_worker(work: Callable[[bool], Awaitable[Tally | None]]) -> None:
    """The worker process: ``work(burst)`` takes ids until the queue is empty (burst,
    returning its :class:`Tally`, written to ``--window``) or until SIGTERM (latency
    mode: it replies to each id). SIGTERM cancels ``work`` and the process exits 0, as
    the harness expects of a worker it stops."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=Path, required=True)
    parser.add_argument("--burst", action="store_true")
    args = parser.parse_args()

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            tally = await work(args.burst)
        except asyncio.CancelledError:
            return
        if tally is not None:
            args.window.write_text(
                json.dumps({"first": tally.first, "last": tally.last, "count": tally.count})
            )

    asyncio.run(main())
