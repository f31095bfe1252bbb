"""Results as plain string keys with native TTL (SET ... PXAT) and pub/sub wake-ups."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Sequence
from typing import Any, cast

from redis.exceptions import ResponseError

from omniq.interfaces import BaseResultStorage, Capability
from omniq.models import TaskResult, encoder
from omniq.records import result_or_stand_in

from .connection import resp
from .errors import ForeignKeyError
from .notify import Wake
from .store import RedisStore

_MARK = b"OQR1"  # first bytes of every value we write: a foreign string is never taken for ours


def set_args(results: Sequence[TaskResult]) -> list[Any]:
    """Per result: task id, marked value, expiry as unix ms ('' for none): the arguments of
    results_set.lua, and of finish.lua's results."""
    args: list[Any] = []
    for r in results:
        expiry = "" if r.expires_at is None else str(max(math.ceil(r.expires_at * 1000), 1))
        args += [r.task_id, _MARK + encoder.encode(r), expiry]
    return args


#: Expectations kept at most (the oldest go first): a producer that never waits for its
#: results must not keep one per task it enqueued.
EXPECTED_MAX = 1024


class RedisResultStorage(RedisStore, BaseResultStorage):
    capabilities = frozenset(
        {Capability.CROSS_PROCESS, Capability.NATIVE_TTL, Capability.RESULT_NOTIFY}
    )
    local_only = False

    def _expect(self, task_id: str) -> None:
        """Have the listener catch this result's notification from now on, while the
        results channel is subscribed and before the task exists: the first wait then
        needs no read before it sleeps. Nothing while the channel is not subscribed yet
        (the first wait subscribes)."""
        if self._shared is not None:
            self._shared.notifier.expect(self._channel, task_id.encode(), EXPECTED_MAX)

    @functools.cached_property
    def _channel(self) -> bytes:
        """The results channel's name (the prefix never changes)."""
        return self.key("rn").encode()

    def _decode(self, task_id: str, value: bytes) -> TaskResult:
        if not value.startswith(_MARK):
            raise ForeignKeyError(self.key("r", task_id), "holds a string OmniQ did not write")
        return result_or_stand_in(task_id, memoryview(value)[len(_MARK) :], "Redis")

    async def _script(self, name: str, args: list[Any], key: str) -> Any:
        try:
            return await self.shared.script(name)(args=[self.prefix, *args])
        except ResponseError as exc:
            raise (await self.foreign(key, exc) or exc) from None

    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        await self._script("results_set", set_args(results), self.key("r", results[0].task_id))

    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        keys = [self.key("r", t).encode() for t in task_ids]
        command = b"*%d\r\n$4\r\nMGET\r\n%b" % (len(keys) + 1, resp(keys))
        values = cast("list[bytes | None]", await self.shared.call_packed(None, command))
        return {
            t: self._decode(t, v) for t, v in zip(task_ids, values, strict=True) if v is not None
        }

    async def _delete(self, task_id: str) -> bool:
        return bool(await self._script("results_delete", [task_id], self.key("r", task_id)))

    async def _cleanup(self) -> int:
        """Nothing to do: Redis expires results itself."""
        return 0

    async def _wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Subscribe first, then read, then sleep until the result's notification; a
        small result comes in the notification (what the script wrote, in the same
        step, so only a written, unexpired result is taken from it), a large one is read.
        An expected result (:meth:`_expect`) is not read first: the listener has caught
        its notification since before its task existed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        channel, message = self.key("rn"), task_id.encode()
        notifier = self.shared.notifier
        fresh, came = notifier.caught(self._channel, message)
        event = Wake()
        if came is not None:  # (its message came before the wait)
            event.set()
            event.payload = came
        notifier.add(channel, event, message)
        try:
            if not fresh:
                await notifier.subscribe(channel)
            while True:
                if fresh and not event.is_set() and deadline > loop.time():
                    result = None  # (with no time to wait, a read says what is there)
                else:
                    event.clear()
                    payload, event.payload = event.payload, b""
                    result = self._noted(task_id, payload) if payload else None
                    if result is None:
                        result = await self.get(task_id)
                fresh = False
                remaining = deadline - loop.time()
                if result is not None or remaining <= 0:
                    return result
                try:  # (no task per wait, unlike wait_for: one hop less to wake)
                    async with asyncio.timeout(remaining):
                        await event.wait()
                except TimeoutError:
                    pass
        finally:
            notifier.remove(channel, event, message)

    def _noted(self, task_id: str, payload: bytes) -> TaskResult | None:
        """The result a notification carried; None when it has expired since (then the
        key is gone too, or going: a read says which)."""
        result = self._decode(task_id, payload)
        if result.expires_at is not None and result.expires_at <= time.time():
            return None
        return result
