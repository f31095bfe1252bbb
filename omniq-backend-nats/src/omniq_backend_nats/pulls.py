"""Waiting pulls: while its worker waits for work, a task queue keeps a pull request open
on every priority band of the worker's queues, so the server hands a message published
to an idle worker over at once: no poll, and no wake-up followed by a ``STREAM.INFO`` and
a pull before the claim.

Each pull asks for one message and lasts at least :data:`MIN_PULL` (a worker's short
waits do not churn pulls). A delivered message is held for the next reserve while the
instance waits or reserves; at any other time its worker is busy, so the message is put
back at once (``-NAK``, redelivered promptly, to another worker or to this one once it
waits again). A held message is checked and claimed like a pulled one: the same message
under the same AckWait, so what a crash leaves behind does not change.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .acks import deliver_in_place
from .batch import _status
from .connection import ACK_PENDING, ack_field
from .delivery import _message_task_id

__all__ = ["MIN_PULL", "WaitingPulls", "pending"]

#: The shortest a waiting pull lasts (seconds).
MIN_PULL = 1.0
#: A pull counts as lapsed this long before the server ends it (replies in flight).
_SLACK = 0.05
#: How many ids of delivered tasks are kept to recognise their wake-ups.
_SEEN = 64


def pending(msg: Msg) -> int:
    """How many messages the consumer had left to deliver when it sent ``msg``."""
    left = ack_field(msg, ACK_PENDING)
    return int(msg.metadata.num_pending or 0) if left is None else left


def _delivered_id(msg: Msg) -> str:
    """The task id of a delivered message, from ``Nats-Msg-Id`` (``<id>:<revision>``)
    when it has one, which spares decoding a carried record."""
    msg_id = msg.headers.get("Nats-Msg-Id") if msg.headers else None
    return msg_id.rpartition(":")[0] if msg_id else _message_task_id(msg)


class WaitingPulls:
    """The open pulls of one task queue instance and the messages they delivered."""

    def __init__(self, nc: Client, stream: str, wake: Callable[[], None]) -> None:
        self.nc, self.stream, self._wake = nc, stream, wake
        #: Hold delivered messages (the instance waits or reserves), else put them back.
        self.accepting = False
        self.held: list[Msg] = []
        #: Ids of tasks lately delivered and held: their wake-ups bring nothing new.
        self.seen: deque[str] = deque(maxlen=_SEEN)
        self._sub: Subscription | None = None
        self._inbox = ""
        self._count = 0
        #: Band subject -> reply key and loop time its open pull lapses.
        self._open: dict[str, tuple[str, float]] = {}
        self._keys: dict[str, str] = {}  # reply key -> band subject
        self._naks: set[asyncio.Future[None]] = set()  # (naks sent by _in_place)

    async def arm(self, bands: Sequence[tuple[str, str]], timeout: float) -> None:
        """Open a pull on each ``(band subject, consumer)`` that has none lasting past a
        wait of ``timeout`` seconds; the new ones last ``max(timeout, MIN_PULL)``."""
        self.accepting = True
        if self._sub is None:
            self._inbox = self.nc.new_inbox()
            self._sub = await self.nc.subscribe(self._inbox + ".*", cb=self._on_msg)
            deliver_in_place(self._sub, self._in_place)
        now = asyncio.get_running_loop().time()
        expires = max(timeout, MIN_PULL)
        request = json.dumps({"batch": 1, "expires": int(expires * 1e9)}).encode()
        for subject, consumer in bands:
            found = self._open.get(subject)
            if found is not None and found[1] >= now + timeout:
                continue
            if found is not None:
                self._keys.pop(found[0], None)
            self._count += 1
            key = str(self._count)
            self._open[subject] = (key, now + expires - _SLACK)
            self._keys[key] = subject
            await self.nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{consumer}",
                request,
                reply=f"{self._inbox}.{key}",
            )

    def armed(self, subjects: Sequence[str]) -> bool:
        """Whether each band has an open pull: a message stored there now reaches one
        (this instance's or another's) without being asked for."""
        now = asyncio.get_running_loop().time()
        return all(self._open.get(s, ("", now))[1] > now for s in subjects)

    def take(self) -> list[Msg]:
        held, self.held = self.held, []
        return held

    async def _on_msg(self, msg: Msg) -> None:
        back = self._deliver(msg)
        if back:
            await self.nc.publish(back, b"-NAK")

    def _in_place(self, msg: Msg) -> None:
        """:meth:`_on_msg` in the client's read loop (see ``deliver_in_place``): the
        reserve is woken a loop turn sooner; a nak goes out from a task of its own."""
        back = self._deliver(msg)
        if back:
            nak = asyncio.ensure_future(self.nc.publish(back, b"-NAK"))
            self._naks.add(nak)
            nak.add_done_callback(self._naks.discard)

    def _deliver(self, msg: Msg) -> str | None:
        """Hold a delivered message and wake the reserve; answer the reply subject of
        one to put back at once, if any."""
        if _status(msg) is not None:  # 408 (expired), 409...: that pull is over
            subject = self._keys.pop(msg.subject[len(self._inbox) + 1 :], None)
            if subject is not None:
                self._open.pop(subject, None)
            return None
        found = self._open.pop(msg.subject, None)  # a pull of one message is spent
        if found is not None:
            self._keys.pop(found[0], None)
        if not self.accepting:
            # Busy: back at once for whoever waits (a lost nak only costs AckWait).
            return msg.reply
        self.held.append(msg)
        self.seen.append(_delivered_id(msg))
        self._wake()
        return None

    async def close(self) -> None:
        """Put back what is held (best effort) and stop listening; the server drops the
        open pulls once their inbox has no subscriber, or when they expire."""
        self.accepting = False
        sub, self._sub = self._sub, None
        for msg in self.take():
            await self.nc.publish(msg.reply, b"-NAK")
        self._open.clear()
        self._keys.clear()
        if sub is not None and not self.nc.is_closed:
            await sub.unsubscribe()
