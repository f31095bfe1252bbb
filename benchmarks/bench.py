"""Throughput and latency of OmniQ with ONE worker process.

    python benchmarks/bench.py -n 10000                      # a temporary SQLite file
    python benchmarks/bench.py --pool thread --task sync
    python benchmarks/bench.py --url redis://127.0.0.1:6379/15 --json

Prints: enqueue tasks/s (one call per task), bulk enqueue tasks/s (enqueue_many),
processing tasks/s (first task started to last task finished, from the result
timestamps, one `omniq worker --burst` subprocess), and p50/p99 latency of one task
(enqueue -> result available) over sequential tasks with the worker already running.
Use an empty database: the benchmark purges the queue it uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STORE_VARIABLES = ("OMNIQ_TASK_QUEUE", "OMNIQ_RESULT_STORAGE", "OMNIQ_EVENT_STORAGE")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        help="backend URL for the task queue, results and events "
        "(default: a SQLite file in a temporary directory)",
    )
    parser.add_argument("--pool", help="worker pool: async (default), thread, process, gevent")
    parser.add_argument(
        "--concurrency", type=int, help="tasks the worker runs at once (default 10)"
    )
    parser.add_argument(
        "-n", type=int, default=10_000, help="tasks per throughput measurement (default 10000)"
    )
    parser.add_argument(
        "--latency-samples",
        type=int,
        default=200,
        help="sequential tasks for latency (default 200)",
    )
    parser.add_argument(
        "--task",
        choices=("async", "sync"),
        default="async",
        help="the no-op task: a coroutine function or a plain function (default async)",
    )
    parser.add_argument(
        "--events",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record task events (default: on)",
    )
    parser.add_argument(
        "--middleware",
        choices=("none", "empty"),
        default="none",
        help="per-task middleware on both sides: none, or one whose every "
        "method is a no-op (the chain's own cost; default none)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="the worker's --log-level (default INFO: one line per task)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args(argv)
    if args.n < 1 or args.latency_samples < 2:
        parser.error("-n must be >= 1 and --latency-samples >= 2")
    return args


def report(figures: dict[str, object], setup: dict[str, object]) -> str:
    f = figures
    return "\n".join(
        [
            (
                f"{f['subject']} on {setup['url']} (pool {setup['pool']}, "
                f"concurrency {setup['concurrency']}, "
                f"task {setup['task']}, events {'on' if setup['events'] else 'off'}, "
                f"middleware {setup['middleware']}, worker log level {setup['log_level']})"
            ),
            f"  enqueue, one by one   {f['enqueue_per_s']:>10,.0f} tasks/s  (n={f['n']})",
            f"  the same, sync API    {f['enqueue_sync_per_s']:>10,.0f} tasks/s",
            f"  enqueue, bulk         {f['bulk_enqueue_per_s']:>10,.0f} tasks/s",
            (
                f"  processing            {f['processing_per_s']:>10,.0f} tasks/s  "
                f"({f['n']} tasks in {f['processing_s']} s, one worker process)"
            ),
            (
                f"  latency p50 / p99     {f['latency_p50_ms']:>7} ms / {f['latency_p99_ms']} ms  "
                f"({f['latency_samples']} sequential tasks)"
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omniq-bench-") as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        # Both this process and the worker subprocess build their app from these.
        os.environ.update(dict.fromkeys(STORE_VARIABLES, url))
        os.environ["OMNIQ_EVENTS"] = "true" if args.events else "false"
        os.environ["OMNIQ_BENCH_MIDDLEWARE"] = args.middleware
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(HERE), os.environ.get("PYTHONPATH")])
        )
        sys.path.insert(0, str(HERE))

        from harness import measure
        from omniq_subject import OmniQSubject

        from omniq.config import load_config, mask_url

        worker_config = load_config().worker  # what the worker subprocess will use by default
        subject = OmniQSubject(args.pool, args.concurrency, args.task, args.log_level)
        figures = asyncio.run(
            measure(subject, args.n, args.latency_samples, Path(tmp), progress=not args.json)
        )
    setup = {
        "url": mask_url(url) if args.url else "sqlite (temporary file)",
        "pool": args.pool or worker_config.pool,
        "concurrency": args.concurrency or worker_config.concurrency,
        "task": args.task,
        "events": args.events,
        "middleware": args.middleware,
        "log_level": args.log_level,
    }
    if args.json:
        print(json.dumps({**figures.as_dict(), **setup}, indent=2))
    else:
        print(report(figures.as_dict(), setup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
