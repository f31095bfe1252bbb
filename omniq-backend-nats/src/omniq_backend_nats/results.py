"""Results in a JetStream KV bucket ``<prefix>_results``, one key per task id.

A re-run overwrites the key (history 1). ``wait()`` wakes on the write itself: the put's
message on the key's subject (core NATS, no consumer) carries the stored result, so no
read follows it. The first wait subscribes to every key of the bucket (one core-NATS
subscription per store), which lets :meth:`expect` catch the
result of a task ``delay()`` is about to enqueue: that wait then sleeps with no read
before it. The cost: this process receives every result put in the bucket while it waits
(the subscription is dropped after :data:`KEEP_IDLE` seconds without a wait).
Each result's own ``expires_at`` is checked on read and swept by ``cleanup()``; the
bucket-wide ``max_age`` option (default: none) adds the engine's own TTL as a safety net,
which is why NATIVE_TTL is not declared: a result with ``expires_at=None`` must stay until
deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import ClassVar

import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from omniq.interfaces import BaseResultStorage, Capability
from omniq.models import TaskResult, encoder
from omniq.options import Option
from omniq.records import result_or_stand_in

from .acks import deliver_in_place
from .connection import OPTIONS, NatsSettings, NatsStore
from .names import token

__all__ = ["NatsResultStorage"]

#: How many puts one wait covers.
_WINDOW = 512
#: Expectations kept (:meth:`NatsResultStorage.expect`): a producer may never wait, so
#: past this many the oldest is let go (its wait reads first, as without one).
EXPECTED_MAX = 1024
#: The largest put kept for an expected key; a larger one is read by its wait (up to
#: EXPECTED_MAX are kept for waits that may never come).
KEPT_MAX = 4096
#: Seconds without a wait after which the subscription to every key is dropped at the
#: next put: a process that stopped waiting stops receiving every result.
KEEP_IDLE = 60.0


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

    def __init__(self, settings: NatsSettings) -> None:
        super().__init__(settings)
        self._subscribing = asyncio.Lock()
        self._reset()

    def _reset(self) -> None:
        #: The subscription to every key of the bucket, once a wait made it.
        self._every: Subscription | None = None
        #: The client's reconnect count when that subscription was known registered
        #: (None before): a reconnect since may have lost puts, so expectations reset.
        self._since: int | None = None
        #: Loop time of the last wait's start.
        self._waited = 0.0
        self._dropping: asyncio.Task[None] | None = None  # (a reference keeps it alive)
        #: Expected keys, oldest first -> the put's data once it came (b"" before).
        self._expected: dict[str, bytes] = {}
        #: Keys waited for -> the waits' futures, given the put's data.
        self._waiters: dict[str, set[asyncio.Future[bytes]]] = {}

    async def _setup(self) -> None:
        self._kv = await self.ensure_bucket(self.bucket, ttl=self.settings["max_age"])

    async def close(self) -> None:
        await super().close()
        self._reset()

    def _expect(self, task_id: str) -> None:
        """Catch this result's put from now on, once the subscription to every key is
        registered with the server (the server handles the task's enqueue after it, so
        it will deliver the put). Nothing before the first wait made it."""
        if self._since is None:
            return
        expected = self._expected
        if len(expected) >= EXPECTED_MAX:
            del expected[next(iter(expected))]
        expected[token(task_id)] = b""

    async def _on_put(self, msg: Msg) -> None:
        self._put_seen(msg)

    def _put_seen(self, msg: Msg) -> None:
        """A put in the bucket: hand it to the waits for its key, or keep it for an
        expected key. Only what a store wrote reaches this subject: a finish puts the
        result only after its fenced completion was accepted. Called in the client's
        read loop where it can be (``deliver_in_place``): the wait resumes a loop turn
        sooner."""
        if not msg.data or (msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE)):
            return
        key = msg.subject[self._cut :]
        waiters = self._waiters.get(key)
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(msg.data)
        elif key in self._expected:
            if len(msg.data) <= KEPT_MAX:
                self._expected[key] = msg.data
            else:  # (not held in memory for a wait that may never come: it reads)
                del self._expected[key]
        elif not self._waiters and asyncio.get_running_loop().time() - self._waited > KEEP_IDLE:
            self._drop()

    def _drop(self) -> None:
        """Stop receiving every put (no wait for a while): the next wait subscribes again
        and reads first; expectations until then are not kept."""
        sub, self._every, self._since = self._every, None, None
        self._expected.clear()
        if sub is not None:  # (not from inside its own callback's task)
            self._dropping = asyncio.get_running_loop().create_task(_unsubscribe(sub))

    async def _subscribe(self) -> None:
        """Subscribe to every key of the bucket, once (the client re-subscribes by
        itself after a reconnect)."""
        async with self._subscribing:
            if self._every is None:
                self._every = await self.nc.subscribe(f"$KV.{self.bucket}.>", cb=self._on_put)
                deliver_in_place(self._every, self._put_seen)

    @property
    def _cut(self) -> int:
        return len(self.bucket) + 5  # "$KV." + bucket + "."

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
        """Wait on the subscription to every key, then read the key: a put after the
        read arrives on the subscription, which the server registered before it
        answered the read (same connection, in order). An expected key (:meth:`expect`)
        is not read first: its put was caught since before its task existed (a
        reconnect since, which may have lost it, makes the wait read). No consumer is
        created: a KV watch costs a consumer create and delete per wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = token(task_id)
        self._waited = loop.time()
        if self._every is None:
            await self._subscribe()
        came = self._expected.pop(key, None)
        if self._since is not None and self.nc.stats["reconnects"] != self._since:
            self._since = self.nc.stats["reconnects"]
            self._expected.clear()
            came = None  # (made before the reconnect: its put may be lost)
        waiter: asyncio.Future[bytes] = loop.create_future()
        waiters = self._waiters.setdefault(key, set())
        waiters.add(waiter)
        read = False  # (a wait that skipped its read reads before it gives up)
        try:
            if came:
                result = self._live(came, await self.now(), task_id)
                if result is not None:
                    return result
            elif came is None or deadline <= loop.time():
                read = True
                result = await self._read(key, task_id)
                if self._since is None:  # (the read went after the subscription)
                    self._since = self.nc.stats["reconnects"]
                if result is not None:
                    return result
            while (remaining := deadline - loop.time()) > 0:
                try:  # (no task per wait, unlike wait_for: one hop less to wake)
                    async with asyncio.timeout(remaining):
                        data = await waiter
                except TimeoutError:
                    break
                waiters.discard(waiter)
                waiter = loop.create_future()
                waiters.add(waiter)
                result = self._live(data, await self.now(), task_id)
                if result is not None:
                    return result
            if read:
                return None
            # Its put may be late (a busy loop) or lost (a reconnect during the wait).
            return await self._read(key, task_id)
        finally:
            waiters.discard(waiter)
            if not waiters and self._waiters.get(key) is waiters:
                del self._waiters[key]

    async def _read(self, key: str, task_id: str) -> TaskResult | None:
        """The key's live result, read from the bucket."""
        (entry,) = await self.inbox.get(self.bucket, [key])
        return None if entry is None else self._live(entry[0], await self.now(), task_id)


async def _unsubscribe(sub: Subscription) -> None:
    with contextlib.suppress(Exception):  # (closed meanwhile: nothing to stop)
        await sub.unsubscribe()
