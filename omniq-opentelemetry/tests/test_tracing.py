"""A trace across processes: spans of the enqueue recorded here (the SDK's in-memory
exporter), spans of the attempts recorded by a real ``omniq worker`` process, joined by
the W3C trace context the task's headers carried through the store."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from omniq.errors import TaskFailedError
from omniq.testing import until

DEADLINE = 60.0


def _hex(n: int, width: int) -> str:
    return f"0x{n:0{width}x}"


def worker_spans(path: Path, count: int, proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """The worker's spans once ``count`` have ended (it writes each as it ends)."""

    def written() -> list[str]:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) < count and proc.poll() is not None:
            pytest.fail(f"the worker exited ({proc.returncode}): {proc.stdout}")
        return lines if len(lines) >= count else []

    lines = until(
        written,
        f"the worker's {count} spans",
        deadline=DEADLINE,
        show=lambda: f"{len(path.read_text().splitlines()) if path.exists() else 0} written",
    )
    return [json.loads(line) for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["thread", "async", "process", "gevent"])
def test_the_enqueue_and_every_attempt_form_one_trace_across_processes(
    pool: str,
    spans: InMemorySpanExporter,
    producer: Any,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    if pool == "gevent":
        pytest.importorskip("omniq_workers_gevent")
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /orders") as request:
        refs = {
            "shop.ok": producer.ok.delay(1),
            "shop.flaky": producer.flaky.delay(2),
            "shop.boom": producer.boom.delay(3),
        }
    trace_id = request.get_span_context().trace_id

    # Here: one PRODUCER span per enqueue, under the request, its context in the headers.
    sent = {s.attributes["messaging.message.id"]: s for s in spans.get_finished_spans()[:-1]}
    assert set(sent) == {ref.id for ref in refs.values()}
    for name, ref in refs.items():
        span = sent[ref.id]
        assert span.name == "send default" and span.kind is SpanKind.PRODUCER
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
        assert span.context.trace_id == trace_id
        assert dict(span.attributes) == {
            "messaging.system": "omniq",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": "default",
            "messaging.message.id": ref.id,
            "messaging.omniq.task.name": name,
        }
        headers = producer.app.get_task(ref.id).headers
        context = span.context
        assert headers["traceparent"] == (
            f"00-{trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )

    # There: a worker process that never saw this process's spans.
    log = (tmp_path / "worker.log").open("w")
    # (a process-pool child per attempt: each starts up, and imports the app, for its call)
    fresh = ["--max-tasks-per-child", "1"] if pool == "process" else []
    command = [sys.executable, "-m", "omniq.cli", "worker", "--app", "tracing_app:app", *fresh]
    proc = subprocess.Popen(
        [*command, "--pool", pool],
        env=worker_env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert producer.app.get_result(refs["shop.ok"], timeout=DEADLINE) == 1
        assert producer.app.get_result(refs["shop.flaky"], timeout=DEADLINE) == 2
        with pytest.raises((ValueError, TaskFailedError)):
            producer.app.get_result(refs["shop.boom"], timeout=DEADLINE)
        # ok, flaky twice, boom: four attempts, and the span the task body starts itself
        # (a process-pool child imports the test app, which sets the SDK up, too)
        found = worker_spans(Path(worker_env["OMNIQ_TEST_SPANS"]), 5, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

    attempts: dict[tuple[str, int], dict[str, Any]] = {}
    inside: dict[str, Any] = {}
    for span in found:
        if span["name"] == "inside the task":
            inside = span
            continue
        attrs = span["attributes"]
        attempts[attrs["messaging.omniq.task.name"], attrs["messaging.omniq.task.attempt"]] = span
    assert set(attempts) == {("shop.ok", 1), ("shop.flaky", 1), ("shop.flaky", 2), ("shop.boom", 1)}
    for (name, attempt), span in attempts.items():
        send = sent[refs[name].id].context
        assert span["name"] == "process default"
        assert span["kind"] == str(SpanKind.CONSUMER)
        # The attempt is a child of the enqueue, in the same trace, and linked to it.
        assert span["context"]["trace_id"] == _hex(trace_id, 32)
        assert span["parent_id"] == _hex(send.span_id, 16)
        assert [link["context"]["span_id"] for link in span["links"]] == [_hex(send.span_id, 16)]
        attrs = dict(span["attributes"])
        if pool == "process":  # the child's start-up, before the span's start
            assert attrs.pop("messaging.omniq.task.start_delay") > 0
        assert attrs == {
            "messaging.system": "omniq",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": "default",
            "messaging.message.id": refs[name].id,
            "messaging.omniq.task.name": name,
            "messaging.omniq.task.attempt": attempt,
            "messaging.omniq.task.outcome": span["attributes"]["messaging.omniq.task.outcome"],
        }

    def events(span: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {e["name"]: e["attributes"] for e in span["events"]}

    ok = attempts["shop.ok", 1]
    assert ok["status"]["status_code"] == StatusCode.UNSET.name
    assert ok["attributes"]["messaging.omniq.task.outcome"] == "succeeded"
    assert ok["events"] == []

    first, second = attempts["shop.flaky", 1], attempts["shop.flaky", 2]
    assert first["status"] == {
        "status_code": "ERROR",
        "description": "ConnectionError: first attempt fails",
    }
    assert first["attributes"]["messaging.omniq.task.outcome"] == "retried"
    assert events(first)["exception"]["exception.type"] == "ConnectionError"
    assert events(first)["retry"] == {"messaging.omniq.task.next_attempt": 2}
    assert second["status"]["status_code"] == "UNSET"
    assert second["attributes"]["messaging.omniq.task.outcome"] == "succeeded"

    boom = attempts["shop.boom", 1]
    assert boom["status"]["status_code"] == "ERROR"
    assert boom["attributes"]["messaging.omniq.task.outcome"] == "failed"
    assert events(boom)["exception"]["exception.message"] == "boom 3"
    assert "retry" not in events(boom)

    # The task's own span is in the attempt's trace, under it, in every pool: a process-pool
    # child is sent the attempt's span context with the call (the child's SDK records it).
    assert inside, "the task body's own span"
    assert inside["parent_id"] == ok["context"]["span_id"]
    assert inside["context"]["trace_id"] == _hex(trace_id, 32)
    # The attempt's span starts with its body: after the module it runs was imported
    # (a process-pool child's start-up), not when the worker handed the call over.
    assert _ns(ok["start_time"]) >= inside["attributes"]["imported_at"] // 1000 * 1000
    assert _ns(ok["start_time"]) <= _ns(inside["start_time"])


def _ns(iso: str) -> int:
    """A time of the SDK's JSON (ISO 8601, UTC, to the microsecond) in ns."""
    at = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (int(at.timestamp()) * 1_000_000 + at.microsecond) * 1000
