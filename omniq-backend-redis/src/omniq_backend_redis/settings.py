"""URL and option parsing shared by the three stores."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omniq.config import mask_url
from omniq.errors import ConfigError
from omniq.models import validate_name
from redis.asyncio import ConnectionPool

SCHEMES = ("redis", "rediss", "unix")

#: Options every store takes, with their defaults.
COMMON_OPTIONS: dict[str, Any] = {
    "key_prefix": "omniq",
    "max_connections": 64,
    "socket_connect_timeout": 5.0,
    "retries": 5,
    "outage_timeout": 5.0,
}


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


def number_option(name: str, value: Any, kind: type, minimum: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum or isinstance(value, bool):
        raise ConfigError(f"redis option {name}={value!r}: expected a {kind.__name__} >= {minimum}")
    return number


def parse(url: str, options: dict[str, Any], extra: dict[str, Any]) -> tuple[ConnectionSettings, str, dict[str, Any]]:
    """Split ``url`` and ``options`` into connection settings, the key prefix and the
    store-specific options (``extra`` holds their defaults).

    Our options may also come as URL query parameters (``redis://h/0?key_prefix=app``);
    other query parameters are left for redis-py.
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"redis backend: unsupported URL {mask_url(url)!r}; use redis://, rediss:// or unix://"
        )
    known = {**COMMON_OPTIONS, **extra}
    passthrough: list[tuple[str, str]] = []
    from_query: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in known:
            from_query[name] = value
        else:
            passthrough.append((name, value))
    given = {**from_query, **options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(
            f"redis backend: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))} "
            f"(binary payloads need decode_responses=False, which is always set)"
        )
    if passthrough:
        _check_redis_py_parameters(urlunsplit(parts._replace(query=urlencode(passthrough))), known)
    values = {**known, **given}
    prefix = validate_name("redis key_prefix", values.pop("key_prefix"))
    settings = ConnectionSettings(
        url=urlunsplit(parts._replace(query=urlencode(passthrough))) if from_query else url,
        max_connections=number_option("max_connections", values.pop("max_connections"), int, 1),
        socket_connect_timeout=number_option(
            "socket_connect_timeout", values.pop("socket_connect_timeout"), float, 0.001
        ),
        retries=number_option("retries", values.pop("retries"), int, 0),
        outage_timeout=number_option(
            "outage_timeout", values.pop("outage_timeout"), float, 0.001
        ),
    )
    return settings, prefix, values


def _check_redis_py_parameters(url: str, ours: dict[str, Any]) -> None:
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
            f"{', '.join(sorted(ours))}; other parameters go to redis-py (db, socket_timeout, "
            f"health_check_interval, ssl_cert_reqs, ...)"
        ) from None
