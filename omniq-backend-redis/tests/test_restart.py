"""A worker survives its Redis restarting: it reconnects and goes on, losing nothing
that Redis persisted. Runs a private redis-server on a free loopback port."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from omniq import AsyncOmniQ
from omniq.testing import until

pytestmark = pytest.mark.anyio

REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int, data: Path) -> subprocess.Popen[bytes]:
    assert REDIS_SERVER is not None
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    try:
        until(listening, f"redis-server listening on port {port}")
    except BaseException:  # (pytest's failure is no Exception)
        proc.kill()
        raise
    return proc


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_worker_reconnects_after_a_redis_restart_and_loses_nothing_persisted(tmp_path):
    port = free_port()
    server = start_redis(port, tmp_path)
    try:
        async with AsyncOmniQ(task_queue=f"redis://127.0.0.1:{port}/0") as app:

            @app.task
            def double(x: int) -> int:
                return 2 * x

            worker = app.worker(concurrency=4)
            running = asyncio.create_task(worker.run(install_signals=False))
            before = [await double.delay(i) for i in range(10)]
            assert [await app.get_result(r, timeout=10) for r in before] == [
                2 * i for i in range(10)
            ]

            server.terminate()
            server.wait(timeout=10)
            server = start_redis(port, tmp_path)  # AOF replays what was acknowledged

            # The producer's own connection retries as well.
            after = [await double.delay(i) for i in range(10, 20)]
            assert [await app.get_result(r, timeout=20) for r in after] == [
                2 * i for i in range(10, 20)
            ]
            assert [await app.get_result(r, timeout=1) for r in before] == [
                2 * i for i in range(10)
            ]
            assert not running.done(), "the worker stopped instead of reconnecting"
            worker.request_stop("test")
            assert await asyncio.wait_for(running, 30) == "test"
    finally:
        server.kill()
        server.wait()
