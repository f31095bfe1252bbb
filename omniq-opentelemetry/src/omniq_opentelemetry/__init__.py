"""OpenTelemetry tracing for OmniQ.

Installed, the plugin adds :class:`TracingMiddleware` to every app: a ``send`` span for
each enqueue, whose W3C trace context travels in the task's headers, and a ``process``
span for each attempt in the worker, a child of it. Spans go wherever the application's
OpenTelemetry SDK sends them; without an SDK the API's no-op tracer costs next to
nothing. See ``docs/tracing.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .middleware import TracingMiddleware

__all__ = ["TracingMiddleware"]


def __getattr__(name: str) -> Any:
    # Every OmniQ process imports this package to discover the plugin (``.plugin``), so
    # the OpenTelemetry API loads only when the middleware is used.
    if name == "TracingMiddleware":
        from .middleware import TracingMiddleware

        return TracingMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
