"""Worker processes for the gevent tests.

Monkey-patching is process-wide, so nothing here patches the test process: every worker
(gevent or thread, for comparison) runs in a subprocess, and the test process only
enqueues and reads results through the same app module.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent
# The worker subprocesses import gevent_app from here; test modules import gevent_workers.
sys.path.insert(0, str(HERE))

from gevent_workers import StartWorker  # noqa: E402


@pytest.fixture
def worker_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "GEVENT_TEST_DB": str(tmp_path / "q.db"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def producer(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``gevent_app`` imported in the test process, on this test's database."""
    monkeypatch.setenv("GEVENT_TEST_DB", worker_env["GEVENT_TEST_DB"])
    sys.modules.pop("gevent_app", None)
    module = importlib.import_module("gevent_app")
    yield module
    module.app.close()
    sys.modules.pop("gevent_app", None)


@pytest.fixture
def start_worker(worker_env: dict[str, str]) -> Iterator[StartWorker]:
    procs: list[subprocess.Popen[str]] = []

    def start(
        pool: str, concurrency: int = 4, burst: bool = True, *extra: str, grace: float = 30
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "run_worker.py"),
                pool,
                str(concurrency),
                "1" if burst else "0",
                *extra,
            ],
            cwd=HERE,
            env={**worker_env, "GEVENT_TEST_GRACE": str(grace)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
