"""OmniQ plugin of ``omniq-opentelemetry``: traces every enqueue and attempt of every app.

Discovery imports this module in every OmniQ process, so it imports only omniq; the
OpenTelemetry API loads when an app is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq import hookimpl

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ
    from omniq.middleware import Middleware


@hookimpl
def omniq_middleware(app: AsyncOmniQ) -> Middleware:
    from .middleware import TracingMiddleware

    return TracingMiddleware()
