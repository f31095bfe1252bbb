"""The middleware's bookkeeping at its edges, the address option, and the plugin as the
registry and the command line find it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_workers import Scrape

from omniq.cli import cli
from omniq.errors import ConfigError, TaskTimeoutError
from omniq.models import Task
from omniq.registry import registry
from omniq_prometheus import Metrics, PrometheusMiddleware
from omniq_prometheus.server import parse_address


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _scrape(reg: CollectorRegistry) -> Scrape:
    return Scrape(generate_latest(reg).decode())


@pytest.mark.anyio
async def test_each_way_an_attempt_ends_has_its_outcome() -> None:
    reg = CollectorRegistry()
    mw = PrometheusMiddleware(Metrics(reg))
    tasks = [Task(id=f"t{i}", name="n", queue="q", created_at=1.0) for i in range(5)]
    for t in tasks:
        await mw.before_run(t)
    assert _scrape(reg).value("omniq_tasks_in_progress", task="n", queue="q") == 5
    await mw.after_success(tasks[0], 1)
    await mw.after_success(tasks[4], 1)
    # A success counts once the store has answered its completion (the worker's writer).
    assert _scrape(reg).value("omniq_tasks_total", outcome="succeeded") == 0
    mw.after_completion(tasks[0], accepted=True)
    mw.after_completion(tasks[4], accepted=False)  # refused: its lease was lost
    timeout, bad = TaskTimeoutError("slow"), ValueError("bad")
    await mw.on_failure(tasks[1], timeout, will_retry=True)
    await mw.on_failure(tasks[2], bad, will_retry=False)
    # A failure too counts once the store has answered its retry or dead letter.
    assert _scrape(reg).value("omniq_tasks_total", outcome="retried") == 0
    assert _scrape(reg).value("omniq_tasks_total", outcome="failed") == 0
    mw.after_failure_completion(tasks[1], timeout, will_retry=True, accepted=True)
    mw.after_failure_completion(tasks[2], bad, will_retry=False, accepted=True)
    s = _scrape(reg)
    for outcome in ("succeeded", "retried", "failed", "interrupted"):
        assert s.value("omniq_tasks_total", task="n", queue="q", outcome=outcome) == 1
    await mw.on_failure(tasks[3], asyncio.CancelledError(), will_retry=True)
    s = _scrape(reg)
    assert s.value("omniq_tasks_total", task="n", queue="q", outcome="interrupted") == 2
    assert s.value("omniq_tasks_in_progress") == 0
    assert s.value("omniq_task_duration_seconds_count") == 5
    assert s.value("omniq_task_queue_wait_seconds_count") == 5


@pytest.mark.anyio
async def test_a_failure_whose_retry_or_dead_letter_is_refused_counts_interrupted() -> None:
    """Its lease was lost while it ran: its failure decides nothing (the task is another
    attempt's), as a success whose completion is refused."""
    reg = CollectorRegistry()
    mw = PrometheusMiddleware(Metrics(reg))
    error = ValueError("bad")
    for will_retry in (True, False):
        task = Task(id=f"t{will_retry}", name="n", queue="q")
        await mw.before_run(task)
        await mw.on_failure(task, error, will_retry=will_retry)
        mw.after_failure_completion(task, error, will_retry=will_retry, accepted=False)
    s = _scrape(reg)
    assert s.value("omniq_tasks_total", outcome="interrupted") == 2
    assert s.value("omniq_tasks_total", outcome="retried") == 0
    assert s.value("omniq_tasks_total", outcome="failed") == 0
    assert s.value("omniq_task_duration_seconds_count") == 2
    assert s.value("omniq_tasks_in_progress") == 0


@pytest.mark.anyio
async def test_an_attempt_refused_before_this_middleware_ran_leaves_no_gauge_below_zero() -> None:
    reg = CollectorRegistry()
    mw = PrometheusMiddleware(Metrics(reg))
    task = Task(id="t", name="n", queue="q")
    # An earlier middleware's before_run raised: this one's never ran, its on_failure does.
    refused = PermissionError("tenant")
    await mw.on_failure(task, refused, will_retry=False)
    mw.after_failure_completion(task, refused, will_retry=False, accepted=True)
    s = _scrape(reg)
    assert s.value("omniq_tasks_total", outcome="failed") == 1
    assert s.value("omniq_tasks_in_progress") == 0
    assert s.value("omniq_task_duration_seconds_count") == 0


@pytest.mark.anyio
async def test_queue_wait_counts_from_the_eta_and_never_goes_negative() -> None:
    reg = CollectorRegistry()
    mw = PrometheusMiddleware(Metrics(reg))
    late = Task(id="a", name="n", created_at=time.time() - 100, eta=time.time() - 0.001)
    ahead = Task(id="b", name="n", created_at=time.time() + 30)  # the enqueuer's clock runs ahead
    for t in (late, ahead):
        await mw.before_run(t)
    s = _scrape(reg)
    assert s.value("omniq_task_queue_wait_seconds_bucket", task="n", le="0.25") == 2


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("9100", ("0.0.0.0", 9100)),
        (":9100", ("0.0.0.0", 9100)),
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_metrics_addresses(value: str, address: tuple[str, int]) -> None:
    assert parse_address(value) == address


@pytest.mark.parametrize("value", ["", "http", "0", "70000", "host:"])
def test_a_bad_metrics_address_names_the_value_and_the_form(value: str) -> None:
    with pytest.raises(ConfigError, match=r"is not \[HOST:\]PORT"):
        parse_address(value)


def test_the_plugin_is_found_and_adds_the_worker_option() -> None:
    names = {p.name for p in registry.plugins()}
    assert "prometheus" in names
    result = CliRunner().invoke(cli, ["worker", "--help"])
    assert result.exit_code == 0
    assert "--metrics-port [HOST:]PORT" in result.output
    bad = CliRunner().invoke(cli, ["worker", "--metrics-port", "nope"])
    assert bad.exit_code == 2
    assert "metrics address 'nope' is not [HOST:]PORT" in " ".join(bad.output.split())


def test_discovery_imports_no_prometheus_client() -> None:
    """Every OmniQ process imports the plugin module; the client loads only when used."""
    code = (
        "import sys, omniq_prometheus.plugin; "
        "print('prometheus_client' in sys.modules, 'click' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False", "False"]
