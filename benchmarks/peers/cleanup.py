"""Remove what one library left on a shared server: keys by pattern, a schema, streams.

Every function touches only names the benchmark chose (``peers.NAME`` and each library's
fixed prefixes), so the servers other engineers' tests use are left alone. Each imports
its client when called: a peer's own virtualenv (``peers/remote.py``) holds only the
client its library uses.
"""

from __future__ import annotations

from pathlib import Path


async def redis_delete(url: str, patterns: list[str]) -> int:
    """Delete every key matching one of ``patterns`` (SCAN, not KEYS); return how many."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    deleted = 0
    try:
        for pattern in patterns:
            batch = [key async for key in client.scan_iter(match=pattern, count=1000)]
            for i in range(0, len(batch), 1000):
                deleted += await client.delete(*batch[i : i + 1000])
    finally:
        await client.aclose()
    return deleted


async def postgres_drop_schema(url: str, schema: str) -> None:
    """``DROP SCHEMA ... CASCADE`` (the name is quoted as an identifier)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def postgres_vacuum(url: str) -> None:
    """``VACUUM ANALYZE`` the database: what autovacuum would have done by now, so each
    library starts its processing run on tables without the dead rows of earlier runs."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def nats_delete_streams(url: str, prefixes: tuple[str, ...]) -> None:
    """Delete the JetStream streams (KV and object stores are streams too) whose name
    starts with one of ``prefixes``."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefixes):
                try:
                    await js.delete_stream(info.config.name)
                except NotFoundError:
                    pass
    finally:
        await nc.close()


async def sqlite_remove(path: Path) -> None:
    """Delete a SQLite database file with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
