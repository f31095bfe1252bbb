"""The no-op tasks the benchmark enqueues. The worker subprocess imports this module
(``omniq worker --app bench_tasks:app``); the stores come from the environment
(``OMNIQ_TASK_QUEUE``, ``OMNIQ_EVENTS``, ...), which bench.py sets for both sides;
``OMNIQ_BENCH_MIDDLEWARE=empty`` adds a middleware whose every method does nothing (the
chain's own cost per task)."""

from __future__ import annotations

import os
from typing import Any

from omniq import AsyncOmniQ, Middleware, Task

app = AsyncOmniQ()


class EmptyMiddleware(Middleware):
    """Overrides every point with a no-op, so the chain calls each one."""

    async def before_enqueue(self, task: Task) -> None:
        pass

    async def before_run(self, task: Task) -> None:
        pass

    async def after_success(self, task: Task, value: Any) -> None:
        pass

    async def on_failure(self, task: Task, exc: BaseException, *, will_retry: bool) -> None:
        pass


if os.environ.get("OMNIQ_BENCH_MIDDLEWARE") == "empty":
    app.add_middleware(EmptyMiddleware())


@app.task
async def noop_async() -> None:
    """Runs on the worker's event loop (every pool runs coroutines there, except process)."""


@app.task
def noop_sync() -> None:
    """Runs in the pool's threads (or child processes): the pool's own overhead."""
