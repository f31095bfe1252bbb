"""What the dashboard tests share: an app on a fresh SQLite file with a few tasks, a
worker run in burst mode, and the dashboard served by uvicorn on a free port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from omniq import OmniQ
from omniq.testing import until


class Shop:
    """An app with the tasks the tests enqueue. ``flaky`` fails until ``fix()``."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/q.db"
        self.marker = tmp_path / "fixed"
        self.app = OmniQ(task_queue=self.url)
        marker = self.marker

        @self.app.task(queue="mail", name="shop.send_mail")
        def send_mail(to: str) -> str:
            return f"sent to {to}"

        @self.app.task(queue="reports", name="shop.report")
        def report(day: int) -> int:
            return day

        @self.app.task(queue="mail", name="shop.flaky")
        def flaky(note: str) -> str:
            if not marker.exists():
                raise RuntimeError(f"cannot send {note}")
            return "ok"

        self.send_mail, self.report, self.flaky = send_mail, report, flaky

    def fix(self) -> None:
        self.marker.touch()

    def work(self) -> None:
        """Run a worker in this process until the queues are empty."""
        self.app.run_worker(burst=True, queues=["mail", "reports"], concurrency=2)

    def dead(self, note: str) -> str:
        """A task that died (``flaky`` before the fix); its id."""
        ref = self.flaky.delay(note)
        self.work()
        assert self.app.get_task(ref.id).state.value == "dead"
        return ref.id


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = Shop(tmp_path)
    yield s
    s.app.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(web: Starlette) -> Iterator[str]:
    """Serve ``web`` with uvicorn in a thread; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "uvicorn stopped before it started"
        return bool(server.started)

    until(started, "uvicorn started", deadline=15.0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def rows(html: str, marker: str = 'data-task="') -> list[str]:
    """The task ids of a page's rows, in order."""
    out: list[Any] = []
    start = 0
    while (i := html.find(marker, start)) >= 0:
        j = html.index('"', i + len(marker))
        out.append(html[i + len(marker) : j])
        start = j
    return out


@pytest.fixture
def served() -> Any:
    """:func:`serve`, for tests (test modules cannot import conftest by name)."""
    return serve


@pytest.fixture
def task_rows() -> Any:
    """:func:`rows`, for tests."""
    return rows
