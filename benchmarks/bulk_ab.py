"""A PostgreSQL bulk enqueue's two versions in one process, alternated round by round:
the ``PostgresTaskQueue`` methods of another tree's ``queue.py`` against this tree's,
for A/B work on a machine too busy for two runs one after the other to compare.

    OMNIQ_DISABLE_PLUGINS=opentelemetry,prometheus .venv/bin/python benchmarks/bulk_ab.py \\
        postgresql://postgres@127.0.0.1:5432/test /path/to/base/omniq-backend-postgres -n 10000

Only ``queue.py`` comes from the other tree (its relative imports, the core and the
rest of the backend are this tree's): every method its class defines is set on this
tree's class for the base's rounds. One app and schema for all rounds, the tables
emptied (``TRUNCATE``) before each; the order of the two flips every round. Prints per
version the median and quartiles of the rate, the store's backends' CPU (``/proc``)
and this process's CPU per task, and in how many rounds this tree's rate was the higher.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import statistics
import time
from pathlib import Path
from typing import Any

from drivers import arguments, backend_pids, cpu_seconds, noop_app, use_store


def versions(base: str) -> dict[str, dict[str, Any]]:
    """The class attributes of each version's ``PostgresTaskQueue``."""
    import omniq_backend_postgres.queue as this

    path = Path(base) / "src" / "omniq_backend_postgres" / "queue.py"
    spec = importlib.util.spec_from_file_location("omniq_backend_postgres._ab_base", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {
        "base": dict(vars(module.PostgresTaskQueue)),
        "this": dict(vars(this.PostgresTaskQueue)),
    }


def use(attributes: dict[str, Any]) -> None:
    import omniq_backend_postgres.queue as this

    for name, value in attributes.items():
        if not name.startswith("__") and name != "_abc_impl":  # (methods and constants)
            setattr(this.PostgresTaskQueue, name, value)


async def main(url: str, base: str, n: int, rounds: int) -> None:
    import asyncpg

    found = versions(base)
    dsn = url.split("?")[0]
    schema = f"bulkab{os.getpid()}"
    use_store(f"{dsn}?schema={schema}")
    app, noop = noop_app()
    await app.open()
    probe = await asyncpg.connect(dsn)
    figures: dict[str, list[tuple[float, float, float]]] = {"base": [], "this": []}
    try:
        for name in figures:  # (each prepares its statements)
            use(found[name])
            await app.enqueue_many(noop, [()] * 1000)
        pids = [p for p in await backend_pids(dsn) if p != probe.get_server_pid()]
        for r in range(rounds):
            for name in ("base", "this") if r % 2 == 0 else ("this", "base"):
                use(found[name])
                await probe.execute(
                    f"TRUNCATE {schema}.tasks, {schema}.events, {schema}.dependencies"
                )
                gc.collect()
                server = sum(map(cpu_seconds, pids))
                own = time.process_time()
                started = time.perf_counter()
                await app.enqueue_many(noop, [()] * n)
                wall = time.perf_counter() - started
                own = time.process_time() - own
                server = sum(map(cpu_seconds, pids)) - server
                figures[name].append((n / wall, server / n * 1e6, own / n * 1e6))
        for name, got in figures.items():
            rates = [f[0] for f in got]
            quartiles = ", ".join(f"{q:,.0f}" for q in statistics.quantiles(rates, n=4))
            print(
                f"{name}: rate median {statistics.median(rates):,.0f} (quartiles {quartiles})"
                f" server_us mean {statistics.mean(f[1] for f in got):.2f}"
                f" client_us mean {statistics.mean(f[2] for f in got):.2f}"
            )
        wins = sum(b[0] > a[0] for a, b in zip(figures["base"], figures["this"], strict=True))
        print(f"rounds where this tree's rate was the higher: {wins} of {rounds}")
    finally:
        use(found["this"])
        await probe.close()
        await app.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


if __name__ == "__main__":
    parser = arguments(__doc__)
    parser.add_argument("base", help="the other tree's omniq-backend-postgres directory")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.base, args.n, args.rounds))
