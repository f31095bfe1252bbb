"""Fixtures for the Redis backend's tests: the server URL and a key prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from omniq.testing.services import require_service

REDIS_URL = os.environ.get("OMNIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", REDIS_URL)
    return REDIS_URL


def unlink_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN + UNLINK). SCAN walks the whole database,
    so a large COUNT keeps this to a few round trips on a server that holds other data."""
    client = redis.Redis.from_url(url)
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}:*", count=20_000):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix, removed with all its keys after the test."""
    prefix = f"omniq-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    unlink_prefix(redis_url, prefix)
