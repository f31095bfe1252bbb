"""Recreating a durable consumer that stops answering pulls.

After an unclean stop (``kill -9``) a consumer's stored state can list as delivered and
unacknowledged messages that the stream has deleted (the stream's deletes reached the
disk, the consumer's acks did not). nats-server 2.9 fails to load each of them as it
comes up for redelivery (it logs "Received an error looking up message for consumer:
deleted message") and leaves the ``no_wait`` pull that asked without any answer; every
AckWait the same messages come up again, so a queue's pulls can all time out while the
server answers everything else and the stream holds the queue's messages. Nothing in the
consumer ever clears them (they stay until the stream's first sequence passes them).

A task queue whose pulls of one consumer time out :data:`UNANSWERED_PULLS` times in a row
(each after a ``STREAM.INFO`` that was answered) reads the consumer (``CONSUMER.INFO``),
pulls once more and, when that goes unanswered too, deletes the consumer and creates it
again with the same settings. The new consumer starts from the stream's first message:
the messages of tasks leased meanwhile are delivered again, and their records put them
back until their leases end, as for any redelivery after AckWait; an ack or a nak sent
later on the old consumer's reply subject reaches the new one (same name), which applies
an ack to the stream all the same (a work queue deletes the message) and ignores a nak.
Of several instances repairing at once only the one that first records the consumer's
generation (its ``created`` time) in ``<prefix>_repairs`` deletes it: the others would
otherwise delete the fresh one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from .connection import confirm, nak_delay
from .dependencies import Dependencies
from .names import token

__all__ = ["UNANSWERED_PULLS", "ConsumerRepair"]

log = logging.getLogger(__name__)

#: Pulls of one consumer in a row that go unanswered before it is checked (a server that
#: is slow, not wedged, answers one of them or the check's pull).
UNANSWERED_PULLS = 3
#: How long the record of a repair is kept (it only has to outlive the repair's race).
_REPAIRS_AGE = 3600.0


class ConsumerRepair(Dependencies):
    """Counting unanswered pulls per consumer and recreating a wedged consumer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Consumer -> pulls in a row that timed out.
        self._unanswered: dict[str, int] = {}
        self._repairs_kv: tuple[Any, KeyValue] | None = None

    async def close(self) -> None:
        self._unanswered.clear()
        await super().close()

    def _forget_unanswered(self, consumers: Iterable[str]) -> None:
        """Drop the counts of consumers whose band the stream no longer holds messages
        for: no pull of theirs would reset it, and a count left standing keeps an idle
        reserve from trusting its open pulls (one ``STREAM.INFO`` per wait)."""
        for consumer in consumers:
            self._unanswered.pop(consumer, None)

    async def _pull(self, queue: str, band: int, lease: float, consumer: str, n: int) -> list[Msg]:
        """A ``no_wait`` pull of up to ``n`` messages; the pull that makes
        :data:`UNANSWERED_PULLS` timeouts in a row repairs the consumer first and, if it
        was recreated, is asked once more. (On the hot path: a ``try`` and a check of an
        empty dict.)"""
        try:
            msgs = await self.inbox.pull(self.stream, consumer, n)
        except nats.errors.TimeoutError:
            count = self._unanswered.get(consumer, 0) + 1
            self._unanswered[consumer] = count
            if count < UNANSWERED_PULLS:
                raise
            del self._unanswered[consumer]
            if not await self._repair_consumer(queue, band, lease, consumer):
                raise
            return await self.inbox.pull(self.stream, consumer, n)
        if self._unanswered:
            self._unanswered.pop(consumer, None)
        return msgs

    async def _repair_consumer(self, queue: str, band: int, lease: float, consumer: str) -> bool:
        """Recreate ``consumer`` if it still answers no pull and no other instance
        recreates it; whether this one did."""
        asked = await self.now()
        try:
            info = await self.js.consumer_info(self.stream, consumer)
        except nats.js.errors.NotFoundError:
            # Gone (a repairer killed between its delete and its create): create it now,
            # as the next reserve may not ask (an idle one trusts its open pulls).
            self._consumers.pop(consumer, None)
            await self._consumer(queue, band, lease)
            return True
        try:
            probe = await self.inbox.pull(self.stream, consumer, 1)
        except nats.errors.TimeoutError:
            pass
        else:  # it answers again: put back what it delivered
            for msg in probe:
                await confirm(self.nc, msg.reply, nak_delay(0))
            return False
        self._consumers.pop(consumer, None)  # set up anew by the next reserve
        if not await self._claim_repair(consumer, info.created.isoformat(), asked):
            return False  # another instance recreates this generation
        log.warning(
            "NATS consumer %s of stream %s answers no pull (%d pending, %d delivered and "
            "unacknowledged): deleting and recreating it",
            consumer,
            self.stream,
            info.num_pending or 0,
            info.num_ack_pending or 0,
        )
        try:
            await self.js.delete_consumer(self.stream, consumer)
        except nats.js.errors.NotFoundError:
            pass
        await self._consumer(queue, band, lease)
        return True

    async def _claim_repair(self, consumer: str, generation: str, asked: float) -> bool:
        """Record that this instance repairs ``consumer`` as created at ``generation``:
        a create in ``<prefix>_repairs``, which one instance wins. A claim made more than
        ``outage_timeout`` before this instance asked for the consumer's info (``asked``,
        when it was still of that generation) is one whose instance did not delete it in
        time (killed, or its delete timed out): taken over by a compare-and-set, else the
        consumer would stay wedged for the claim's age. (Its instance, if only held up,
        deletes this one's fresh consumer in turn: that costs redeliveries.)"""
        if self._repairs_kv is None or self._repairs_kv[0] is not self.js:
            kv = await self.ensure_bucket(f"{self.prefix}_repairs", _REPAIRS_AGE)
            self._repairs_kv = (self.js, kv)
        kv, key, now = self._repairs_kv[1], token(f"{consumer}@{generation}"), b"%r" % asked
        try:
            await kv.create(key, now)
        except nats.js.errors.KeyWrongLastSequenceError:
            try:
                entry = await kv.get(key)
                claimed = float(entry.value or b"inf")
            except (nats.js.errors.KeyNotFoundError, ValueError):
                return False
            if claimed > asked - self.settings["outage_timeout"]:
                return False
            try:
                await kv.update(key, now, last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
        return True
