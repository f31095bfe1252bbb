"""The per-task part: counts and times each attempt in the worker.

Cost per attempt, on the worker's event loop: two dict look-ups (the task's series, its
start time), one queue-wait and one run-time histogram observation, the in-progress gauge
up and down and one counter increment (a success's in ``after_completion``, a failure's
in ``after_failure_completion``, when the store has answered the write of its outcome,
called by the worker's writer: a refused one counts ``interrupted``; a stopped attempt's
in ``on_failure``, nothing being written for it), all on label children resolved
once per task name and queue (prometheus_client's ``labels()`` is the costly part and
runs once per series, not per task). Nothing is added on enqueue: the middleware does not override
``before_enqueue``, so an app that only enqueues runs no code of this plugin per task.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from omniq.context import current_task
from omniq.middleware import Middleware

from .metrics import Metrics, default_metrics

if TYPE_CHECKING:
    from prometheus_client.metrics import Counter, Gauge, Histogram

    from omniq.models import Task

__all__ = ["PrometheusMiddleware"]


class _Series:
    """The label children of one (task name, queue)."""

    __slots__ = ("duration", "in_progress", "metrics", "outcomes", "queue", "task", "wait")

    def __init__(self, metrics: Metrics, task: str, queue: str) -> None:
        self.metrics, self.task, self.queue = metrics, task, queue
        self.wait: Histogram = metrics.queue_wait.labels(task, queue)
        self.duration: Histogram = metrics.duration.labels(task, queue)
        self.in_progress: Gauge = metrics.in_progress.labels(task, queue)
        self.outcomes: dict[str, Counter] = {}

    def outcome(self, outcome: str) -> Counter:
        counter = self.outcomes.get(outcome)
        if counter is None:
            counter = self.outcomes[outcome] = self.metrics.tasks.labels(
                self.task, self.queue, outcome
            )
        return counter


class PrometheusMiddleware(Middleware):
    """Updates ``omniq_tasks_total``, ``omniq_task_duration_seconds``,
    ``omniq_task_queue_wait_seconds`` and ``omniq_tasks_in_progress`` for every attempt."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or default_metrics()
        self._series: dict[tuple[str, str], _Series] = {}
        # Start of each running attempt, by the identity of its Task object: the worker
        # hands the same object to before_run and to the call that ends the attempt.
        # (perf_counter, and the attempt's start as the worker's task context had it)
        self._started: dict[int, tuple[float, float | None]] = {}

    def _of(self, task: Task) -> _Series:
        key = (task.name, task.queue)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self.metrics, task.name, task.queue)
        return series

    async def before_run(self, task: Task) -> None:
        series = self._of(task)
        # Due since the enqueue, or since its eta (a delayed task, a retry's backoff).
        # Both are wall-clock times, possibly from another host: a skewed clock must not
        # make a wait negative.
        due = max(task.created_at, task.eta or 0.0)
        if due:
            series.wait.observe(max(time.time() - due, 0.0))
        series.in_progress.inc()
        context = current_task()
        self._started[id(task)] = (
            time.perf_counter(),
            None if context is None else context.started_at,
        )

    async def after_success(self, task: Task, value: Any) -> None:
        self._end(task, None)

    def after_completion(self, task: Task, *, accepted: bool) -> None:
        # Counted once the store answered: a completion refused (the lease was lost
        # while the body ran) is no success: the task is another attempt's, or cancelled.
        self._of(task).outcome("succeeded" if accepted else "interrupted").inc()

    async def on_failure(self, task: Task, exc: BaseException, *, will_retry: bool) -> None:
        # A stopped attempt writes nothing: counted now. A failure is counted once the
        # store answered its retry or dead letter (after_failure_completion).
        self._end(task, "interrupted" if isinstance(exc, asyncio.CancelledError) else None)

    def after_failure_completion(
        self, task: Task, exc: BaseException, *, will_retry: bool, accepted: bool
    ) -> None:
        # Refused: the lease was lost while it ran, its failure decides nothing.
        outcome = ("retried" if will_retry else "failed") if accepted else "interrupted"
        self._of(task).outcome(outcome).inc()

    def _end(self, task: Task, outcome: str | None) -> None:
        series = self._of(task)
        entry = self._started.pop(id(task), None)
        if entry is not None:  # else a middleware before this one refused the attempt
            started, body = entry
            ran = time.perf_counter() - started
            context = current_task()
            if body is not None and context is not None and context.started_at is not None:
                # the body started later than before_run (a new process-pool child
                # started up first): the run time is the body's, as in the worker's log
                ran -= max(context.started_at - body, 0.0)
            series.duration.observe(max(ran, 0.0))
            series.in_progress.dec()
        if outcome is not None:  # (else counted once the store answered: *_completion)
            series.outcome(outcome).inc()
