"""The async clients the backends use keep working in a patched worker process while
greenlets block in the hub thread (the design in docs/workers/gevent.md rests on this)."""

from __future__ import annotations

import os
import uuid

import pytest
from gevent_workers import run_python

from omniq.testing.services import require_service

URLS = {
    "redis": os.environ.get("OMNIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "postgres": os.environ.get(
        "OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "nats": os.environ.get("OMNIQ_TEST_NATS_URL", "nats://127.0.0.1:4222"),
}

CHECK = """
import asyncio, sys, time
when, db, key = sys.argv[1], sys.argv[2], sys.argv[3]
redis_url, pg_url, nats_url = sys.argv[4:7]
from omniq_workers_gevent import GeventPool
if when == "before-loop":
    GeventPool.prepare_process()

import aiosqlite, asyncpg, nats, redis.asyncio as aioredis


async def clients(n):
    own = f"{key}-{n}"  # concurrent clients must not delete each other's key
    async with aiosqlite.connect(db) as conn:
        await conn.execute("create table if not exists t (x)")
        await conn.execute("insert into t values (1)")
        await conn.commit()
        rows = (await (await conn.execute("select count(*) from t")).fetchone())[0]
    r = aioredis.from_url(redis_url)
    await r.set(own, "v", ex=30)
    got = await r.get(own)
    await r.delete(own)
    await r.aclose()
    pg = await asyncpg.connect(pg_url)
    answer = await pg.fetchval("select $1::int + 1", 41)
    await pg.close()
    nc = await nats.connect(nats_url)
    sub = await nc.subscribe(own)
    await nc.publish(own, b"hi")
    msg = await sub.next_msg(timeout=5)
    await nc.close()
    return rows > 0 and got == b"v" and answer == 42 and msg.data == b"hi"


def blocking():
    time.sleep(0.3)
    return True


async def main():
    pool = GeventPool(200)
    await pool.start()  # patches here when "after-loop"
    t = time.monotonic()
    results = await asyncio.gather(*(pool.run(blocking, [], {}, 5) for _ in range(200)),
                                   *(clients(n) for n in range(4)))
    took = time.monotonic() - t
    await pool.stop()
    selector = type(asyncio.get_running_loop()._selector).__module__.split(".")[0]
    print(all(results), took < 3, selector)


asyncio.run(main())
"""


@pytest.mark.parametrize("when", ["before-loop", "after-loop"])
def test_async_clients_work_beside_the_greenlets(tmp_path, when):
    for name, url in URLS.items():
        require_service(name, url)
    key = f"omniq-gevent-test-{uuid.uuid4().hex}"
    out = run_python(CHECK, args=[when, str(tmp_path / "c.db"), key, *URLS.values()])
    assert out.strip() == "True True selectors"
