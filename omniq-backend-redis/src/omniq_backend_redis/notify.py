"""Wake-ups without polling: one pub/sub connection per shared pool.

Scripts ``PUBLISH`` on a channel per queue (new work) and on one results channel (the
message is the task id, then, for a small result, a space and the value written).
Waiters register an :class:`asyncio.Event` for a channel (and optionally one message:
what comes before the first space); the listener task sets it, and hands a
:class:`Wake` the rest of the message. After a reconnect, messages sent
while disconnected are lost, so every waiter is woken to look again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

ANY = b""  # register for every message on a channel


class Wake(asyncio.Event):
    """An event that also keeps what followed the key in the message that set it (empty
    for none), so a waiter can take a small result from the notification itself."""

    payload: bytes = b""


class Notifier:
    def __init__(self, client: Redis) -> None:
        self._client = client
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._waiters: defaultdict[bytes, defaultdict[bytes, set[asyncio.Event]]] = defaultdict(
            lambda: defaultdict(set)
        )
        #: per channel, the messages expected (see expect), oldest first: None until one
        #: comes, then what followed its key (b"" for nothing, or after a reconnect)
        self._expected: defaultdict[bytes, dict[bytes, bytes | None]] = defaultdict(dict)

    async def subscribe(self, channel: str) -> bool:
        """Subscribe once to ``channel``; True on the call that subscribed (the caller
        then re-checks, since anything published before the confirmation was missed)."""
        name = channel.encode()
        confirmed = self._confirmed.get(name)
        if confirmed is not None:
            await asyncio.shield(confirmed)
            return False
        confirmed = self._confirmed[name] = asyncio.get_running_loop().create_future()
        try:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
            await self._pubsub.subscribe(name)
            if self._listener is None:
                self._listener = asyncio.create_task(self._listen(), name="omniq-redis-notify")
            await asyncio.shield(confirmed)
        except BaseException:
            del self._confirmed[name]
            raise
        return True

    def expect(self, channel: bytes, key: bytes, keep: int) -> bool:
        """Catch the next message for ``key`` on ``channel`` although nobody waits yet,
        if the channel is subscribed (confirmed): from now on whatever is published on it
        is caught, or a reconnect marks it to be looked at. Keeps the last ``keep``
        expectations of the channel (a dict entry each: this runs per ``delay()``)."""
        confirmed = self._confirmed.get(channel)
        if confirmed is None or not confirmed.done() or confirmed.cancelled():
            return False
        expected = self._expected[channel]
        if len(expected) >= keep:
            del expected[next(iter(expected))]
        expected[key] = None
        return True

    def caught(self, channel: bytes, key: bytes) -> tuple[bool, bytes | None]:
        """Take the expectation of ``key``: (False, None) for none (never made, or let
        go); (True, None) when no message came yet; else (True, what followed the key),
        b"" meaning look for yourself."""
        expected = self._expected.get(channel)
        if not expected or key not in expected:
            return False, None
        return True, expected.pop(key)

    def add(self, channel: str, event: asyncio.Event, message: bytes = ANY) -> None:
        self._waiters[channel.encode()][message].add(event)

    def remove(self, channel: str, event: asyncio.Event, message: bytes = ANY) -> None:
        by_message = self._waiters.get(channel.encode())
        if by_message is not None and message in by_message:
            by_message[message].discard(event)
            if not by_message[message]:
                del by_message[message]

    def _wake_all(self) -> None:
        for expected in self._expected.values():
            for key, payload in expected.items():
                if payload is None:
                    expected[key] = b""
        for by_message in self._waiters.values():
            for events in by_message.values():
                for event in events:
                    event.set()

    async def _listen(self) -> None:
        assert self._pubsub is not None
        delay = 0.05
        while True:
            try:
                message = await self._next()
            except (RedisError, OSError):
                # redis-py reconnects and re-subscribes on the next read; meanwhile
                # let waiters look for themselves.
                self._wake_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            if message is None:
                continue
            kind, channel, data = message
            if kind == b"subscribe":
                confirmed = self._confirmed.get(channel)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
                else:  # a re-subscribe after a reconnect: messages may have been missed
                    self._wake_all()
            elif kind == b"message":
                by_message = self._waiters.get(channel)
                expected = self._expected.get(channel)
                if expected:
                    key, _, payload = data.partition(b" ")
                    if key in expected:
                        expected[key] = payload
                if by_message:
                    key, _, payload = data.partition(b" ")
                    for event in by_message.get(ANY, ()):
                        event.set()
                    for event in by_message.get(key, ()):
                        if payload and isinstance(event, Wake):
                            event.payload = payload
                        event.set()

    async def _next(self) -> tuple[bytes, bytes, Any] | None:
        """The next message as (kind, channel, data): read straight off the connection
        while it is up (redis-py's ``get_message`` adds a health check, a retry wrapper
        and a dict per message, on the path of every wake-up); through ``get_message``,
        which reconnects and subscribes again, when it is not or health checks are on."""
        assert self._pubsub is not None
        conn: Any = self._pubsub.connection  # (typed None by redis-py)
        if conn is not None and conn.is_connected and not conn.health_check_interval:
            reply = await conn.read_response(push_request=True)
            if isinstance(reply, list) and len(reply) == 3:
                kind = reply[0]
                return (kind if isinstance(kind, bytes) else str(kind).encode()), reply[1], reply[2]
            return None
        message = await self._pubsub.get_message(timeout=None)
        if message is None:
            return None
        kind = message["type"]
        return (
            (kind.encode() if isinstance(kind, str) else kind),
            message["channel"],
            message["data"],
        )

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self._listener
            self._listener = None
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
            self._pubsub = None
        for confirmed in self._confirmed.values():
            confirmed.cancel()
        self._confirmed.clear()
        self._expected.clear()
