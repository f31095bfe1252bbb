"""A live display of a running worker: its counts, running tasks and queue sizes."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from .models import ACTIVE_STATES, TaskState

if TYPE_CHECKING:
    from .worker.runtime import Worker

__all__ = ["WorkerProgress"]

log = logging.getLogger("omniq.cli")

COUNTS = ("succeeded", "failed", "retried", "dead")
#: Queue-size columns: what is still to do, in the order a task moves through them.
ACTIVE_COLUMNS = [s for s in TaskState if s in ACTIVE_STATES]


class WorkerProgress:
    """Redraws a worker's figures a few times a second until cancelled; on a console
    that is not a terminal, rich prints only the final frame."""

    def __init__(
        self, worker: Worker, console: Console, title: str | None = None, stats_every: float = 1.0
    ) -> None:
        self.worker = worker
        self.console = console
        self.title = title or f"omniq worker {worker.id}"
        self.stats_every = stats_every
        self.sizes: dict[str, dict[TaskState, int]] = {}

    def render(self) -> Group:
        w = self.worker
        counts = Table(
            title=self.title,
            caption=f"pool {w.pool.name} x {w.concurrency}, queues {', '.join(w.queues)}",
            title_justify="left",
            caption_justify="left",
        )
        for name in (*COUNTS, "running"):
            counts.add_column(name, justify="right")
        counts.add_row(*(str(w.stats.counts[k]) for k in COUNTS), str(w.running))
        queues = Table("queue", *(s.value for s in ACTIVE_COLUMNS), "finished")
        for col in queues.columns[1:]:
            col.justify = "right"
        for q in w.queues:
            by_state = {TaskState(s): n for s, n in self.sizes.get(q, {}).items()}
            done = sum(n for s, n in by_state.items() if s not in ACTIVE_STATES)
            queues.add_row(q, *(str(by_state.get(s, 0)) for s in ACTIVE_COLUMNS), str(done))
        return Group(counts, queues)

    async def refresh_sizes(self) -> None:
        try:
            self.sizes = await self.worker.app.stats()
        except Exception as exc:  # the display must never take the worker down
            log.debug("queue sizes unavailable: %s", exc)

    async def run(self) -> None:
        with Live(self.render(), console=self.console, refresh_per_second=4) as live:
            loop = asyncio.get_running_loop()
            next_stats = 0.0
            while True:
                if loop.time() >= next_stats:
                    await self.refresh_sizes()
                    next_stats = loop.time() + self.stats_every
                live.update(self.render())
                try:
                    await asyncio.sleep(0.25)
                except asyncio.CancelledError:
                    await self.refresh_sizes()
                    live.update(self.render())
                    raise
