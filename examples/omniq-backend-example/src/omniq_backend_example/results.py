"""Result storage: a dict by task id (a re-run overwrites)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from omniq.interfaces import BaseResultStorage
from omniq.models import TaskResult, now

from .namespace import NamespaceStore

__all__ = ["ExampleResultStorage"]


class ExampleResultStorage(NamespaceStore, BaseResultStorage):
    local_only: ClassVar[bool] = True

    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        self.ns.results.update((r.task_id, r) for r in results)

    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        at, found = now(), {}
        for task_id in task_ids:
            result = self.ns.results.get(task_id)
            # expired results are invisible even before cleanup deletes them
            if result is not None and (result.expires_at is None or result.expires_at > at):
                found[task_id] = result
        return found

    async def _delete(self, task_id: str) -> bool:
        return self.ns.results.pop(task_id, None) is not None

    async def _cleanup(self) -> int:
        at = now()
        expired = [
            tid
            for tid, r in self.ns.results.items()
            if r.expires_at is not None and r.expires_at <= at
        ]
        for tid in expired:
            del self.ns.results[tid]
        return len(expired)
