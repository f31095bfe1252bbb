"""Results in a JetStream KV bucket ``<prefix>_results``, one key per task id.

A re-run overwrites the key (history 1). ``wait()`` subscribes to the key's subject
(core NATS, no consumer), so it wakes on the write itself. Each result's own
``expires_at`` is checked on read and swept by ``cleanup()``; the bucket-wide ``max_age``
option (default: none) adds the engine's own TTL as a safety net, which is why NATIVE_TTL
is not declared: a result with ``expires_at=None`` must stay until deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

import nats.errors
import nats.js.errors
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from omniq.interfaces import BaseResultStorage, Capability
from omniq.models import TaskResult, encoder
from omniq.options import Option
from omniq.records import result_or_stand_in

from .connection import OPTIONS, NatsStore
from .names import token

__all__ = ["NatsResultStorage"]

#: How many puts one wait covers.
_WINDOW = 512


class NatsResultStorage(NatsStore, BaseResultStorage):
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CROSS_PROCESS, Capability.RESULT_NOTIFY}
    )
    option_schema = OPTIONS.extend(
        Option(
            "max_age",
            "duration",
            None,
            "Bucket-wide TTL of the results bucket, "
            "a safety net on top of each result's `expires_at`.",
            minimum=0,
            above=True,
            optional=True,
        )
    )

    _kv: KeyValue

    async def _setup(self) -> None:
        self._kv = await self.ensure_bucket(self.bucket, ttl=self.settings["max_age"])

    def _live(self, data: bytes | None, at: float, task_id: str = "") -> TaskResult | None:
        if not data:
            return None
        result = result_or_stand_in(task_id, data, "the results bucket")
        if result.expires_at is not None and result.expires_at <= at:
            return None
        return result

    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        """Every put in flight at once (in windows), one wait per window."""
        for start in range(0, len(results), _WINDOW):
            await self.inbox.write(self.bucket, self.entries(results[start : start + _WINDOW]))

    def entries(self, results: Sequence[TaskResult]) -> list[tuple[str, bytes, int | None]]:
        """The KV puts that store ``results`` (for :meth:`.batch.Inbox.write`)."""
        return [(token(r.task_id), encoder.encode(r), None) for r in results]

    async def _get(self, task_id: str) -> TaskResult | None:
        try:
            entry = await self._kv.get(token(task_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        return self._live(entry.value, await self.now(), task_id)

    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        found = await asyncio.gather(*(self._get(t) for t in task_ids))
        return {tid: r for tid, r in zip(task_ids, found, strict=True) if r is not None}

    @property
    def bucket(self) -> str:
        return f"{self.prefix}_results"

    async def _delete(self, task_id: str) -> bool:
        return await self.remove_key(self.bucket, token(task_id))

    async def _cleanup(self) -> int:
        at = await self.now()
        expired = [
            (key, rev)
            async for key, data, rev in self.scan_bucket(self.bucket)
            if self._live(data, at) is None
        ]
        # By revision: a re-run's result written since the scan stays.
        done = await asyncio.gather(*(self.remove_key(self.bucket, k, r) for k, r in expired))
        return sum(done)

    async def _wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Subscribe (core NATS) to the key's subject, then read it: a put after the
        read arrives on the subscription, which the server registered before it
        answered the read (same connection, in order). No consumer is created: a KV
        watch costs a consumer create and delete per wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = token(task_id)
        sub = await self.nc.subscribe(f"$KV.{self.bucket}.{key}")
        try:
            (entry,) = await self.inbox.get(self.bucket, [key])
            if entry is not None:
                result = self._live(entry[0], await self.now(), task_id)
                if result is not None:
                    return result
            while (remaining := deadline - loop.time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=remaining)
                except nats.errors.TimeoutError:
                    return None
                if msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE):
                    continue
                result = self._live(msg.data, await self.now(), task_id)
                if result is not None:
                    return result
            return None
        finally:
            await sub.unsubscribe()
