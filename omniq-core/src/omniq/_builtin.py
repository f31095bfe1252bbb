"""In-core plugin: the async, thread and process pools register through the same hook
third-party pools use (llm's and datasette's DEFAULT_PLUGINS idea)."""

from __future__ import annotations

from collections.abc import Callable

from .hookspecs import hookimpl
from .registry import PoolSpec


@hookimpl
def omniq_register_pools(register: Callable[[PoolSpec], None]) -> None:
    register(
        PoolSpec(
            "async",
            "omniq.worker.pools:AsyncPool",
            "coroutines on the event loop, plain functions in threads",
        )
    )
    register(PoolSpec("thread", "omniq.worker.pools:ThreadPool", "a thread per concurrent task"))
    register(
        PoolSpec(
            "process",
            "omniq.worker.pools:ProcessPool",
            "a process per concurrent task; hard timeouts",
        )
    )
