"""The tracing middleware at its edges, in this process: an interrupted attempt, one a
middleware before it refused, and discovery that loads no OpenTelemetry."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, StatusCode
from opentelemetry.util._once import Once

from omniq.context import body_starting
from omniq.models import Task
from omniq.worker.pools import PoolBrokenError
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
    mw.after_completion(task, accepted=True)
    (process,) = exporter.get_finished_spans()
    assert process.parent is None and process.links == ()


@pytest.mark.anyio
async def test_a_success_s_span_ends_when_the_store_answers_a_refused_one_interrupted() -> None:
    mw, exporter = _middleware()
    kept, refused = Task(id="k", name="n", attempts=1), Task(id="r", name="n", attempts=1)
    for task in (kept, refused):
        await mw.before_run(task)
        await mw.after_success(task, None)
    assert exporter.get_finished_spans() == ()  # (the store has not answered yet)
    returned = time.time_ns()
    mw.after_completion(kept, accepted=True)
    mw.after_completion(refused, accepted=False)  # its lease was lost while it ran
    ok, lost = exporter.get_finished_spans()
    assert ok.attributes["messaging.omniq.task.outcome"] == "succeeded"
    assert ok.status.status_code is StatusCode.UNSET
    assert lost.attributes["messaging.omniq.task.outcome"] == "interrupted"
    assert lost.status.status_code is StatusCode.ERROR
    assert ok.end_time <= returned and lost.end_time <= returned  # when each returned


@pytest.mark.anyio
async def test_a_failure_s_span_ends_when_the_store_answers_a_refused_one_interrupted() -> None:
    """A failed attempt's span, like a success's, tells its outcome by the store's answer
    to its retry or dead letter: one refused (its lease was lost while it ran, the task
    another attempt's) is ``interrupted``, with no ``retry`` event."""
    mw, exporter = _middleware()
    kept, refused = Task(id="k", name="n", attempts=1), Task(id="r", name="n", attempts=1)
    error = ValueError("bad")
    for task in (kept, refused):
        await mw.before_run(task)
        await mw.on_failure(task, error, will_retry=True)
    assert exporter.get_finished_spans() == ()  # (the store has not answered yet)
    failed = time.time_ns()
    mw.after_failure_completion(kept, error, will_retry=True, accepted=True)
    mw.after_failure_completion(refused, error, will_retry=True, accepted=False)
    retried, lost = exporter.get_finished_spans()
    assert retried.attributes["messaging.omniq.task.outcome"] == "retried"
    assert [e.name for e in retried.events] == ["exception", "retry"]
    assert lost.attributes["messaging.omniq.task.outcome"] == "interrupted"
    assert lost.status.status_code is StatusCode.ERROR
    assert [e.name for e in lost.events] == ["exception"]  # (it raised; it runs no retry)
    assert retried.end_time <= failed and lost.end_time <= failed  # when each failed


@pytest.mark.anyio
async def test_the_span_starts_with_the_body_current_from_there() -> None:
    """As the worker drives it: ``before_run``, then the body's start (the runtime's, or
    the process pool's once its child has loaded the call), then the body."""
    mw, exporter = _middleware()
    task = Task(id="t", name="n", attempts=1)
    await mw.before_run(task)
    assert not trace.get_current_span().get_span_context().is_valid  # (not started yet)
    body = time.time_ns()
    (enter,) = body_starting(True)
    running = trace.get_current_span().get_span_context()
    with enter():  # (what a process-pool child enters around the body: remote there)
        carried = trace.get_current_span().get_span_context()
        assert (carried.trace_id, carried.span_id) == (running.trace_id, running.span_id)
    await mw.after_success(task, None)
    mw.after_completion(task, accepted=True)
    (process,) = exporter.get_finished_spans()
    assert process.context == running
    assert process.start_time is not None and process.start_time >= body
    assert process.attributes["messaging.omniq.task.start_delay"] >= 0


@pytest.mark.anyio
async def test_an_attempt_that_fails_before_its_body_has_a_span_from_before_run() -> None:
    """A process-pool child that died starting up: the body never started."""
    mw, exporter = _middleware()
    task = Task(id="t", name="n", attempts=1)
    handed = time.time_ns()
    await mw.before_run(task)
    died = PoolBrokenError("the child died")
    await mw.on_failure(task, died, will_retry=True)
    mw.after_failure_completion(task, died, will_retry=True, accepted=True)
    (process,) = exporter.get_finished_spans()
    assert process.start_time is not None and handed <= process.start_time
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["messaging.omniq.task.outcome"] == "retried"
    assert not trace.get_current_span().get_span_context().is_valid  # (detached)


def test_discovery_imports_no_opentelemetry() -> None:
    """Every OmniQ process imports the plugin module; the API loads only when used."""
    code = "import sys, omniq_opentelemetry.plugin; print('opentelemetry' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False"]


