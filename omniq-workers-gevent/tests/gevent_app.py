"""The application the worker-level tests run: a worker subprocess imports it (after the
pool patched the process, as ``omniq worker --pool gevent --app`` will), and the test
process imports it to enqueue and read results."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from time import sleep as bound_sleep  # bound at import: cooperative only if patched before

from omniq import OmniQ

app = OmniQ(
    task_queue=f"sqlite:///{os.environ['GEVENT_TEST_DB']}",
    heartbeat=0.2,
    worker={"grace_period": float(os.environ.get("GEVENT_TEST_GRACE", "30"))},
)


@app.task
def nap(seconds: float, marker: str = "") -> int:
    if marker:
        Path(marker).touch()
    time.sleep(seconds)
    return os.getpid()


@app.task
def nap_bound(seconds: float) -> None:
    bound_sleep(seconds)


@app.task
def wait_on_socket(seconds: float) -> str:
    """Blocks in recv() until the socket's timeout passes (nothing is ever sent)."""
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(seconds)
        try:
            left.recv(1)
        except TimeoutError:
            return "timed out"
    return "received"


@app.task(retries=2, retry_backoff=0)
def flaky(counter: str) -> str:
    path = Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt == 1:
        raise ConnectionError(f"attempt {attempt} fails")
    return f"ok on attempt {attempt}"


@app.task(retries=1, retry_backoff=0)
def boom() -> None:
    raise ValueError("boom")


@app.task(timeout=0.3, retries=1, retry_backoff=0)
def too_slow() -> None:
    time.sleep(5)


@app.task
def step(name: str) -> str:
    return name


@app.task
def until_cancelled(marker: str, after: str) -> None:
    Path(marker).touch()
    time.sleep(30)
    Path(after).touch()
