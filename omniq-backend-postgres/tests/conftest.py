"""Fixtures for the PostgreSQL tests: the server URL and one throwaway schema per test.

The server is the real one (``OMNIQ_TEST_POSTGRES_URL``, default the local ``test``
database); without it tests skip, or fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest

from omniq.testing import require_service

T = TypeVar("T")

POSTGRES_URL = os.environ.get(
    "OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop in a thread (safe from any fixture)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> str:
    require_service("PostgreSQL", POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema name (the stores create it), dropped with everything in it after."""
    schema = f"omniq_t_{uuid.uuid4().hex[:12]}"
    yield schema
    run_sync(drop_schema(pg_url, schema))


@pytest.fixture
def pg_ref(pg_url: str, pg_schema: str) -> dict[str, Any]:
    """A ref for the three stores: small pools, so parallel instances stay well under
    the server's connection limit."""
    return {"backend": "postgres", "url": pg_url, "schema": pg_schema, "max_size": 4}
