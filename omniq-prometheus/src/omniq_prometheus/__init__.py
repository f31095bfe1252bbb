"""Prometheus metrics for OmniQ workers.

Installed, the plugin records every attempt of every worker (``omniq_tasks_total`` by
task, queue and outcome, run-time and queue-wait histograms, tasks in progress) and
reports the workers and queue depths when scraped; ``omniq worker --metrics-port 9100``
serves them at ``/metrics``. The metrics live in prometheus_client's default registry, so
an application that already exposes that registry shows them without the option. See
``docs/metrics.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .metrics import BUCKETS, OUTCOMES, Metrics, default_metrics
    from .middleware import PrometheusMiddleware

__all__ = ["BUCKETS", "OUTCOMES", "Metrics", "PrometheusMiddleware", "default_metrics"]

# Every OmniQ process imports this package to discover the plugin (``.plugin``), so
# prometheus_client loads only when one of these names is used.
_WHERE = dict.fromkeys(__all__, ".metrics") | {"PrometheusMiddleware": ".middleware"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
