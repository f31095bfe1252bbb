"""A span for each enqueue and one for each attempt, joined by the task's headers.

Enqueue (``before_enqueue``, in the enqueuing process): a ``send {queue}`` span of kind
PRODUCER, a child of whatever span is current there (the web request that enqueued),
whose context the global propagator (W3C ``traceparent``, ``tracestate`` and
``baggage`` unless the application chose others) writes into ``task.headers``; the task
record carries them to the worker on every backend. The span marks the moment the task
is handed to the store and ends there: the middleware has no point after the store's
write, so the write's own time is not in it.

Each attempt (from its body's start, ``omniq.context.at_body_start`` registered in
``before_run``, to ``after_success`` / ``on_failure``, in the worker; a success's or a
failure's span is ended, at the time the attempt ended, when the store has answered the
write of its outcome, ``after_completion`` / ``after_failure_completion``, so a refused
one reads ``interrupted``): a ``process {queue}`` span of kind CONSUMER whose parent is
the context read back from the headers, and a link to that context too (the conventions
require the link and allow the parent), so the enqueue and every attempt of the task
read as one trace. Starting with the body, it leaves a
process-pool child's start-up out (``messaging.omniq.task.start_delay`` tells it). It
is the current span while the attempt runs, so spans the task's own code starts are its
children in every pool: a process-pool child is sent its context, which
:func:`continue_trace` makes current there around the body. A failed attempt records its
exception and an error status; one the task survives also gets a ``retry`` event, and the
next attempt is a new span under the same parent; one that failed before its body
started has a span from ``before_run``.

Without an SDK (the API's own provider, global or given) no span can record, and the
API's tracer would hand back the current span instead of a new one: the middleware then
only carries the context there is (an enqueue inside a traced request of another
process, baggage), and costs next to nothing when there is none.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Token
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import (
    Link,
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)

from omniq.context import Enter, at_body_start
from omniq.middleware import Middleware

from .conventions import (
    ATTEMPT,
    DESTINATION,
    MESSAGE_ID,
    NEXT_ATTEMPT,
    OPERATION_NAME,
    OPERATION_TYPE,
    OUTCOME,
    RETRY_EVENT,
    START_DELAY,
    SYSTEM,
    SYSTEM_NAME,
    TASK_NAME,
)

if TYPE_CHECKING:
    from omniq.models import Task

__all__ = ["TracingMiddleware", "continue_trace"]

#: The API's providers, whose tracers never record (the proxy is what the global one is
#: until an SDK is set: then the lookup returns the SDK's).
_NOT_RECORDING = (ProxyTracerProvider, NoOpTracerProvider)

#: What ``trace.get_tracer_provider()`` reads to tell that no SDK is set, read here
#: directly (:meth:`TracingMiddleware._records`), private as both are: the API's global,
#: None until a provider is set (once), and while that is unset whether the environment
#: names one for it to load (``os.environ``'s own dict, the key encoded as it encodes
#: keys). Through the function each enqueue paid four Python frames and a KeyError raised
#: and caught (``os.environ``'s ``__contains__``): ``before_enqueue`` ~11,600 -> ~3,300
#: instructions (callgrind). The public route costs more, not less: a tracer got once
#: (the API's ProxyTracer, which follows a provider set later) and a span started on each
#: enqueue, ~14,800. An API or platform without these reads through the function; the
#: tests that set a provider after the middleware was made catch an API whose global moved.
try:
    _ENV_DATA: dict[bytes, bytes] = os.environ._data  # type: ignore[attr-defined]
    _ENV_KEY: object = os.environ.encodekey(OTEL_PYTHON_TRACER_PROVIDER)  # (bytes on POSIX)
    _READS_GLOBAL = hasattr(trace, "_TRACER_PROVIDER")
except (AttributeError, TypeError):  # pragma: no cover - another platform's environ
    _ENV_DATA, _ENV_KEY, _READS_GLOBAL = {}, b"", False


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omniq-opentelemetry")
    except PackageNotFoundError:
        return ""


class TracingMiddleware(Middleware):
    """Traces enqueues and attempts (see the module doc). ``tracer_provider`` defaults to
    the global one, looked up when a span starts, so an application may set it after the
    app is created."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("omniq_opentelemetry", _version(), tracer_provider)
        self._provider = tracer_provider
        # The span and the context token of each running attempt, by the identity of its
        # Task object: the worker hands the same object to before_run and to the end.
        self._running: dict[int, _Attempt] = {}
        # The span of each attempt that returned, and when (ns), until the store answers
        # its completion (after_completion) and tells its outcome.
        self._returned: dict[int, tuple[trace.Span, int]] = {}
        # The same for each attempt that failed, until the store answers its retry or
        # dead letter (after_failure_completion).
        self._failed: dict[int, tuple[trace.Span, int]] = {}

    @staticmethod
    def _attributes(task: Task, operation: str) -> dict[str, Any]:
        return {
            SYSTEM: SYSTEM_NAME,
            OPERATION_TYPE: operation,
            OPERATION_NAME: operation,
            DESTINATION: task.queue,
            MESSAGE_ID: task.id,
            TASK_NAME: task.name,
        }

    def _records(self) -> bool:
        """Whether a span started now can record: not under the API's own provider (no
        SDK set up yet; the global one is looked up each time, as the tracer does)."""
        provider = self._provider
        if provider is None:
            if _READS_GLOBAL:  # (get_tracer_provider's checks, written out: see _ENV_DATA)
                provider = trace._TRACER_PROVIDER
                if provider is None:
                    if _ENV_KEY not in _ENV_DATA:
                        return False  # (the API's proxy, what the function returns)
                    provider = trace.get_tracer_provider()  # (it loads the named one)
            else:
                provider = trace.get_tracer_provider()
        return not isinstance(provider, _NOT_RECORDING)

    async def before_enqueue(self, task: Task) -> None:
        if not self._records():
            # (the span would be the current one: only the current context travels, and
            # an empty one writes nothing: ~4.5 -> ~0.4 µs a task)
            if otel_context.get_current():
                propagate.inject(task.headers)
            return
        span = self.tracer.start_span(
            f"send {task.queue}", kind=SpanKind.PRODUCER, attributes=self._attributes(task, "send")
        )
        try:
            propagate.inject(task.headers, context=trace.set_span_in_context(span))
        finally:
            span.end()

    async def before_run(self, task: Task) -> None:
        records = self._records()
        if not records and not task.headers:
            return  # (no context to carry, no span to start: the attempt runs as it is)
        parent = propagate.extract(task.headers)  # an empty context: a trace of its own
        sender = trace.get_current_span(parent)
        if not records:  # (the API's tracer would hand back the sender's span itself)
            self._attach(task, sender)
            at_body_start(lambda in_child: _carry(parent) if in_child else None)
            return
        attempt = _Attempt(self, task, parent, sender.get_span_context())
        self._running[id(task)] = attempt
        at_body_start(attempt.body_starts)

    def _attach(self, task: Task, span: trace.Span) -> None:
        """Make ``span`` current while the attempt runs (its code's spans are children)."""
        attempt = _Attempt(self, task, None, None)
        attempt.span = span
        attempt.token = otel_context.attach(trace.set_span_in_context(span))
        self._running[id(task)] = attempt

    async def after_success(self, task: Task, value: Any) -> None:
        attempt = self._running.pop(id(task), None)
        if attempt is not None:
            span = attempt.started()
            attempt.detach()  # (in the task's context, where it was attached)
            if span.is_recording():  # (else the sender's, or no span: nothing to end)
                self._returned[id(task)] = (span, time.time_ns())

    def after_completion(self, task: Task, *, accepted: bool) -> None:
        entry = self._returned.pop(id(task), None)
        if entry is None:
            return
        span, returned = entry
        if accepted:
            span.set_attribute(OUTCOME, "succeeded")
        else:  # the lease was lost while it ran: the task runs again
            span.set_attribute(OUTCOME, "interrupted")
            span.set_status(
                Status(StatusCode.ERROR, "interrupted: its completion was refused, lease lost")
            )
        span.end(end_time=returned)  # (the attempt's time, not the write's)

    async def on_failure(self, task: Task, exc: BaseException, *, will_retry: bool) -> None:
        attempt = self._running.pop(id(task), None)
        if attempt is None:  # a middleware before this one refused the attempt
            return
        span = attempt.started()  # (one that failed before its body: from before_run)
        if isinstance(exc, asyncio.CancelledError):  # (nothing is written for it)
            span.set_status(Status(StatusCode.ERROR, "interrupted: lease lost or worker stopping"))
            span.set_attribute(OUTCOME, "interrupted")
            if will_retry:
                span.add_event(RETRY_EVENT, {NEXT_ATTEMPT: task.attempts + 1})
            span.end()
            attempt.detach()
            return
        attempt.detach()  # (in the task's context, where it was attached)
        if span.is_recording():  # (else the sender's, or no span: nothing to end)
            span.record_exception(exc)
            self._failed[id(task)] = (span, time.time_ns())

    def after_failure_completion(
        self, task: Task, exc: BaseException, *, will_retry: bool, accepted: bool
    ) -> None:
        entry = self._failed.pop(id(task), None)
        if entry is None:
            return
        span, failed = entry
        if accepted:
            span.set_attribute(OUTCOME, "retried" if will_retry else "failed")
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            if will_retry:
                span.add_event(RETRY_EVENT, {NEXT_ATTEMPT: task.attempts + 1}, timestamp=failed)
        else:  # the lease was lost while it ran: its failure decides nothing
            span.set_attribute(OUTCOME, "interrupted")
            span.set_status(
                Status(StatusCode.ERROR, "interrupted: its failure was refused, lease lost")
            )
        span.end(end_time=failed)  # (the attempt's time, not the write's)


