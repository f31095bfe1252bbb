"""Connection settings: the URL, the backend options, and the schema identifier.

The schema name is the only SQL identifier that comes from user input, so it is
validated against a strict pattern here and always used quoted; everything else
(queue names, task ids) travels as bound parameters.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from omniq.config import mask_url
from omniq.errors import BackendUnavailableError, ConfigError

__all__ = ["PostgresSettings", "PostgresUnavailableError", "SCHEMES", "quote_ident"]

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


def _int_option(name: str, value: object, minimum: int) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        number = minimum - 1
    if isinstance(value, bool) or number < minimum:
        raise ConfigError(f"invalid PostgreSQL option {name}={value!r}: expected an integer >= {minimum}")
    return number


@dataclass(frozen=True)
class PostgresSettings:
    """Everything needed to connect: the asyncpg DSN plus OmniQ's own options.

    Options may be given as keyword arguments or in the URL query string
    (``postgresql://host/db?schema=jobs&max_size=20``); other query parameters
    (``sslmode``...) are left for asyncpg.
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
    def from_url(cls, url: str, **options: Any) -> PostgresSettings:
        parts = urlsplit(url)
        if parts.scheme.lower() not in SCHEMES:
            raise ConfigError(
                f"invalid PostgreSQL URL {mask_url(url)!r}: the scheme must be one of "
                f"{', '.join(s + '://' for s in SCHEMES)}"
            )
        ours = {f.name for f in fields(cls)} - {"dsn"}
        query = parse_qsl(parts.query, keep_blank_values=True)
        options = {**{k: v for k, v in query if k in ours}, **options}
        unknown = sorted(set(options) - ours)
        if unknown:
            raise ConfigError(
                f"unknown PostgreSQL option(s) {', '.join(map(repr, unknown))}; valid options: "
                f"{', '.join(sorted(ours))}"
            )
        rest = urlencode([(k, v) for k, v in query if k not in ours])
        dsn = url.split("?", 1)[0] + (f"?{rest}" if rest else "")  # urlunsplit drops an empty host
        settings = cls(dsn=dsn)
        return replace(settings, **options).validated()

    def validated(self) -> PostgresSettings:
        min_size = _int_option("min_size", self.min_size, 0)
        max_size = _int_option("max_size", self.max_size, 1)
        if min_size > max_size:
            raise ConfigError(f"PostgreSQL option min_size={min_size} is larger than max_size={max_size}")
        try:
            timeout = float(self.connect_timeout)
        except (TypeError, ValueError):
            timeout = 0.0
        if not timeout > 0:
            raise ConfigError(
                f"invalid PostgreSQL option connect_timeout={self.connect_timeout!r}: expected seconds > 0"
            )
        try:
            outage = float(self.outage_timeout)
        except (TypeError, ValueError):
            outage = 0.0
        if not outage > 0 or outage == float("inf"):
            raise ConfigError(
                f"invalid PostgreSQL option outage_timeout={self.outage_timeout!r}: "
                f"expected seconds > 0"
            )
        auto = self.auto_migrate
        if isinstance(auto, str):
            auto = auto.lower() not in ("0", "false", "no", "off")
        return replace(self, schema=_validate_schema(self.schema), min_size=min_size,
                       max_size=max_size, connect_timeout=timeout, outage_timeout=outage,
                       auto_migrate=bool(auto))

    @property
    def quoted_schema(self) -> str:
        return quote_ident(self.schema)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` / ``create_pool`` (besides the DSN)."""
        return {"timeout": self.connect_timeout,
                "server_settings": {"application_name": self.application_name}}

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
        return (f"host {host}:{port or os.environ.get('PGPORT') or 5432}, database {database!r}, "
                f"user {user!r}")

    def unavailable(self, exc: BaseException) -> PostgresUnavailableError:
        """The error for a failed connection: where we tried and why, password masked."""
        reason = f"{type(exc).__name__}: {exc}"
        password = urlsplit(self.dsn).password
        if password:
            reason = reason.replace(password, "***")
        return PostgresUnavailableError(
            f"cannot connect to PostgreSQL at {self.where()}: {reason}. Check that the server "
            f"is running and accepts connections, and the URL ({mask_url(self.dsn)})"
        )

    def __repr__(self) -> str:
        return (f"PostgresSettings(dsn={mask_url(self.dsn)!r}, schema={self.schema!r}, "
                f"min_size={self.min_size}, max_size={self.max_size})")
