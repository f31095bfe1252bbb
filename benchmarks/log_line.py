"""CPU per worker outcome line: ``log_outcome`` with the command line's handler.

    python benchmarks/log_line.py            # text
    python benchmarks/log_line.py json

Installs the handler ``omniq worker`` installs (``setup_logging``) with stderr sent to a
file, calls ``log_outcome`` for a success 20,000 times, and prints the median CPU time
per call (``time.process_time``) over 7 repetitions: CPU, not wall time, so a busy
machine disturbs it less.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time

from omniq.cli.ui import setup_logging
from omniq.models import Task, now
from omniq.worker.outcomes import log_outcome

CALLS = 20_000


def main() -> None:
    fmt = sys.argv[1] if len(sys.argv) > 1 else "text"
    report = sys.stdout
    with tempfile.TemporaryFile("w") as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 (as at start-up)
        setup_logging(logging.INFO, fmt)
        task = Task(id="18ee5da382c22b9c-a174f36a76a0a797", name="bench.noop", queue="default")
        task.attempts = 1

        def run() -> float:
            start = time.process_time()
            for _ in range(CALLS):
                log_outcome("vm:30092:465bda", task, "succeeded", now() - 0.001)
            for handler in logging.getLogger().handlers:  # held lines count too
                handler.flush()
            return (time.process_time() - start) / CALLS * 1e6

        run()  # warm up
        per_call = sorted(run() for _ in range(7))
    runs = ", ".join(f"{t:.2f}" for t in per_call)
    print(f"{fmt}: {statistics.median(per_call):.2f} us CPU per call ({runs})", file=report)


if __name__ == "__main__":
    main()
