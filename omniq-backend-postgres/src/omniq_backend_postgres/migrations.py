"""Versioned schema migrations.

Each migration is a SQL file in ``sql/`` named ``NNNN_description.sql``; the schema's
``migrations`` table records the versions applied. Opening a store (or ``omniq
migrate``) applies what is missing under ``pg_advisory_xact_lock``, so any number of
workers may start at once; a schema recorded at a version newer than this code knows is
refused rather than used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from omniq.errors import ConfigError

from .settings import PostgresSettings

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "SchemaVersionError",
    "ensure_schema",
    "migrate",
]


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str  # with "{s}" standing for the quoted schema

    def render(self, settings: PostgresSettings) -> str:
        return self.sql.replace("{s}", settings.quoted_schema)


class SchemaVersionError(ConfigError):
    """The schema was made by a newer OmniQ, or (without auto-migrate) is out of date."""


@cache
def _load() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files(__package__).joinpath("sql").iterdir():
        stem, _, ext = entry.name.partition(".")
        if ext != "sql":
            continue
        number, _, description = stem.partition("_")
        found.append(
            Migration(int(number), description.replace("_", " "), entry.read_text("utf-8"))
        )
    found.sort(key=lambda m: m.version)
    assert [m.version for m in found] == list(range(1, len(found) + 1)), (
        "migration numbers must be 1..n"
    )
    return tuple(found)


MIGRATIONS: tuple[Migration, ...] = _load()
LATEST_VERSION = MIGRATIONS[-1].version

_VERSION_SQL = "SELECT max(version) FROM {s}.migrations"
_TABLE_SQL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE {s}.migrations IS 'Schema versions applied by omniq-backend-postgres.';
"""


async def current_version(conn: asyncpg.Connection, settings: PostgresSettings) -> int:
    """The schema's version, 0 when it has no OmniQ tables yet."""
    # A catalog query, not to_regclass(): the syscache behind to_regclass is not
    # refreshed by taking an advisory lock, so it could miss a concurrent migrator's table.
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables"
        " WHERE schemaname = $1 AND tablename = 'migrations')",
        settings.schema,
    )
    if not exists:
        return 0
    return await conn.fetchval(_VERSION_SQL.replace("{s}", settings.quoted_schema)) or 0


def _refuse_newer(version: int, settings: PostgresSettings) -> None:
    if version > LATEST_VERSION:
        raise SchemaVersionError(
            f"PostgreSQL schema {settings.schema!r} is at version {version}, "
            f"made by a newer OmniQ; "
            f"this omniq-backend-postgres knows versions up to {LATEST_VERSION}. Upgrade "
            f"omniq-backend-postgres here, or use another schema (option 'schema')."
        )


def pending(version: int) -> list[Migration]:
    return [m for m in MIGRATIONS if m.version > version]


async def ensure_schema(
    conn: asyncpg.Connection, settings: PostgresSettings, *, apply: bool = True
) -> list[Migration]:
    """Bring the schema to :data:`LATEST_VERSION`; return the migrations applied.

    The common case (already current) costs one query and takes no lock. Otherwise the
    work runs in one transaction holding an advisory lock keyed on the schema name, and
    the version is read again under the lock: concurrent starters wait, then find the
    work done. With ``apply=False`` a schema that is behind raises instead.
    """
    version = await current_version(conn, settings)
    _refuse_newer(version, settings)
    if version == LATEST_VERSION:
        return []
    if not apply:
        raise SchemaVersionError(
            f"PostgreSQL schema {settings.schema!r} is at version {version}, this OmniQ needs "
            f"{LATEST_VERSION}: run `omniq migrate --url URL --schema {settings.schema}` "
            f"(or leave auto_migrate on)"
        )
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"omniq.migrate:{settings.schema}",
        )
        version = await current_version(conn, settings)
        _refuse_newer(version, settings)
        todo = pending(version)
        if todo:
            await conn.execute(_TABLE_SQL.replace("{s}", settings.quoted_schema))
        for migration in todo:
            await conn.execute(migration.render(settings))
            await conn.execute(
                f"INSERT INTO {settings.quoted_schema}.migrations (version, description)"
                " VALUES ($1, $2)",
                migration.version,
                migration.description,
            )
        return todo


async def migrate(
    url: str, schema: str = "omniq", check: bool = False, **options: Any
) -> list[Migration]:
    """Apply pending migrations to ``schema`` at ``url``; return them.

    With ``check=True`` nothing is changed and the pending migrations are returned
    (``omniq migrate --check`` exits non-zero when this is not empty). A schema from a
    newer OmniQ raises :class:`SchemaVersionError` in both modes.
    """
    import asyncpg

    settings = PostgresSettings.from_url(url, schema=schema, **options)
    try:
        conn = await asyncpg.connect(settings.dsn, **settings.connect_kwargs())
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise settings.unavailable(exc) from exc
    try:
        if check:
            version = await current_version(conn, settings)
            _refuse_newer(version, settings)
            return pending(version)
        return await ensure_schema(conn, settings)
    finally:
        await conn.close()
