"""Registers the Redis backend (imports only omniq and the standard library)."""

from __future__ import annotations

from omniq import BackendSpec, hookimpl


@hookimpl
def omniq_register_backends(register):  # type: ignore[no-untyped-def]
    register(
        BackendSpec(
            name="redis",
            schemes=("redis", "rediss", "unix"),
            task_queue="omniq_backend_redis.queue:RedisTaskQueue",
            result_storage="omniq_backend_redis.results:RedisResultStorage",
            event_storage="omniq_backend_redis.events:RedisEventStorage",
            description=(
                "Redis: Lua-scripted task queue, results with native TTL, events on Streams"
            ),
        )
    )
