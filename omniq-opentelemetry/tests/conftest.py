"""Fixtures of the tracing tests: the SDK recording this process's spans in memory, and
the test's own producer app on the store the worker processes use."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """This process's spans, recorded by an SDK installed as the global provider for this
    test only: the API lets a process set it once, so the test puts the previous one back
    itself (as OpenTelemetry's own test utilities do), and the other tests of the session
    enqueue with the no-op tracer, their headers free of trace context."""
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "producer"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
        provider.shutdown()


@pytest.fixture
def worker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a worker process: the store, and the file its spans go to."""
    monkeypatch.setenv("OMNIQ_TASK_QUEUE", f"sqlite:///{tmp_path}/q.db")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["OMNIQ_TEST_SPANS"] = str(tmp_path / "worker-spans.jsonl")
    return env


@pytest.fixture
def producer(worker_env: dict[str, str]) -> Iterator[Any]:
    """The test's own instance of ``tracing_app`` (same store as the workers)."""
    sys.modules.pop("tracing_app", None)
    module = importlib.import_module("tracing_app")
    yield module
    module.app.close()
    sys.modules.pop("tracing_app", None)
