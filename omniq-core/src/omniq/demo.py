"""``omniq demo``: a tour of OmniQ on the embedded default, with no server.

It stores tasks, results and events in three SQLite files, enqueues a mix of async and
sync tasks (one that fails once and is retried, one that waits for two others, one that
a schedule fires every second), runs a worker with a live display until everything is
done, then prints the results, a summary of the events and the timeline of the retried
task. The tasks are module-level functions, so any pool (even ``process``) can run them.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import OmniQError
from .models import TaskState, now

if TYPE_CHECKING:
    from .app import AsyncOmniQ, TaskRef

__all__ = ["run_demo"]

QUEUE = "demo"
SCHEDULE_ID = "demo-tick"
FIRINGS = 2  # schedule firings to wait for before pausing it
DEADLINE = 25.0  # seconds; the demo fails with a reason rather than hang


# -- the demo's tasks ------------------------------------------------------------------


async def add(a: int, b: int) -> int:
    """An async task: runs on the worker's event loop."""
    await asyncio.sleep(0.05)
    return a + b


def word_count(text: str) -> int:
    """A sync task: the async pool runs it in a thread."""
    time.sleep(0.05)
    return len(text.split())


def flaky_fetch(marker: str) -> str:
    """Fails on its first attempt and succeeds on the next. The attempt is remembered in
    a file (the task may run in another thread or process than its first attempt)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("attempted once\n")
        raise ConnectionError("simulated outage on the first attempt")
    return "fetched on a later attempt"


def report(label: str) -> str:
    """Depends on other tasks: it becomes ready only once they have succeeded."""
    return f"{label}: written after its dependencies succeeded"


def tick() -> float:
    """Fired by an interval schedule."""
    return round(time.time(), 3)


# -- running the tour ------------------------------------------------------------------


def store_urls(directory: Path) -> dict[str, str]:
    return {
        kind: f"sqlite:///{directory / name}"
        for kind, name in (
            ("task_queue", "tasks.db"),
            ("result_storage", "results.db"),
            ("event_storage", "events.db"),
        )
    }


class Tour:
    """The demo's app, its enqueued tasks and the checks for "everything is done"."""

    def __init__(self, directory: Path) -> None:
        from .app import AsyncOmniQ

        self.directory = directory
        self.app: AsyncOmniQ = AsyncOmniQ(**store_urls(directory), default_queue=QUEUE)
        task = self.app.task
        self.add = task(add)
        self.word_count = task(word_count)
        self.flaky = task(retries=2, retry_backoff=0.5)(flaky_fetch)
        self.report = task(report)
        self.tick = task(tick)
        self.refs: list[TaskRef[Any]] = []
        self.flaky_id = ""

    async def enqueue(self) -> None:
        first = await self.add.delay(2, 3)
        counted = await self.word_count.delay("the quick brown fox jumps over the lazy dog")
        flaky = await self.flaky.delay(str(self.directory / "flaky-attempt.marker"))
        self.flaky_id = flaky.id
        self.refs = [
            first,
            await self.add.delay(40, 2),
            counted,
            flaky,
            await self.report.apply(("report",), depends_on=[first, counted]),
        ]
        await self.app.schedule(
            self.tick, interval=1.0, schedule_id=SCHEDULE_ID, start_at=now() + 1.0
        )

    async def fired(self) -> list[str]:
        tasks = await self.app.list_tasks(queue=QUEUE, limit=1000)
        return [t.id for t in tasks if t.schedule_id == SCHEDULE_ID]

    async def all_done(self, ids: list[str]) -> bool:
        return len(await self.app.result_storage.get_many(ids)) == len(ids)

    async def wait_until_done(self) -> None:
        """Wait for every enqueued task and for the schedule's firings, pausing the
        schedule once it fired enough; poll with a deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        paused = False
        while loop.time() < deadline:
            fired = await self.fired()
            if not paused and len(fired) >= FIRINGS:
                await self.app.pause_schedule(SCHEDULE_ID)
                paused = True
                continue  # a firing claimed before the pause shows up in the next listing
            if paused and await self.all_done([r.id for r in self.refs] + fired):
                return
            await asyncio.sleep(0.1)
        raise OmniQError(
            f"the demo did not finish within {DEADLINE:g} s; its files are in {self.directory}"
        )

    async def run(self, err: Console) -> None:
        from .progress import WorkerProgress

        await self.enqueue()
        worker = self.app.worker(concurrency=4, queues=[QUEUE], grace_period=5.0)
        running = asyncio.create_task(worker.run(install_signals=False))
        display = asyncio.create_task(WorkerProgress(worker, err, title="omniq demo").run())
        try:
            waiting = asyncio.create_task(self.wait_until_done())
            await asyncio.wait([waiting, running], return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():  # the worker died first: its error is the reason
                waiting.cancel()
                await running
            await waiting
        finally:
            worker.request_stop("demo finished")
            await asyncio.gather(running, return_exceptions=True)
            display.cancel()
            await asyncio.gather(display, return_exceptions=True)


def _results_table(tour: Tour, tasks: dict[str, Any], results: dict[str, Any]) -> Table:
    table = Table(
        "task", "id", "state", "attempts", "result or error", title="Results", title_justify="left"
    )
    table.columns[1].no_wrap = True
    for task_id, task in tasks.items():
        result = results.get(task_id)
        if result is None:
            shown = "-"
        elif result.state is TaskState.SUCCEEDED:
            shown = (
                repr(tour.app.serializer.loads(result.value, local_only=True))
                if result.value
                else "None"
            )
        else:
            shown = (
                f"{result.error.type}: {result.error.message}"
                if result.error
                else result.state.value
            )
        table.add_row(
            task.name.rpartition(".")[2],
            task_id,
            task.state.value,
            str(task.attempts),
            escape(shown),
        )
    return table


async def _report(tour: Tour, out: Console) -> None:
    app = tour.app
    ids = [r.id for r in tour.refs] + await tour.fired()
    tasks = {i: await app.get_task(i) for i in ids}
    out.print(_results_table(tour, tasks, await app.result_storage.get_many(ids)))

    events = await app.events(queue=QUEUE, limit=None)
    counts = Counter(e.type.value for e in events)
    summary = Table(
        "event type", "count", title=f"Event summary ({len(events)} events)", title_justify="left"
    )
    for kind, n in counts.most_common():
        summary.add_row(kind, str(n))
    out.print(summary)

    timeline = [e for e in events if e.task_id == tour.flaky_id]
    start = timeline[0].timestamp if timeline else 0.0
    table = Table(
        "at",
        "event",
        "detail",
        title=f"Timeline of the retried task {tour.flaky_id}",
        title_justify="left",
    )
    for e in timeline:
        detail = " ".join(f"{k}={v}" for k, v in e.detail.items() if k != "name")
        table.add_row(f"+{e.timestamp - start:.3f} s", e.type.value, escape(detail))
    out.print(table)


def _write_config(directory: Path) -> Path:
    path = directory / "omniq.yaml"
    path.write_text(
        "".join(f"{k}: {v}\n" for k, v in store_urls(directory).items())
        + f"default_queue: {QUEUE}\n"
    )
    return path


def run_demo(directory: Path | None, out: Console, err: Console) -> Path:
    """Run the tour in ``directory`` (a new temporary one when None); return it."""
    made = directory is None
    directory = Path(tempfile.mkdtemp(prefix="omniq-demo-")) if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    tour = Tour(directory)

    async def main() -> None:
        try:
            await tour.run(err)
            await _report(tour, out)
        finally:
            await tour.app.close()

    started = time.monotonic()
    asyncio.run(main())
    config = _write_config(directory)
    out.print(
        f"\nDone in {time.monotonic() - started:.1f} s. Files are in {directory}:", soft_wrap=True
    )
    for name in ("tasks.db", "results.db", "events.db"):
        out.print(f"  {directory / name}", soft_wrap=True)
    out.print("Explore them with:", soft_wrap=True)
    out.print(f"  omniq --config {config} events --task {tour.flaky_id}", soft_wrap=True)
    out.print(f"  omniq --config {config} task {tour.flaky_id}", soft_wrap=True)
    out.print(f"  omniq --config {config} queues", soft_wrap=True)
    if made:
        out.print(f"Remove them with: rm -r {directory}", soft_wrap=True)
    return directory
