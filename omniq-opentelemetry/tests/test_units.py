"""The tracing middleware at its edges, in this process: an interrupted attempt, one a
middleware before it refused, and discovery that loads no OpenTelemetry."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from omniq.models import Task
from omniq_opentelemetry import TracingMiddleware


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _middleware() -> tuple[TracingMiddleware, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return TracingMiddleware(provider), exporter


@pytest.mark.anyio
async def test_an_interrupted_attempt_is_an_error_that_runs_again() -> None:
    mw, exporter = _middleware()
    task = Task(id="t", name="n", queue="q", attempts=1)
    await mw.before_enqueue(task)
    assert task.headers["traceparent"].startswith("00-")
    await mw.before_run(task)
    await mw.on_failure(task, asyncio.CancelledError(), will_retry=True)
    send, process = exporter.get_finished_spans()
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["messaging.omniq.task.outcome"] == "interrupted"
    assert [e.name for e in process.events] == ["retry"]  # no exception: it was stopped


@pytest.mark.anyio
async def test_an_attempt_refused_before_this_middleware_ran_ends_no_span() -> None:
    mw, exporter = _middleware()
    task = Task(id="t", name="n")
    await mw.on_failure(task, PermissionError("tenant"), will_retry=False)
    assert exporter.get_finished_spans() == ()


@pytest.mark.anyio
async def test_a_task_enqueued_without_trace_context_starts_a_trace_of_its_own() -> None:
    mw, exporter = _middleware()
    task = Task(id="t", name="n", attempts=1)
    await mw.before_run(task)
    await mw.after_success(task, None)
    (process,) = exporter.get_finished_spans()
    assert process.parent is None and process.links == ()


def test_discovery_imports_no_opentelemetry() -> None:
    """Every OmniQ process imports the plugin module; the API loads only when used."""
    code = "import sys, omniq_opentelemetry.plugin; print('opentelemetry' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False"]
