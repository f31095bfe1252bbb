"""Fixtures of the metrics tests: workers of ``prometheus_app`` on one SQLite file, and
the test's own producer app on the same store."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from prometheus_workers import WorkerProcess  # noqa: E402


@pytest.fixture
def worker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of the workers and of the test's own producer app: one store."""
    url = f"sqlite:///{tmp_path}/q.db"
    monkeypatch.setenv("OMNIQ_TASK_QUEUE", url)
    monkeypatch.syspath_prepend(str(HERE))
    env = dict(os.environ)
    env.pop("OMNIQ_METRICS_PORT", None)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*args: str, port: int | None = None) -> WorkerProcess:
        w = WorkerProcess(worker_env, tmp_path, *args, port=port)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def producer(worker_env: dict[str, str]) -> Iterator[Any]:
    """The test's own instance of ``prometheus_app`` (same store as the workers)."""
    import importlib

    sys.modules.pop("prometheus_app", None)
    module = importlib.import_module("prometheus_app")
    yield module
    module.app.close()
    sys.modules.pop("prometheus_app", None)
