"""SIGTERM/SIGINT for a worker that runs on a blocking app's portal.

The worker installs its own handlers on a loop the main thread runs. The portal may run
the worker on its own thread instead (it does once a blocking call left the loop idling
there), where asyncio cannot install them: so ``OmniQ.run_worker()`` and ``omniq worker``
(for a blocking app) install them in the main thread, and each hands the stop to the
loop, where the worker's ``request_stop`` runs as its own handlers would.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import AsyncOmniQ
    from ..sync import Portal
    from .runtime import Worker

__all__ = ["StopOnSignal"]


class StopOnSignal:
    """SIGTERM/SIGINT handlers in the main thread (none elsewhere), for the worker run on
    ``portal``'s loop; a signal before the worker exists stops it as it starts."""

    def __init__(self, portal: Portal) -> None:
        self._portal = portal
        self._worker: Worker | None = None
        self._early = 0
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def installed(self) -> bool:
        """Whether the handlers are in place (else the worker installs its own, if it can)."""
        return bool(self._previous)

    def made(self, worker: Worker) -> None:
        """The worker exists (called on the loop)."""
        self._worker = worker
        for _ in range(self._early):
            worker.request_stop("signal", False)

    async def run(self, app: AsyncOmniQ, options: dict[str, Any]) -> str:
        """Make ``app``'s worker on the loop and run it until it stops."""
        worker = app.worker(**options)
        self.made(worker)
        return await worker.run(install_signals=not self.installed)

    def _on_loop(self) -> None:
        if self._worker is None:
            self._early += 1
        else:
            self._worker.request_stop("signal", False)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._portal.call_soon(self._on_loop)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
