"""Many JetStream requests in flight on one connection, answered through one inbox and
awaited with one timer.

The worker's hot path writes several KV entries and stream messages per task. Through
``nc.request`` / ``js.publish`` each of them costs a task, a timer, a random token and a
dataclass of the reply, which on a busy host cost more CPU than the server's own work.
Here a batch is published in one go, each reply resolves a plain future by a counter
token, and the whole batch is awaited once: the same requests and the same replies
(every write still waits for the server's acknowledgement), for a fraction of the
client's CPU.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

__all__ = ["WRONG_REVISION", "Inbox", "Request", "publishes", "puts", "revisions", "sequences"]

#: ``(subject, payload, headers)`` of one request.
Request = tuple[str, bytes, "dict[str, str] | None"]
#: Error codes of a compare-and-set that found another revision.
_WRONG_LAST = (10071, 10164)
#: What :meth:`Inbox.write` answers for a compare-and-set that found another revision.
WRONG_REVISION = -1
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
T = TypeVar("T")
#: How many writes one bulk call keeps in flight.
_WINDOW = 256


def _status(msg: Msg) -> str | None:
    """The status code of a control reply (404, 408, 503...), else None."""
    return msg.headers.get("Status") if msg.headers else None


def _answer(msg: Msg) -> dict[str, Any]:
    """The JSON reply of a JetStream API call or publish; raises its error."""
    if _status(msg) == "503":
        raise nats.js.errors.NoStreamResponseError
    answer: dict[str, Any] = json.loads(msg.data)
    if "error" in answer:
        raise nats.js.errors.APIError.from_error(answer["error"])
    return answer


class Inbox:
    """Replies to this connection's batched requests: one wildcard subscription, one
    future per request in flight, keyed by a counter."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._sub: Subscription | None = None
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._count = 0
        self._opening = asyncio.Lock()

    async def _open(self) -> None:
        if self._sub is None:
            async with self._opening:
                if self._sub is None:
                    prefix = self.nc.new_inbox() + "."
                    self._sub = await self.nc.subscribe(prefix + "*", cb=self._on_reply)
                    self._prefix = prefix

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    def _token(self) -> str:
        self._count += 1
        return str(self._count)

    async def pull(self, stream: str, consumer: str, batch: int) -> list[Msg]:
        """Fetch up to ``batch`` messages that are deliverable now, without waiting for
        more: a ``no_wait`` pull answers at once (the client's own ``fetch`` may leave a
        lingering pull request on the server that captures the next message into a dead
        inbox). Delivered messages carry their stream subject, not the inbox's, so each
        pull has a subscription of its own; its callback collects the batch."""
        out: list[Msg] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def collect(msg: Msg) -> None:
            if done.done():
                return
            if _status(msg) is None:  # a status (404 no messages, 408...) ends the batch
                out.append(msg)
                if len(out) < batch:
                    return
            done.set_result(None)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=collect)
        try:
            request = json.dumps({"batch": batch, "no_wait": True}).encode()
            await self.nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", request, reply=inbox
            )
            try:
                async with asyncio.timeout(self.timeout):
                    await done
            except TimeoutError:
                raise nats.errors.TimeoutError from None
            return out
        finally:
            await sub.unsubscribe()

    async def ask(self, requests: Sequence[Request], *, tell: Sequence[Request] = ()) -> list[Msg]:
        """Send ``requests`` and return their replies in order (one wait for all), after
        publishing ``tell`` with no reply wanted. Raises ``nats.errors.TimeoutError``
        when a reply is missing after the timeout, like ``nc.request``."""
        await self._open()
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        futures: list[asyncio.Future[Msg]] = []
        try:
            for subject, payload, headers in tell:
                await self.nc.publish(subject, payload, headers=headers)
            for subject, payload, headers in requests:
                key = self._token()
                future: asyncio.Future[Msg] = loop.create_future()
                self._waiting[key] = future
                tokens.append(key)
                futures.append(future)
                await self.nc.publish(subject, payload, reply=self._prefix + key, headers=headers)
            if not futures:
                return []
            try:
                async with asyncio.timeout(self.timeout):
                    return list(await asyncio.gather(*futures))
            except TimeoutError:
                raise nats.errors.TimeoutError from None
        finally:
            for key in tokens:
                self._waiting.pop(key, None)

    # -- the requests the stores make --------------------------------------------------

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        """Publish to streams and wait for every acknowledgement: stream sequences."""
        return sequences(await self.ask(publishes(messages)))

    async def get(self, bucket: str, keys: Sequence[str]) -> list[tuple[bytes, int] | None]:
        """KV entries ``(value, revision)`` by direct get; None for a missing key."""
        prefix = f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}."
        replies = await self.ask([(prefix + key, b"", None) for key in keys])
        out: list[tuple[bytes, int] | None] = []
        for msg in replies:
            status = _status(msg)
            if status == "404":
                out.append(None)
                continue
            if status is not None:
                raise nats.js.errors.APIError.from_msg(msg)
            headers = msg.headers or {}
            if headers.get(KV_OP) in (KV_DEL, KV_PURGE):
                out.append(None)
                continue
            out.append((msg.data, int(headers["Nats-Sequence"])))
        return out

    async def write(
        self,
        bucket: str,
        entries: Sequence[tuple[str, bytes, int | None]],
        *,
        tell: Sequence[Request] = (),
    ) -> list[int]:
        """Put KV entries ``(key, value, last)``: with ``last`` a compare-and-set on that
        revision. Each answer is the new revision, or :data:`WRONG_REVISION`."""
        return revisions(await self.ask(puts(bucket, entries), tell=tell))

    async def remove(
        self, bucket: str, keys: Sequence[tuple[str, int | None]], *, tell: Sequence[Request] = ()
    ) -> list[bool]:
        """``NatsStore.remove_key`` for many ``(key, revision)``: whether each removed
        something."""
        requests: list[Request] = []
        for key, revision in keys:
            request: dict[str, Any] = {"filter": f"$KV.{bucket}.{key}"}
            if revision is not None:
                request["seq"] = revision + 1
            requests.append(
                (f"$JS.API.STREAM.PURGE.KV_{bucket}", json.dumps(request).encode(), None)
            )
        return [bool(_answer(msg).get("purged")) for msg in await self.ask(requests, tell=tell)]

    async def stream_messages(self, stream: str) -> int:
        """How many messages ``stream`` holds (its info, without the subject list)."""
        (msg,) = await self.ask([(f"$JS.API.STREAM.INFO.{stream}", b"", None)])
        return int(_answer(msg)["state"]["messages"])


