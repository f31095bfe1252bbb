"""Live workers in a KV bucket ``<prefix>_workers``, one key per worker id.

Each value is the :class:`~omniq.models.WorkerInfo` with ``expires_at`` by this host's
clock (``BaseStore.now``, as leases here); a listing skips and removes the expired ones.
The bucket's own ``max_age`` is a backstop that drops what no listing ever removes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
from nats.js.kv import KeyValue

from omniq.models import WorkerInfo, encoder, worker_decoder

from .names import token

__all__ = ["WorkerBucket"]

#: Entries older than this go even if nobody lists the workers (a worker re-registers
#: every few seconds, so a live one is never this old).
BACKSTOP_AGE = 86400.0


class WorkerBucket:
    """The worker registry of the NATS task queue (mixed into :class:`NatsTaskQueue`)."""

    prefix: str
    js: Any
    _workers_kv: tuple[Any, KeyValue] | None = None

    if TYPE_CHECKING:  # provided by NatsStore

        def scan_bucket(self, bucket: str) -> AsyncIterator[tuple[str, bytes, int]]: ...

        async def remove_key(self, bucket: str, key: str, revision: int | None = None) -> bool: ...

        async def ensure_bucket(self, bucket: str, ttl: float | None = None) -> KeyValue: ...

        async def now(self) -> float: ...

    @property
    def _workers_name(self) -> str:
        return f"{self.prefix}_workers"

    async def _workers(self) -> KeyValue:
        """The bucket, made on first use (not at open: no cost for a store that never
        registers a worker); remade after a reconnect gave a new JetStream context."""
        if self._workers_kv is None or self._workers_kv[0] is not self.js:
            self._workers_kv = (self.js, await self.ensure_bucket(self._workers_name, BACKSTOP_AGE))
        return self._workers_kv[1]

    async def _register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        stored = msgspec.structs.replace(info, expires_at=await self.now() + ttl)
        await (await self._workers()).put(token(info.id), encoder.encode(stored))
        return stored

    async def _list_workers(self) -> list[WorkerInfo]:
        await self._workers()
        at = await self.now()
        live: list[WorkerInfo] = []
        async for key, data, rev in self.scan_bucket(self._workers_name):
            info = worker_decoder.decode(data)
            if info.expires_at > at:
                live.append(info)
            else:  # unless it registered again meanwhile
                await self.remove_key(self._workers_name, key, rev)
        return sorted(live, key=lambda w: w.id)

    async def _unregister_worker(self, worker_id: str) -> bool:
        await self._workers()
        return await self.remove_key(self._workers_name, token(worker_id))
