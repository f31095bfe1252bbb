"""Entry point of the ``gevent`` plugin: declares the pool without importing gevent, so
discovery in every process stays cheap and patches nothing."""

from __future__ import annotations

from collections.abc import Callable

from omniq import PoolSpec, hookimpl


@hookimpl
def omniq_register_pools(register: Callable[[PoolSpec], None]) -> None:
    register(
        PoolSpec(
            "gevent",
            "omniq_workers_gevent.pool:GeventPool",
            "blocking functions as greenlets (thousands of concurrent I/O waits)",
        )
    )
