"""A driver for counting the instructions of an empty blocking call under callgrind: what
the blocking API itself costs (``Portal.call`` of a coroutine that does nothing, driven
by the calling thread), without any store.

    for n in 100 2100; do
      valgrind --tool=callgrind --callgrind-out-file=cg.portal.$n .venv/bin/python \\
        benchmarks/portal_cpu.py $n
    done   # per call: (I(2,100) - I(100)) / 2,000

Makes 300 calls to warm up, freezes the heap (``gc.freeze()``), then ``n`` more.
"""

from __future__ import annotations

import argparse
import gc

from omniq.sync import Portal


async def nothing() -> None:
    """The call."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="calls after the warm-up")
    args = parser.parse_args()
    portal = Portal()
    try:
        for _ in range(300):
            portal.call(nothing)
        gc.collect()
        gc.freeze()
        for _ in range(args.n):
            portal.call(nothing)
    finally:
        portal.stop()


if __name__ == "__main__":
    main()