class _Attempt:
    """One attempt's ``process`` span, started when its body starts (so a process-pool
    child's start-up is not in it), and the token of its context in the worker."""

    __slots__ = ("handed", "links", "middleware", "parent", "span", "task", "token")

    def __init__(
        self,
        middleware: TracingMiddleware,
        task: Task,
        parent: otel_context.Context | None,
        sent: trace.SpanContext | None,
    ) -> None:
        self.middleware, self.task, self.parent = middleware, task, parent
        self.links = [Link(sent)] if sent is not None and sent.is_valid else None
        self.handed = time.time_ns()  # (when before_run handed the attempt on)
        self.span: trace.Span | None = None
        self.token: Token[otel_context.Context] | None = None

    def body_starts(self, in_child: bool) -> Enter | None:
        """The body starts (``at_body_start``): start the span, current from here in the
        worker, and hand a process-pool child its context."""
        start = time.time_ns()
        span = self.start(start)
        if not in_child:
            return None
        span.set_attribute(START_DELAY, (start - self.handed) / 1e9)
        return _carry(trace.set_span_in_context(span))

    def start(self, at: int) -> trace.Span:
        task = self.task
        attributes = TracingMiddleware._attributes(task, "process")
        attributes[ATTEMPT] = task.attempts
        self.span = span = self.middleware.tracer.start_span(
            f"process {task.queue}",
            context=self.parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=self.links,
            start_time=at,
        )
        self.token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def started(self) -> trace.Span:
        """The span; for an attempt that ended before its body started, one from when
        before_run handed it on."""
        return self.span if self.span is not None else self.start(self.handed)

    def detach(self) -> None:
        if self.token is not None:
            otel_context.detach(self.token)
            self.token = None


def _carry(context: otel_context.Context) -> Enter:
    """What a process-pool child enters: ``context`` as the propagator writes it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return partial(continue_trace, carrier)


@contextmanager
def continue_trace(carrier: dict[str, str]) -> Iterator[None]:
    """In a process-pool child: the context the worker sent current around the body, so
    the body's spans are children of its attempt's span (with the child's own SDK)."""
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)
