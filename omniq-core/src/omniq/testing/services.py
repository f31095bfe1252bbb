"""Service checks for tests that need a server (Redis, PostgreSQL, NATS, S3...).

On a developer machine without the service the test skips with a message naming it;
in CI (``CI=true``) it fails instead, so a missing service can never turn a run green.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

from ..config import mask_url

DEFAULT_PORTS = {
    "redis": 6379,
    "rediss": 6380,
    "postgresql": 5432,
    "postgres": 5432,
    "nats": 4222,
    "tls": 4222,
    "http": 80,
    "https": 443,
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_answers(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    """Skip (locally) or fail (CI) unless ``url``'s host and port accept a connection."""
    if service_answers(url):
        return
    message = f"{name} is not answering at {mask_url(url)}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: services are required; .ci/run starts them)")
    pytest.skip(f"{message}; start {name} to run this test")
