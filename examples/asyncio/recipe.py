"""OmniQ in a plain asyncio program: enqueue, run a worker on the same event loop until
the queue is empty, read the results.

    python recipe.py [STORE_URL]          # default: sqlite:///omniq.db

A long-running service runs ``await omniq.run_worker()`` as its main coroutine instead
(SIGTERM or Ctrl-C drains it), and producers elsewhere only enqueue.
"""

import asyncio
import sys

from omniq import AsyncOmniQ

omniq = AsyncOmniQ(task_queue=sys.argv[1] if len(sys.argv) > 1 else "sqlite:///omniq.db")


@omniq.task(name="fetch_size")
async def fetch_size(url: str) -> int:
    await asyncio.sleep(0.01)  # stands in for real I/O
    return len(url)


async def main() -> None:
    async with omniq:  # opens the stores, and closes them on the way out
        refs = [await fetch_size.delay(url) for url in ("https://a.example", "https://bb.example")]
        await omniq.run_worker(concurrency=4, burst=True)  # returns once the queue is empty
        sizes = [await omniq.get_result(ref, timeout=10) for ref in refs]
    print("sizes:", sizes)


if __name__ == "__main__":
    asyncio.run(main())
