"""Discovery, the command line, and the message when gevent is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gevent_workers import run_python

from omniq.interfaces import BasePool

HERE = Path(__file__).parent
INSTALL_HINT = "install it with: pip install 'omniq[gevent]'"


def omniq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omniq.cli", *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def no_gevent(tmp_path: Path, worker_env: dict[str, str]) -> dict[str, str]:
    """An environment where ``import gevent`` fails as if it were not installed."""
    fake = tmp_path / "shadow" / "gevent"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'gevent'\", name='gevent')\n"
    )
    return {**worker_env, "PYTHONPATH": str(fake.parent)}


def test_discovery_imports_no_gevent_and_patches_nothing():
    out = run_python("""
        import socket, sys
        from omniq.registry import registry
        print(registry.pool_names(), "gevent" in sys.modules, socket.socket.__module__)
    """)
    assert out.strip() == "['async', 'gevent', 'process', 'thread'] False socket"


def test_omniq_plugins_lists_the_pool(worker_env):
    run = omniq("plugins", "--json", env=worker_env)
    assert run.returncode == 0, run.stderr
    entry = next(p for p in json.loads(run.stdout) if p["name"] == "gevent")
    assert (entry["distribution"], entry["pools"], entry["error"]) == (
        "omniq-workers-gevent",
        ["gevent"],
        None,
    )


@pytest.mark.slow
def test_omniq_worker_pool_gevent_runs_the_app(producer, worker_env):
    refs = producer.app.enqueue_many(producer.nap, [(0.2,) for _ in range(100)])
    run = omniq(
        "worker",
        "--pool",
        "gevent",
        "--concurrency",
        "500",
        "--app",
        "gevent_app:app",
        "--burst",
        env=worker_env,
    )
    assert run.returncode == 0, run.stderr
    assert len({producer.app.get_result(r, timeout=5) for r in refs}) == 1


@pytest.mark.slow
@pytest.mark.xfail(
    not hasattr(BasePool, "prepare_process"),
    strict=True,
    reason="omniq worker does not yet call BasePool.prepare_process() before --app",
)
def test_omniq_worker_patches_before_importing_the_app(producer, worker_env):
    producer.app.enqueue_many(producer.nap_bound, [(0.2,) for _ in range(10)])
    run = omniq(
        "worker",
        "--pool",
        "gevent",
        "--concurrency",
        "10",
        "--app",
        "gevent_app:app",
        "--burst",
        env=worker_env,
    )
    assert run.returncode == 0, run.stderr
    assert "after the application was imported" not in run.stderr


def test_without_gevent_the_error_says_what_to_install(producer, no_gevent):
    run = omniq("worker", "--pool", "gevent", "--app", "gevent_app:app", "--burst", env=no_gevent)
    assert run.returncode != 0
    assert (
        "worker pool 'gevent' could not import 'omniq_workers_gevent.pool:GeventPool': "
        "No module named 'gevent'" in run.stderr
    )
    assert INSTALL_HINT in run.stderr and "pip install ./omniq-workers-gevent" in run.stderr


def test_from_code_without_gevent_the_error_says_what_to_install(producer, no_gevent):
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gevent_app import app; app.run_worker(pool='gevent', burst=True)",
        ],
        cwd=HERE,
        env=no_gevent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert INSTALL_HINT in run.stderr.strip().splitlines()[-1]


def test_without_the_distribution_the_error_names_it(producer, worker_env):
    run = omniq(
        "worker",
        "--pool",
        "gevent",
        "--app",
        "gevent_app:app",
        "--burst",
        env={**worker_env, "OMNIQ_DISABLE_PLUGINS": "gevent"},
    )
    assert run.returncode != 0
    assert (
        "worker pool 'gevent' is provided by omniq-workers-gevent, which is not installed; "
        + INSTALL_HINT
        in run.stderr
    )
