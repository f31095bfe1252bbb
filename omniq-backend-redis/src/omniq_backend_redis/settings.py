"""URL and option parsing shared by the three stores."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from redis.asyncio import ConnectionPool

from omniq.config import mask_url
from omniq.errors import ConfigError
from omniq.models import validate_name
from omniq.options import Option, OptionSchema, check_ports

SCHEMES = ("redis", "rediss", "unix")

#: Options every Redis store takes (:mod:`omniq.options`); other query parameters go to
#: redis-py (``db``, ``socket_timeout``, ``health_check_interval``, ``ssl_cert_reqs``...).
OPTIONS = OptionSchema(
    "redis",
    (
        Option(
            "key_prefix",
            "str",
            "omniq",
            "Every key starts with `<prefix>:`; two apps on one database need different prefixes.",
        ),
        Option("max_connections", "int", 64, "Size of the connection pool.", minimum=1),
        Option(
            "socket_connect_timeout",
            "duration",
            5.0,
            "How long to wait for a TCP connection.",
            minimum=0.001,
        ),
        Option(
            "retries",
            "int",
            5,
            "How many times a command is retried on a dropped connection "
            "(exponential backoff, 50 ms up to 1 s).",
            minimum=0,
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
    ),
    passthrough="redis-py",
)


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach Redis. Stores with equal settings share one connection pool."""

    url: str
    max_connections: int
    socket_connect_timeout: float
    retries: int
    #: Seconds a call keeps retrying a server it cannot reach before it raises
    #: :class:`~omniq_backend_redis.errors.RedisUnavailableError`.
    outage_timeout: float


def parse(
    url: str, options: dict[str, Any], store: Any = None
) -> tuple[ConnectionSettings, str, dict[str, Any]]:
    """Split ``url`` and ``options`` into connection settings, the key prefix and the
    other options of ``store``'s table (its ``option_schema``).

    Our options may also come as URL query parameters (``redis://h/0?key_prefix=app``);
    other query parameters are left for redis-py.
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"redis backend: unsupported URL {mask_url(url)!r}; use redis://, rediss:// or unix://"
        )
    schema = store.option_schema if store is not None else OPTIONS
    parsed = schema.parse(url, options, store)
    label = schema.label(store)
    if parts.scheme != "unix":
        check_ports(url, label)
    _check_database(url, parts.path.strip("/"), parsed.rest, label)
    if parsed.rest:
        _check_redis_py_parameters(
            urlunsplit(parts._replace(query=urlencode(parsed.rest))), schema.names()
        )
    values = dict(parsed.values)
    prefix = validate_name("redis key_prefix", values.pop("key_prefix"))
    settings = ConnectionSettings(
        url=parsed.url,
        max_connections=values.pop("max_connections"),
        socket_connect_timeout=values.pop("socket_connect_timeout"),
        retries=values.pop("retries"),
        outage_timeout=values.pop("outage_timeout"),
    )
    return settings, prefix, values


def _check_database(url: str, path: str, query: list[tuple[str, str]], label: str) -> None:
    """A database number redis-py would only refuse on the first connection."""
    for db in [path, *(value for name, value in query if name == "db")]:
        if db and not db.isdigit():
            raise ConfigError(
                f"{label}: database {db!r} in {mask_url(url)!r} is not valid; expected a "
                f"number >= 0, e.g. redis://localhost:6379/0"
            )


def _check_redis_py_parameters(url: str, ours: list[str]) -> None:
    """Refuse now a query parameter that redis-py would only refuse on the first
    connection, as a TypeError naming an ``__init__`` (``?prefix=`` for ``key_prefix``)."""
    try:
        pool = ConnectionPool.from_url(url)
        pool.connection_class(**pool.connection_kwargs)  # what its first connect() does
    except (TypeError, ValueError) as exc:
        unknown = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        what = f"unknown query parameter {unknown[1]!r}" if unknown else str(exc).rstrip(".")
        raise ConfigError(
            f"redis backend: URL {mask_url(url)!r}: {what}; OmniQ's options: "
            f"{', '.join(ours)}; other parameters go to redis-py (db, socket_timeout, "
            f"health_check_interval, ssl_cert_reqs, ...)"
        ) from None
