"""In-core plugin: the async, thread and process pools register through the same hook
third-party pools use (llm's and datasette's DEFAULT_PLUGINS idea)."""

from __future__ import annotations

from collections.abc import Callable

from .hookspecs import hookimpl
from .registry import WorkerSpec


@hookimpl
def omniq_register_workers(register: Callable[[WorkerSpec], None]) -> None:
    register(WorkerSpec("async", "omniq.worker.pools:AsyncPool",
                        "coroutines on the event loop, plain functions in threads"))
    register(WorkerSpec("thread", "omniq.worker.pools:ThreadPool", "a thread per concurrent task"))
    register(WorkerSpec("process", "omniq.worker.pools:ProcessPool",
                        "a process per concurrent task; hard timeouts"))
