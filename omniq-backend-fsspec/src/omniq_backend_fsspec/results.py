"""Result storage: one file per task id, replaced atomically (a re-run overwrites)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from omniq.interfaces import BaseResultStorage
from omniq.models import TaskResult, encoder
from omniq.records import result_or_stand_in

from .location import Location
from .names import encode
from .store import FilesStore

__all__ = ["FsspecResultStorage", "LocalResultStorage"]


def _path(task_id: str) -> str:
    return f"results/{encode('task id', task_id)}"


class FsspecResultStorage(FilesStore, BaseResultStorage):
    """Results under ``<base_dir>/results/`` on any fsspec file system."""

    local_only: ClassVar[bool] = False

    @classmethod
    def _class_for(cls, location: Location) -> Any:
        return LocalResultStorage if location.local else FsspecResultStorage

    def _read(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        paths = {_path(tid): tid for tid in task_ids}
        found = self.files.read_many(list(paths))
        now = time.time()
        results = (
            result_or_stand_in(paths.get(path, path), data, "the results directory")
            for path, data in found.items()
        )
        return {r.task_id: r for r in results if r.expires_at is None or r.expires_at > now}

    def _write(self, results: Sequence[TaskResult]) -> None:
        self.files.write_many({_path(r.task_id): encoder.encode(r) for r in results})

    def _sweep(self) -> int:
        now = time.time()
        deleted = 0
        for name in self.files.list("results"):
            data = self.files.read(f"results/{name}")
            if data is None:
                continue
            expires_at = result_or_stand_in(name, data, "the results directory").expires_at
            if (
                expires_at is not None
                and expires_at <= now
                and self.files.delete(f"results/{name}")
            ):
                deleted += 1
        return deleted

    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        await self._run(self._write, list(results))

    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        return await self._run(self._read, list(task_ids))

    async def _delete(self, task_id: str) -> bool:
        return await self._run(self.files.delete, _path(task_id))

    async def _cleanup(self) -> int:
        return await self._run(self._sweep)


class LocalResultStorage(FsspecResultStorage):
    """``file://`` and ``memory://`` results: data never leaves this machine."""

    local_only: ClassVar[bool] = True
