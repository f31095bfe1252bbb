"""Result storage: a dict by task id (a re-run overwrites)."""

from __future__ import annotations

from typing import ClassVar

from omniq.interfaces import BaseResultStorage
from omniq.models import TaskResult, now

from .namespace import NamespaceStore

__all__ = ["ExampleResultStorage"]


class ExampleResultStorage(NamespaceStore, BaseResultStorage):
    local_only: ClassVar[bool] = True

    async def set(self, result: TaskResult) -> None:
        self.ns.results[result.task_id] = result

    async def get(self, task_id: str) -> TaskResult | None:
        result = self.ns.results.get(task_id)
        if result is None or (result.expires_at is not None and result.expires_at <= now()):
            return None  # expired results are invisible even before cleanup deletes them
        return result

    async def delete(self, task_id: str) -> bool:
        return self.ns.results.pop(task_id, None) is not None

    async def cleanup(self) -> int:
        at = now()
        expired = [tid for tid, r in self.ns.results.items() if r.expires_at is not None and r.expires_at <= at]
        for tid in expired:
            del self.ns.results[tid]
        return len(expired)
