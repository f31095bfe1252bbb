"""Registers the NATS JetStream backend (imports nothing but omniq: discovery stays cheap)."""

from __future__ import annotations

from collections.abc import Callable

from omniq import BackendSpec, hookimpl


@hookimpl
def omniq_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="nats",
            schemes=("nats", "tls"),
            task_queue="omniq_backend_nats.queue:NatsTaskQueue",
            result_storage="omniq_backend_nats.results:NatsResultStorage",
            event_storage="omniq_backend_nats.events:NatsEventStorage",
            description="NATS JetStream: work-queue stream + KV records, KV results, event stream",
        )
    )
