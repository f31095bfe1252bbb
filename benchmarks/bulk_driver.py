"""One ``enqueue_many`` of ``n`` no-op tasks on PostgreSQL (events on), for counting the
client's instructions per task under callgrind: run it with ``n`` and with 0 and take
the difference over ``n`` (the start, the schema and a warm-up bulk cost the same).

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/bulk_driver.py postgresql://postgres@127.0.0.1:5432/test 10000

Each run makes its own schema (``bulkdrv<pid>``) and drops it. The tracing and metrics
plugins are off (``OMNIQ_DISABLE_PLUGINS``), as in the peers' venv, which has neither.
"""

from __future__ import annotations

import asyncio
import os
import sys

from drivers import noop_app, use_store


async def main(url: str, n: int) -> None:
    import asyncpg

    base = url.split("?")[0]
    schema = f"bulkdrv{os.getpid()}"
    use_store(f"{base}?schema={schema}")
    os.environ.setdefault("OMNIQ_DISABLE_PLUGINS", "opentelemetry,prometheus")
    app, noop = noop_app()

    await app.open()
    try:
        await app.enqueue_many(noop, [()] * 1000)  # prepares the statements
        if n:
            await app.enqueue_many(noop, [()] * n)
    finally:
        await app.close()
        conn = await asyncpg.connect(base)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
