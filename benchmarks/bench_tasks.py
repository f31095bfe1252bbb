"""The no-op tasks the benchmark enqueues. The worker subprocess imports this module
(``omniq worker --app bench_tasks:app``); the stores come from the environment
(``OMNIQ_TASK_QUEUE``, ``OMNIQ_EVENTS``, ...), which bench.py sets for both sides."""

from __future__ import annotations

from omniq import AsyncOmniQ

app = AsyncOmniQ()


@app.task
async def noop_async() -> None:
    """Runs on the worker's event loop (every pool runs coroutines there, except process)."""


@app.task
def noop_sync() -> None:
    """Runs in the pool's threads (or child processes): the pool's own overhead."""
