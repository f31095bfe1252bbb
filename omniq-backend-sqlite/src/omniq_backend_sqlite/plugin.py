"""Entry point of omniq-backend-sqlite: registers the ``sqlite`` backend (standard
library and omniq only, so discovery never imports aiosqlite)."""

from __future__ import annotations

from collections.abc import Callable

from omniq import BackendSpec, hookimpl


@hookimpl
def omniq_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="sqlite",
            schemes=("sqlite",),
            task_queue="omniq_backend_sqlite.queue:SqliteTaskQueue",
            result_storage="omniq_backend_sqlite.results:SqliteResultStorage",
            event_storage="omniq_backend_sqlite.events:SqliteEventStorage",
            description=(
                "one local SQLite file (WAL), shared by processes on this machine; the default"
            ),
        )
    )
