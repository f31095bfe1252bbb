"""OmniQ backend on NATS JetStream: task queue, result storage and event storage.

Kept free of imports: the plugin entry point (``omniq_backend_nats.plugin``) loads this
package during discovery, which must not import the NATS client.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NatsUnavailableError"]


def __getattr__(name: str) -> Any:
    if name == "NatsUnavailableError":
        from .connection import NatsUnavailableError

        return NatsUnavailableError
    raise AttributeError(name)
