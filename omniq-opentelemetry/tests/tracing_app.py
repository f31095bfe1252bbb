"""The app the tracing tests run workers of; its store comes from $OMNIQ_TASK_QUEUE.

A worker process (where $OMNIQ_TEST_SPANS is set) records its spans with the SDK and
writes each, as the SDK's JSON, on one line of that file as it ends; the test reads them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from opentelemetry import trace

from omniq import OmniQ, current_task

SPANS = os.environ.get("OMNIQ_TEST_SPANS")
#: When this process imported the module (a process-pool child's start-up: before its
#: first body, and not in that attempt's span).
IMPORTED = time.time_ns()
if SPANS:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class JsonLines(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            lines = "".join(json.dumps(json.loads(s.to_json())) + "\n" for s in spans)
            with open(SPANS, "a") as f:  # one write per batch: lines of two processes never mix
                f.write(lines)
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource({"service.name": "worker"}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
    trace.set_tracer_provider(provider)

app = OmniQ()


@app.task(name="shop.ok")
def ok(n: int) -> int:
    span = trace.get_tracer("shop").start_as_current_span(
        "inside the task", attributes={"imported_at": IMPORTED}
    )
    with span:
        return n


@app.task(name="shop.flaky", retries=1, retry_backoff=0.01)
def flaky(n: int) -> int:
    task = current_task()
    if task is not None and task.attempt == 1:
        raise ConnectionError("first attempt fails")
    return n


@app.task(name="shop.boom")
def boom(n: int) -> int:
    raise ValueError(f"boom {n}")
