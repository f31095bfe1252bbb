"""Every metric this plugin exports, defined in one place.

The per-task metrics (counters and histograms by task name and queue) are updated by
:class:`~omniq_prometheus.middleware.PrometheusMiddleware`; what describes the workers
and the queues is read when Prometheus scrapes, by
:class:`~omniq_prometheus.workers.WorkerCollector`. A process has one :class:`Metrics`
on prometheus_client's default registry (:func:`default_metrics`), so they sit beside the
client's process metrics (CPU, memory, open files) and any an application adds; tests
make their own on a private registry.
"""

from __future__ import annotations

import functools

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .workers import WorkerCollector

__all__ = ["BUCKETS", "OUTCOMES", "Metrics", "default_metrics"]

#: Histogram buckets in seconds, for run time and queue wait alike: tasks range from a
#: few milliseconds (a cache refresh) to an hour (a report), and waits as widely.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

#: How an attempt ended: the ``outcome`` label of ``omniq_tasks_total``.
OUTCOMES = {
    "succeeded": "it returned and the store accepted its completion",
    "retried": "it failed and the store accepted its retry: the task runs again",
    "failed": "it failed and the store accepted its end (failed or dead-lettered): the task "
    "does not run again",
    "interrupted": "it decided nothing: it was stopped (its lease was lost, or the worker "
    "stopped), or it ended but the store refused its outcome (its lease was lost while it "
    "ran). What becomes of the task is decided elsewhere: it runs again if it was released "
    "or its lease lapsed, not if it was cancelled (or used up its deliveries)",
}


class Metrics:
    """The metric objects, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ("task", "queue")
        self.tasks = Counter(
            "omniq_tasks",
            "Task attempts that ended, by task name, queue and outcome: succeeded, retried, "
            "failed (the store accepted it), interrupted (stopped, or its outcome refused: "
            "its lease was lost; whether the task runs again is not this attempt's to say).",
            (*labels, "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "omniq_task_duration_seconds",
            "Run time of each attempt, whatever its outcome.",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "omniq_task_queue_wait_seconds",
            "Time from when a task was due (enqueued, or its eta) to the start of the attempt.",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "omniq_tasks_in_progress",
            "Attempts running now in this process, by task name and queue.",
            labels,
            registry=registry,
        )
        self.workers = WorkerCollector()
        registry.register(self.workers)


@functools.cache
def default_metrics() -> Metrics:
    """This process's metrics, on the default registry (created on first use)."""
    return Metrics(REGISTRY)
