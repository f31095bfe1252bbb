"""Connection settings: the URL, the backend options, and the schema identifier.

The schema name is the only SQL identifier that comes from user input, so it is
validated against a strict pattern here and always used quoted; everything else
(queue names, task ids) travels as bound parameters.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from omniq.config import mask_url
from omniq.errors import BackendUnavailableError, ConfigError
from omniq.options import Option, OptionSchema, check_ports

__all__ = ["SCHEMES", "PostgresSettings", "PostgresUnavailableError", "quote_ident"]

SCHEMES = ("postgresql", "postgres")
DEFAULT_SCHEMA = "omniq"
# Leaves room for the "omniq_<schema>_results" NOTIFY channel inside PostgreSQL's
# 63-byte identifier limit; "pg_" is reserved by the server.
SCHEMA_PATTERN = re.compile(r"^(?!pg_)[A-Za-z_][A-Za-z0-9_]{0,39}$")


class PostgresUnavailableError(BackendUnavailableError):
    """The server could not be reached (or refused the login) when opening a store."""


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL (names are validated first; quoting is the backstop)."""
    return '"' + name.replace('"', '""') + '"'


def _validate_schema(schema: object) -> str:
    if not isinstance(schema, str) or not SCHEMA_PATTERN.match(schema):
        raise ConfigError(
            f"invalid PostgreSQL schema {schema!r}: use 1-40 letters, digits or '_', "
            f"starting with a letter or '_' and not with 'pg_' (default {DEFAULT_SCHEMA!r})"
        )
    return schema


#: The options of every PostgreSQL store (:mod:`omniq.options`); other query
#: parameters (``sslmode``...) are left for asyncpg.
OPTIONS = OptionSchema(
    "postgres",
    (
        Option(
            "schema",
            "str",
            DEFAULT_SCHEMA,
            "The schema holding OmniQ's tables (1-40 letters, digits, `_`; not `pg_...`).",
        ),
        Option("min_size", "int", 1, "Connections the pool keeps open.", minimum=0),
        Option(
            "max_size",
            "int",
            10,
            "Most connections the pool opens (each store has its own pool, plus one "
            "`LISTEN` connection for the task queue and the result storage).",
            minimum=1,
        ),
        Option(
            "connect_timeout",
            "duration",
            10.0,
            "How long to wait for a connection.",
            minimum=0,
            above=True,
        ),
        Option(
            "outage_timeout",
            "duration",
            5.0,
            "Seconds a call keeps retrying a server it cannot reach before it raises "
            "`BackendUnavailableError`.",
            minimum=0,
            above=True,
        ),
        Option("application_name", "str", "omniq", "Shown in `pg_stat_activity`."),
        Option("auto_migrate", "bool", True, "Create or upgrade the tables when a store opens."),
    ),
    passthrough="asyncpg",
)


@dataclass(frozen=True)
class PostgresSettings:
    """Everything needed to connect: the asyncpg DSN plus OmniQ's own options
    (:data:`OPTIONS`), given as keyword arguments or in the URL query string
    (``postgresql://host/db?schema=jobs&max_size=20``).
    """

    dsn: str
    schema: str = DEFAULT_SCHEMA
    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 10.0
    #: Seconds a statement keeps retrying a server it cannot reach before it raises
    #: :class:`PostgresUnavailableError`.
    outage_timeout: float = 5.0
    application_name: str = "omniq"
    auto_migrate: bool = True

    @classmethod
    def from_url(cls, url: str, _store: Any = None, **options: Any) -> PostgresSettings:
        parts = urlsplit(url)
        if parts.scheme.lower() not in SCHEMES:
            raise ConfigError(
                f"invalid PostgreSQL URL {mask_url(url)!r}: the scheme must be one of "
                f"{', '.join(s + '://' for s in SCHEMES)}"
            )
        parsed = OPTIONS.parse(url, options, _store)
        check_ports(url, OPTIONS.label(_store))
        settings = cls(dsn=parsed.url, **parsed.values)
        if settings.min_size > settings.max_size:
            raise ConfigError(
                f"{OPTIONS.label(_store)}: option min_size={settings.min_size} is larger than "
                f"max_size={settings.max_size} in {mask_url(url)!r}"
            )
        return replace(settings, schema=_validate_schema(settings.schema))

    @property
    def quoted_schema(self) -> str:
        return quote_ident(self.schema)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` / ``create_pool`` (besides the DSN)."""
        return {
            "timeout": self.connect_timeout,
            "server_settings": {"application_name": self.application_name},
        }

    def where(self) -> str:
        """Host, port, database and user for messages (never the password).

        Mirrors libpq's defaults (PGHOST, PGPORT, PGDATABASE, PGUSER) closely enough to
        tell the user which server was tried.
        """
        parts = urlsplit(self.dsn)
        try:
            port = parts.port
        except ValueError:
            port = None
        host = parts.hostname or os.environ.get("PGHOST") or "localhost"
        user = parts.username or os.environ.get("PGUSER") or "(current user)"
        database = parts.path.lstrip("/") or os.environ.get("PGDATABASE") or user
        return (
            f"host {host}:{port or os.environ.get('PGPORT') or 5432}, database {database!r}, "
            f"user {user!r}"
        )

    def unavailable(self, exc: BaseException) -> PostgresUnavailableError:
        """The error for a failed connection: where we tried and why, password masked."""
        reason = f"{type(exc).__name__}: {exc}"
        password = urlsplit(self.dsn).password
        if password:
            reason = reason.replace(password, "***")
        reason = mask_url(reason)  # a driver's message may quote the URL
        return PostgresUnavailableError(
            f"cannot connect to PostgreSQL at {self.where()}: {reason}. Check that the server "
            f"is running and accepts connections, and the URL ({mask_url(self.dsn)})"
        )

    def __repr__(self) -> str:
        return (
            f"PostgresSettings(dsn={mask_url(self.dsn)!r}, schema={self.schema!r}, "
            f"min_size={self.min_size}, max_size={self.max_size})"
        )
