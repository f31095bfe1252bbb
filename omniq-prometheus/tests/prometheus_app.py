"""The app the metrics tests run workers of; its store comes from $OMNIQ_TASK_QUEUE."""

from __future__ import annotations

import time
from pathlib import Path

from omniq import OmniQ

app = OmniQ()


@app.task(name="shop.ok")
def ok(n: int) -> int:
    return n


@app.task(name="shop.boom", retries=1, retry_backoff=0.01)
def boom(n: int) -> int:
    raise ValueError(f"boom {n}")


@app.task(name="shop.hold")
def hold(release: str) -> str:
    """Run until the file ``release`` exists (the test creates it), at most a minute."""
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return release
