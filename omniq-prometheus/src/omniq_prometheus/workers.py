"""What the workers of this process are and hold, and how deep their queues are: read
when Prometheus scrapes, so none of it costs anything per task.

The queue depth comes from the task queue's ``stats()`` (tasks per queue and state), a
count over the whole store (on PostgreSQL a scan of the tasks table). It is refreshed by
one coroutine per worker on the worker's event loop, every :data:`REFRESH` seconds or ten
times what the count took, whichever is longer, so a slow count never takes more than a
tenth of a store connection; a scrape (in the HTTP server's thread) reads the last answer
and never waits for the store. Every worker reports the same store-wide counts: in
PromQL take ``max by (queue, state)`` across workers, never a sum.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from omniq.masking import mask_url
from omniq.models import TaskState

if TYPE_CHECKING:
    from omniq.worker.runtime import Worker

__all__ = ["REFRESH", "WorkerCollector"]

log = logging.getLogger("omniq.prometheus")

#: Shortest time between two counts of the queues, in seconds.
REFRESH = 5.0

#: The states a queue's depth is reported in (zero when absent). ``failed`` is a state of
#: results and events only: a task that fails for good is ``dead``.
STATES = tuple(s.value for s in TaskState if s is not TaskState.FAILED)


@dataclass(eq=False)
class _Watched:
    worker: Worker
    #: queue -> state -> tasks, as last counted; None before the first count or after a
    #: failed one (a stale depth must not look current).
    depth: dict[str, dict[str, int]] | None = None
    refresher: asyncio.Task[None] | None = field(default=None, repr=False)
    #: The worker is stopping: still reported while it drains, dropped once it holds nothing.
    stopping: bool = False


class WorkerCollector(Collector):
    """Worker and queue gauges of the workers running in this process."""

    def __init__(self) -> None:
        self._watched: tuple[_Watched, ...] = ()  # replaced whole: a scrape reads a snapshot
        self._lock = threading.Lock()

    def watch(self, worker: Worker) -> None:
        """Report ``worker`` (until it has stopped, see :meth:`stopping`); call on its event
        loop, where it starts counting the queues."""
        watched = _Watched(worker)
        watched.refresher = asyncio.get_running_loop().create_task(
            self._refresh(watched), name="omniq-prometheus-queues"
        )
        with self._lock:
            self._watched = (*self._watched, watched)

    async def stopping(self, worker: Worker) -> None:
        """``worker`` stops: its queue counts stop now, its gauges once it has drained (it
        stays visible while it finishes its last tasks)."""
        for w in self._watched:
            if w.worker is worker:
                w.stopping = True
                if w.refresher is not None:
                    w.refresher.cancel()
                    await asyncio.gather(w.refresher, return_exceptions=True)

    async def _refresh(self, watched: _Watched) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            began = loop.time()
            try:
                stats = await watched.worker.task_queue.stats()
            except Exception as exc:
                watched.depth = None
                if not failing:
                    log.warning(
                        "worker %s: counting the queues for omniq_queue_tasks failed (%s: %s); "
                        "the metric is left out until a count succeeds",
                        watched.worker.id,
                        type(exc).__name__,
                        mask_url(str(exc)),
                    )
                failing = True
            else:
                watched.depth = {
                    queue: {TaskState(state).value: n for state, n in states.items()}
                    for queue, states in stats.items()
                }
                failing = False
            await asyncio.sleep(max(REFRESH, 10 * (loop.time() - began)))

    def _live(self) -> tuple[_Watched, ...]:
        """The workers to report, dropping those that stopped and drained."""
        with self._lock:
            self._watched = tuple(
                w for w in self._watched if not (w.stopping and not w.worker.running)
            )
            return self._watched

    def collect(self) -> Iterator[Metric]:
        watched = self._live()
        info = GaugeMetricFamily(
            "omniq_worker_info",
            "A worker running in this process (always 1), with its id, pool and queues.",
            labels=["worker_id", "pool", "queues"],
        )
        concurrency = GaugeMetricFamily(
            "omniq_worker_concurrency", "Attempts the workers of this process run at once."
        )
        in_flight = GaugeMetricFamily(
            "omniq_worker_tasks_in_flight",
            "Tasks the workers of this process hold a lease on: running or reserved ahead "
            "(prefetch), as 'omniq workers' shows.",
        )
        depth = GaugeMetricFamily(
            "omniq_queue_tasks",
            "Tasks in the store by queue and state, counted every few seconds (the same "
            "from every worker of a store: aggregate with max, not sum).",
            labels=["queue", "state"],
        )
        for w in watched:
            info.add_metric([w.worker.id, w.worker.pool.name, ",".join(w.worker.queues)], 1)
        concurrency.add_metric([], sum(w.worker.concurrency for w in watched))
        in_flight.add_metric([], sum(w.worker.running for w in watched))
        counted = next((w.depth for w in watched if w.depth is not None), None)
        for queue, states in sorted((counted or {}).items()):
            for state in (*STATES, *sorted(set(states) - set(STATES))):
                depth.add_metric([queue, state], states.get(state, 0))
        yield from (info, concurrency, in_flight, depth)
