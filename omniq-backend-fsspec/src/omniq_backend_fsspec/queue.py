"""The task queue on local files (shared by processes), memory (one process) or S3
(shared by any processes, through conditional writes).

Other object stores are refused: claiming safely needs an atomic lock or a
compare-and-set, and this backend implements the latter for S3 only (see
docs/backends/fsspec.md).
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

from omniq.config import mask_url
from omniq.errors import ConfigError
from omniq.interfaces import (
    BaseEventStorage,
    BaseResultStorage,
    BaseTaskQueue,
    Batch,
    Capability,
    Completion,
    LeaseRef,
    gather_batches,
)
from omniq.models import ErrorInfo, Schedule, Task, TaskEvent, TaskResult, TaskState, WorkerInfo

from . import workers
from .engine import QueueEngine
from .location import Location
from .store import FilesStore

__all__ = ["FileTaskQueue", "FsspecTaskQueue", "MemoryTaskQueue", "S3TaskQueue"]

T = TypeVar("T")


class FsspecTaskQueue(FilesStore, BaseTaskQueue):
    """Resolves to :class:`FileTaskQueue` or :class:`MemoryTaskQueue` by URL protocol."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.DELAYED, Capability.PRIORITY, Capability.SCHEDULES, Capability.DEPENDENCIES}
    )
    local_only: ClassVar[bool] = True

    def __init__(self, location: Location) -> None:
        super().__init__(location)
        self._engine: QueueEngine | None = None

    @classmethod
    def _class_for(cls, location: Location) -> Any:
        target = {"file": FileTaskQueue, "memory": MemoryTaskQueue, "s3": S3TaskQueue}.get(
            location.protocol
        )
        if target is None:
            raise ConfigError(
                f"fsspec backend: no task queue on {location.protocol}:// "
                f"({mask_url(location.url)!r}): claiming a task safely needs a lock or a "
                f"compare-and-set write, which this backend implements for file://, memory:// "
                f"and s3:// only; anything else would risk delivering a task twice. Keep "
                f"results and events on {location.protocol}:// and put the task queue on "
                f"s3://, redis://, postgresql://, nats:// or sqlite:///, or on file:// for "
                f"workers on one machine"
            )
        return target

    async def open(self) -> None:
        await super().open()
        if self._engine is None:
            self._engine = QueueEngine(self.files)

    async def close(self) -> None:
        self._engine = None
        await super().close()

    @property
    def _live(self) -> QueueEngine:
        """The engine of the open store (its methods are what :meth:`_call` runs)."""
        if self._engine is None:
            raise self._not_open()
        return self._engine

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        """``method``, one of :attr:`_live`'s, run by the engine (under its lock)."""
        return await self._run(functools.partial(self._live.run, method, *args))

    async def _enqueue(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> AsyncIterator[builtins.list[Task]]:
        tasks, _ = gather_batches(batches)  # (no sibling stores: never any events here)
        if tasks:
            yield await self._call(self._live.enqueue_many, builtins.list(tasks))

    async def _reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int
    ) -> builtins.list[Task]:
        return await self._call(self._live.reserve, list(queues), worker_id, lease, limit)

    async def _heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> builtins.list[str]:
        return await self._call(self._live.heartbeat, list(leases), lease)

    async def _finish(
        self,
        items: Sequence[Completion],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage | None,
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[bool]:
        return await self._call(self._live.complete_many, list(items))

    async def _retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        return await self._call(self._live.retry, task_id, token, eta, error)

    async def _release(self, task_id: str, token: str) -> bool:
        return await self._call(self._live.release, task_id, token)

    async def _dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        return await self._call(self._live.dead_letter, task_id, token, error)

    async def _release_expired_leases(self) -> builtins.list[Task]:
        return await self._call(self._live.release_expired_leases)

    async def _cancel(self, task_id: str) -> bool:
        return await self._call(self._live.cancel, task_id)

    async def _dependents(self, task_id: str) -> builtins.list[Task]:
        return await self._call(self._live.dependents, task_id)

    async def _get(self, task_id: str) -> Task | None:
        return await self._call(self._live.get, task_id)

    async def _list(
        self, queue: str | None, states: Iterable[TaskState] | None, limit: int
    ) -> builtins.list[Task]:
        return await self._call(
            self._live.list, queue, None if states is None else builtins.list(states), limit
        )

    async def _stats(self) -> dict[str, dict[TaskState, int]]:
        return await self._call(self._live.stats)

    async def _purge(self, queue: str | None, states: Iterable[TaskState] | None) -> int:
        return await self._call(
            self._live.purge, queue, None if states is None else builtins.list(states)
        )

    async def _cleanup(self) -> builtins.list[Task]:
        return await self._call(self._live.cleanup)

    async def _add_schedule(self, schedule: Schedule) -> Schedule:
        return await self._call(self._live.add_schedule, schedule)

    async def _get_schedule(self, schedule_id: str) -> Schedule | None:
        return await self._call(self._live.get_schedule, schedule_id)

    async def _list_schedules(self) -> builtins.list[Schedule]:
        return await self._call(self._live.list_schedules)

    async def _delete_schedule(self, schedule_id: str) -> bool:
        return await self._call(self._live.delete_schedule, schedule_id)

    async def _set_schedule_paused(
        self, schedule_id: str, paused: bool, next_run: float | None
    ) -> bool:
        return await self._call(self._live.set_schedule_paused, schedule_id, paused, next_run)

    async def _claim_due_schedules(
        self, at: float, limit: int
    ) -> builtins.list[tuple[Schedule, builtins.list[float]]]:
        return await self._call(self._live.claim_due_schedules, at, limit)

    # -- live workers (omniq_backend_fsspec.workers) -----------------------------------

    async def _register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        return await self._run(workers.register_worker, self.files, info, ttl)

    async def _list_workers(self) -> builtins.list[WorkerInfo]:
        return await self._run(workers.list_workers, self.files)

    async def _unregister_worker(self, worker_id: str) -> bool:
        return await self._run(workers.unregister_worker, self.files, worker_id)


class FileTaskQueue(FsspecTaskQueue):
    """``file:///dir``: worker processes on this machine share the directory (``flock``)."""

    capabilities: ClassVar[frozenset[Capability]] = FsspecTaskQueue.capabilities | {
        Capability.CROSS_PROCESS
    }


class MemoryTaskQueue(FsspecTaskQueue):
    """``memory://name``: shared by the stores of this process, lost when it exits."""


class S3TaskQueue(FsspecTaskQueue):
    """``s3://bucket/prefix``: any number of processes and machines, each change a
    conditional PUT (``If-Match``/``If-None-Match``). No ``depends_on``: readying or
    cancelling dependents would change several objects at once."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.DELAYED, Capability.PRIORITY, Capability.SCHEDULES, Capability.CROSS_PROCESS}
    )
    local_only: ClassVar[bool] = False
