"""Event storage: a list in append order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from omniq.interfaces import BaseEventStorage
from omniq.models import TaskEvent

from .namespace import NamespaceStore

__all__ = ["ExampleEventStorage"]


class ExampleEventStorage(NamespaceStore, BaseEventStorage):
    local_only: ClassVar[bool] = True

    async def _append_many(self, events: Sequence[TaskEvent]) -> None:
        self.ns.events.extend(events)

    async def _query(
        self,
        *,
        task_id: str | None,
        queue: str | None,
        types: Iterable[str] | None,
        since: float | None,
        until: float | None,
        limit: int | None,
        order: str,
    ) -> list[TaskEvent]:
        wanted = None if types is None else set(types)
        found = [
            e
            for e in self.ns.events
            if (task_id is None or e.task_id == task_id)
            and (queue is None or e.queue == queue)
            and (wanted is None or e.type.value in wanted)
            and (since is None or e.timestamp >= since)
            and (until is None or e.timestamp < until)
        ]
        found.sort(key=lambda e: e.timestamp, reverse=order == "desc")
        return found if limit is None else found[:limit]

    async def _cleanup(self, older_than: float) -> int:
        before = len(self.ns.events)
        self.ns.events[:] = [e for e in self.ns.events if e.timestamp >= older_than]
        return before - len(self.ns.events)
