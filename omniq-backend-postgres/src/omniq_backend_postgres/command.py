"""``omniq migrate``: create or upgrade the PostgreSQL schema ahead of deploys.

Workers migrate on start by themselves; this command is for operators who prefer to
migrate explicitly (``auto_migrate=false``) or to check in CI that nothing is pending.
"""

from __future__ import annotations

import asyncio

import click

from omniq.errors import OmniQError

from .settings import DEFAULT_SCHEMA


@click.command("migrate")
@click.option("--url", required=True, help="PostgreSQL URL, e.g. postgresql://user@host/db")
@click.option(
    "--schema", default=DEFAULT_SCHEMA, show_default=True, help="schema holding OmniQ's tables"
)
@click.option("--check", is_flag=True, help="change nothing; exit 1 when migrations are pending")
def migrate_command(url: str, schema: str, check: bool) -> None:
    """Create or upgrade OmniQ's tables in a PostgreSQL schema."""
    from omniq.config import mask_url

    from .migrations import migrate

    try:
        migrations = asyncio.run(migrate(url, schema=schema, check=check))
    except OmniQError as exc:
        raise click.ClickException(str(exc)) from exc
    where = f"schema {schema!r} at {mask_url(url)}"
    if check and migrations:
        names = ", ".join(f"{m.version} ({m.description})" for m in migrations)
        click.echo(f"{where}: pending migrations: {names}")
        raise SystemExit(1)
    if migrations:
        for m in migrations:
            click.echo(f"{where}: applied migration {m.version} ({m.description})")
    else:
        click.echo(f"{where}: up to date")
