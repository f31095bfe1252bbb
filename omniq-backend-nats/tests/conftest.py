"""Fixtures for the NATS backend's tests: the server URL and a stream prefix per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import nats
import nats.js.errors
import pytest

from omniq.testing.services import require_service

NATS_URL = os.environ.get("OMNIQ_TEST_NATS_URL", "nats://127.0.0.1:4222")
#: What the stores create for a prefix (docs/backends/nats.md, "What is created").
STREAMS = ("queue", "events")
BUCKETS = ("tasks", "leases", "children", "schedules", "results", "workers", "limits", "repairs")


@pytest.fixture
def nats_url() -> str:
    require_service("NATS", NATS_URL)
    return NATS_URL


async def delete_prefix(url: str, prefix: str) -> None:
    """Delete every stream (and so every KV bucket) a store with ``prefix`` creates."""
    names = [f"{prefix}_{s}" for s in STREAMS] + [f"KV_{prefix}_{b}" for b in BUCKETS]
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name in names:
            try:
                await js.delete_stream(name)
            except nats.js.errors.NotFoundError:
                pass
    finally:
        await nc.close()


@pytest.fixture
def nats_prefix(nats_url: str) -> Iterator[str]:
    """A fresh stream/bucket prefix, removed with all its streams after the test."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield prefix
    asyncio.run(delete_prefix(nats_url, prefix))