# -- requests to combine in one ask -------------------------------------------------------


def publishes(messages: Sequence[tuple[str, bytes]]) -> list[Request]:
    """Stream publishes ``(subject, data)``; :func:`sequences` reads their replies."""
    return [(subject, data, None) for subject, data in messages]


def sequences(replies: Sequence[Msg]) -> list[int]:
    """The stream sequences of acknowledged publishes; raises the first error."""
    return [int(_answer(msg)["seq"]) for msg in replies]


def puts(bucket: str, entries: Sequence[tuple[str, bytes, int | None]]) -> list[Request]:
    """KV puts ``(key, value, last)`` (with ``last``, a compare-and-set on that
    revision); :func:`revisions` reads their replies."""
    return [
        (f"$KV.{bucket}.{key}", value, None if last is None else {_EXPECTED_LAST: str(last)})
        for key, value, last in entries
    ]


def revisions(replies: Sequence[Msg]) -> list[int]:
    """The new revision of each put, or :data:`WRONG_REVISION` for a compare-and-set
    that found another revision; raises any other error."""
    out = []
    for msg in replies:
        try:
            out.append(int(_answer(msg)["seq"]))
        except nats.js.errors.APIError as exc:
            if exc.err_code not in _WRONG_LAST:
                raise
            out.append(WRONG_REVISION)
    return out


async def _windowed(items: Sequence[T], call: Callable[[T], Awaitable[Any]]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(items), _WINDOW):
        out += await asyncio.gather(*(call(i) for i in items[start : start + _WINDOW]))
    return out