@pytest.mark.anyio
async def test_without_an_sdk_only_the_current_context_travels() -> None:
    """With the API's own provider no span records: an enqueue outside any trace leaves
    the headers alone, one inside a trace (a context from another process) carries that
    trace's context as the API's tracer would, and the attempt runs under it."""
    mw = TracingMiddleware(NoOpTracerProvider())
    quiet = Task(id="q", name="n")
    await mw.before_enqueue(quiet)
    assert quiet.headers == {}
    await mw.before_run(quiet)
    assert not trace.get_current_span().get_span_context().is_valid
    await mw.after_success(quiet, None)

    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    token = otel_context.attach(propagate.extract(incoming))
    try:
        task = Task(id="t", name="n")
        await mw.before_enqueue(task)
    finally:
        otel_context.detach(token)
    assert task.headers["traceparent"] == incoming["traceparent"]
    await mw.before_run(task)
    running = trace.get_current_span().get_span_context()
    assert format(running.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    await mw.after_success(task, None)
    assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.anyio
async def test_a_provider_set_after_the_middleware_was_made_records() -> None:
    """The global provider is looked up at each enqueue: the API's proxy before an SDK is
    set records nothing, the SDK's set later does."""
    mw = TracingMiddleware()
    before = Task(id="b", name="n")
    await mw.before_enqueue(before)
    assert "traceparent" not in before.headers
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    trace.set_tracer_provider(provider)
    try:
        after = Task(id="a", name="n")
        await mw.before_enqueue(after)
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
        provider.shutdown()
    (send,) = exporter.get_finished_spans()
    assert after.headers["traceparent"].split("-")[2] == format(send.context.span_id, "016x")


@pytest.mark.anyio
async def test_a_provider_named_in_the_environment_later_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider named by ``OTEL_PYTHON_TRACER_PROVIDER`` after the middleware was made is
    loaded at the next enqueue (the global lookup's own rule), and its spans record; before
    it is named, nothing does."""
    mw = TracingMiddleware()
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    try:
        monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
        before = Task(id="b", name="n")
        await mw.before_enqueue(before)
        assert "traceparent" not in before.headers
        monkeypatch.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
        after = Task(id="a", name="n")
        await mw.before_enqueue(after)
        assert isinstance(trace._TRACER_PROVIDER, TracerProvider)
    finally:
        loaded = trace._TRACER_PROVIDER
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
        if isinstance(loaded, TracerProvider):
            loaded.shutdown()
    assert int(after.headers["traceparent"].split("-")[2], 16)  # a span of its own


@pytest.mark.anyio
async def test_an_sdk_set_up_after_the_app_was_made_traces_its_enqueues_and_attempts() -> None:
    """The plugin's middleware is made with the app (at import, as a rule), before the
    program sets its SDK up: an enqueue before that writes no trace context; from then on
    each enqueue and each attempt is a span of its own (the provider is not fixed when the
    app is made), the attempt a child of its enqueue's."""
    from omniq import AsyncOmniQ
    from omniq.testing.inline import memory_url, run_queued

    url = memory_url()
    app = AsyncOmniQ(task_queue=url, result_storage=url, event_storage=url)
    assert any(isinstance(m, TracingMiddleware) for m in app.middleware.middleware)

    @app.task(name="shop.ok")
    async def ok() -> int:
        return 1

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    async with app:
        quiet = await ok.delay()
        assert "traceparent" not in (await app.get_task(quiet.id)).headers
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
        trace.set_tracer_provider(provider)
        try:
            traced = await ok.delay()
            await run_queued(app)
        finally:
            trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
            provider.shutdown()
        headers = (await app.get_task(traced.id)).headers
    by_name: dict[str, list[Any]] = {}
    for span in exporter.get_finished_spans():
        by_name.setdefault(span.name, []).append(span)
    (send,) = by_name["send default"]
    assert send.attributes is not None and send.attributes["messaging.message.id"] == traced.id
    assert headers["traceparent"].split("-")[2] == format(send.context.span_id, "016x")
    processes = {s.attributes["messaging.message.id"]: s for s in by_name["process default"]}
    assert set(processes) == {quiet.id, traced.id}  # (both ran after the SDK was set)
    assert processes[quiet.id].parent is None
    assert processes[traced.id].parent.span_id == send.context.span_id
