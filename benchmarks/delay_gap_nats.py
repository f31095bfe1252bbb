"""What a blocking NATS ``delay()`` waits on that an awaited one does not: blocks of ``n``
blocking calls (``OmniQ``) and ``n`` awaited ones (``AsyncOmniQ``) alternated in one
process, per call the medians of wall time and the sums of CPU (this process's, and with
``--pid`` the nats-server's), so that a shared machine's swings hit both alike.

    .venv/bin/python benchmarks/delay_gap_nats.py nats://127.0.0.1:4224 -n 1000 --pid PID
    .venv/bin/python benchmarks/delay_gap_nats.py nats://127.0.0.1:4224 -n 1000 --defer-wake

``--defer-wake`` is an experiment, not a mode to run: during the blocking blocks a
wake-up is left in the client's buffer for the next call's write, as an awaited loop of
calls sends it, instead of being written alone before the call returns (the last call's
wake-up would then wait for the portal's thread: what ``test_post.py`` forbids). The
difference it makes is what that separate write costs.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

from delay_cpu_nats import delete_streams, own_cpu
from drivers import arguments, cpu_seconds, noop_app, use_store


def _keep_wake_ups(inbox: Any) -> None:
    """``Inbox._write_pending`` for ``--defer-wake``: leave the buffer for the next post."""
    inbox._soon = False


def main() -> None:
    parser = arguments(__doc__, n=1000, pid=True)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--defer-wake", action="store_true", help="(an experiment, above)")
    args = parser.parse_args()
    prefix = f"delaygap{os.getpid()}"
    use_store(f"{args.url}?prefix={prefix}")

    from omniq import OmniQ
    from omniq_backend_nats.batch import Inbox

    blocking = OmniQ()

    @blocking.task(name="noop_sync")
    def noop_sync() -> None:
        pass

    app, noop = noop_app()
    loop = asyncio.new_event_loop()
    n, pid = args.n, args.pid
    walls: dict[str, list[float]] = {"sync": [], "async": []}
    cpu = {key: [0.0, 0.0] for key in walls}  # (client, server)

    async def awaited() -> None:
        for _ in range(n):
            await noop.delay()

    def calls() -> None:
        for _ in range(n):
            noop_sync.delay()

    def timed(kind: str, run: Any) -> None:
        server, client, started = cpu_seconds(pid) if pid else 0.0, own_cpu(), time.perf_counter()
        run()
        walls[kind].append(time.perf_counter() - started)
        cpu[kind][0] += own_cpu() - client
        cpu[kind][1] += cpu_seconds(pid) - server if pid else 0.0

    blocking.open()
    loop.run_until_complete(app.open())
    write_pending = Inbox._write_pending
    try:
        for _ in range(50):
            noop_sync.delay()
        loop.run_until_complete(awaited())
        for _ in range(args.rounds):
            if args.defer_wake:
                Inbox._write_pending = _keep_wake_ups  # type: ignore[method-assign]
            try:
                timed("sync", calls)
            finally:
                Inbox._write_pending = write_pending  # type: ignore[method-assign]
            timed("async", lambda: loop.run_until_complete(awaited()))
        calls_made = n * args.rounds
        for kind, spent in walls.items():
            client, server = (c / calls_made * 1e6 for c in cpu[kind])
            shown = f" server_us {server:.1f}" if pid else ""
            print(
                f"{kind} wall_us {statistics.median(spent) / n * 1e6:.1f} "
                f"client_us {client:.1f}{shown}"
            )
        gap = statistics.median(walls["sync"]) / statistics.median(walls["async"]) - 1
        print(f"gap {gap:+.0%}" + (" (wake-ups deferred)" if args.defer_wake else ""))
    finally:
        blocking.close()
        loop.run_until_complete(app.close())
        loop.run_until_complete(delete_streams(args.url, prefix))
        loop.close()


if __name__ == "__main__":
    main()
