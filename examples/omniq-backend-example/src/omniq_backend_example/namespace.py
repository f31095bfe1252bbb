"""The state an ``example://NAME`` URL names, shared by every store built from it.

Stores built from the same URL in one process see the same data, as the conformance
suite expects (it builds several instances from one ref to play several workers).

All stores run on one asyncio event loop. A method that reads and then writes without an
``await`` in between cannot be interleaved with another coroutine, which is what makes
``reserve`` atomic here. A backend on a real server gets that from the server instead
(a transaction, a Lua script, a compare-and-set).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omniq.config import mask_url
from omniq.errors import ConfigError, QueueError
from omniq.models import Schedule, Task, TaskEvent, TaskResult, WorkerInfo
from omniq.options import OptionSchema

__all__ = ["Namespace", "NamespaceStore"]


@dataclass
class Namespace:
    tasks: dict[str, Task] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # task id -> enqueue sequence (FIFO)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    results: dict[str, TaskResult] = field(default_factory=dict)
    events: list[TaskEvent] = field(default_factory=list)
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    new_work: asyncio.Event = field(default_factory=asyncio.Event)

    def wake_workers(self) -> None:
        """Wake every ``wait_for_work`` waiting now; later waiters wait on a fresh event."""
        self.new_work.set()
        self.new_work = asyncio.Event()


_NAMESPACES: dict[str, Namespace] = {}


#: The options this backend takes: none. A backend with options lists them here, each
#: an ``omniq.options.Option`` (name, type, bounds, default, doc), and gets their parsing,
#: error messages and docs table from the core.
OPTIONS = OptionSchema("example")


def namespace_name(url: str, options: dict[str, Any], store: Any = None) -> str:
    """``example://NAME`` -> ``NAME`` (``"default"`` for ``example://``)."""
    scheme, sep, _ = url.partition("://")
    if scheme != "example" or not sep:
        raise ConfigError(f"example backend: expected a URL example://NAME, got {mask_url(url)!r}")
    rest = OPTIONS.parse(url, options, store).url.split("://", 1)[1]
    return rest.strip("/") or "default"


class NamespaceStore:
    """What the three stores share: construction from a URL and open/close."""

    option_schema: ClassVar[OptionSchema] = OPTIONS

    def __init__(self, name: str) -> None:
        self.name = name
        self._ns: Namespace | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Any:
        return cls(namespace_name(url, options, cls))

    async def open(self) -> None:
        self._ns = _NAMESPACES.setdefault(self.name, Namespace())

    async def close(self) -> None:
        self._ns = None

    @property
    def ns(self) -> Namespace:
        if self._ns is None:
            raise QueueError(f"{type(self).__name__}('example://{self.name}') is not open")
        return self._ns
