"""Entry point of the ``postgres`` plugin: imports only omniq and the standard library
(asyncpg loads when a store class or the migrate command is first used)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from omniq import BackendSpec, hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def omniq_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="postgres",
            schemes=("postgresql", "postgres"),
            task_queue="omniq_backend_postgres.queue:PostgresTaskQueue",
            result_storage="omniq_backend_postgres.results:PostgresResultStorage",
            event_storage="omniq_backend_postgres.events:PostgresEventStorage",
            description=(
                "PostgreSQL (asyncpg): SKIP LOCKED leases, LISTEN/NOTIFY wake-ups, "
                "SQL-queryable events"
            ),
        )
    )


@hookimpl
def omniq_register_cli_commands(cli: click.Group) -> None:
    from .command import migrate_command

    cli.add_command(migrate_command)
