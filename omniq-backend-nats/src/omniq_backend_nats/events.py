"""Events on a JetStream stream ``<prefix>_events`` with a max age (native TTL).

Each event is one message on ``<prefix>.ev.<queue>.<type>.<task id>`` (each part
encoded by :func:`names.token`), so a query by task, queue or a single type is
filtered by the server. A bulk enqueue stores a window's events in one message per
queue and type instead (:meth:`NatsEventStorage.bundles`): ``<prefix>.ev.<queue>.<type>._many``,
a msgpack array of the events (a message per event was a third of the server's work
per task). Every reader expands a bundle into its events, so it sees the same events
either way; a query by task also reads the bundles of its queue and type and keeps the
task's events. ``since`` starts the read at that stream time minus ``clock_skew``
seconds: an event is appended after it happened, so its message is never older than
its timestamp by more than the skew between hosts. A bundle holds enqueued events,
written after their ids were made, so a query by a task whose id :func:`new_id` made
starts its read of bundles at the id's time minus ``clock_skew`` (or ``since``'s start,
when later), not at the start of the queue's bulk history; any other id reads them all.
``until``, several types and the ordering by timestamp are applied here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import msgspec
from nats.aio.msg import Msg
from nats.js import api

from omniq.interfaces import BaseEventStorage, Capability
from omniq.models import TaskEvent, encoder, event_decoder, id_time
from omniq.options import Option
from omniq.records import decode_or_skip

from .batch import sequences
from .connection import OPTIONS, NatsStore, stream_sequence
from .names import token

__all__ = ["BUNDLE", "NatsEventStorage"]

_PUBLISH_WINDOW = 512
#: The last subject level of a message holding several events of one queue and type (a
#: bulk enqueue's window): never a task id's token, in which ``_`` is followed by two
#: hex digits.
BUNDLE = "_many"
_WHERE = "the events stream"


class _Stamp(msgspec.Struct):
    """Only the timestamp of an encoded event: what cleanup needs, decoded cheaply."""

    timestamp: float


_stamp_decoder = msgspec.msgpack.Decoder(_Stamp)
#: A bundle as its events' encodings, each decoded on its own: a bad one is left out alone.
_bundle_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])


def _is_bundle(msg: Msg) -> bool:
    return msg.subject.endswith("." + BUNDLE)


def _parts(msg: Msg) -> list[bytes | msgspec.Raw]:
    """The encoded events of a message: itself, or a bundle's elements (none when the
    bundle does not decode: logged and left out, like a bad event)."""
    if not _is_bundle(msg):
        return [msg.data]
    parts = decode_or_skip(_bundle_decoder.decode, msg.data, _WHERE, msg.subject)
    return list(parts or ())


def _bodies(events: Sequence[TaskEvent], budget: int) -> list[bytes]:
    """``events`` as msgpack arrays of at most ``budget`` bytes each (halved until they
    fit; a single event too large goes alone, for the server to refuse)."""
    data = encoder.encode(events)
    if len(data) <= budget or len(events) == 1:
        return [data]
    half = len(events) // 2
    return _bodies(events[:half], budget) + _bodies(events[half:], budget)


def _type_name(value: Any) -> str:
    return str(getattr(value, "value", value))


class NatsEventStorage(NatsStore, BaseEventStorage):
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CROSS_PROCESS, Capability.NATIVE_TTL}
    )
    option_schema = OPTIONS.extend(
        Option(
            "max_age",
            "duration",
            7 * 86400.0,
            "Age after which the server drops events by itself.",
            minimum=0,
            above=True,
        ),
        Option(
            "clock_skew",
            "duration",
            300.0,
            "How much earlier than `since` a query starts reading (see *Events*).",
            minimum=0,
        ),
    )

    @property
    def stream(self) -> str:
        return f"{self.prefix}_events"

    async def _setup(self) -> None:
        max_age = self.settings["max_age"]
        await self.ensure_stream(
            api.StreamConfig(
                name=self.stream,
                subjects=[f"{self.prefix}.ev.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_age=max_age,
                num_replicas=self.settings["replicas"],
                storage=api.StorageType.FILE,
            )
        )

    def _subject(self, queue: str, type_: str, task_id: str) -> str:
        return f"{self.prefix}.ev.{queue}.{type_}.{task_id}"

    async def _append_many(self, events: Sequence[TaskEvent]) -> None:
        for start in range(0, len(events), _PUBLISH_WINDOW):
            await self.inbox.publish(self.messages(events[start : start + _PUBLISH_WINDOW]))

    def messages(self, events: Sequence[TaskEvent]) -> list[tuple[str, bytes]]:
        """The stream messages ``(subject, data)`` that store ``events``."""
        return [
            (
                self._subject(token(e.queue), token(_type_name(e.type)), token(e.task_id)),
                encoder.encode(e),
            )
            for e in events
        ]

    def bundles(self, events: Sequence[TaskEvent], max_payload: int) -> list[tuple[str, bytes]]:
        """The stream messages ``(subject, data)`` that store ``events`` as bundles: one
        per queue and type (more when one would pass ``max_payload``), each event in
        order. Readers give a bundle's events in their order; only events of different
        queues or types with the same timestamp may come in another order than given."""
        groups: dict[tuple[str, str], list[TaskEvent]] = {}
        for e in events:
            groups.setdefault((e.queue, _type_name(e.type)), []).append(e)
        return [
            (self._subject(token(queue), token(type_), BUNDLE), body)
            for (queue, type_), group in groups.items()
            for body in _bodies(group, max_payload)
        ]

    async def _events(
        self, subject: str, start: float | None, task_id: str | None = None
    ) -> AsyncIterator[tuple[int, TaskEvent]]:
        """``(stream sequence, event)`` of the events on ``subject``, bundles expanded;
        with ``task_id``, a bundle that cannot hold it is skipped undecoded."""
        wanted = None if task_id is None else msgspec.msgpack.encode(task_id)
        async for msg in self.scan(self.stream, subject, start_time=start):
            if wanted is not None and _is_bundle(msg) and wanted not in msg.data:
                continue
            seq = 0 if task_id is None else stream_sequence(msg)
            for part in _parts(msg):
                event = decode_or_skip(event_decoder.decode, part, _WHERE, msg.subject)
                if event is not None:
                    yield seq, event

    async def _query(
        self,
        *,
        task_id: str | None,
        queue: str | None,
        types: list[str] | None,
        since: float | None,
        until: float | None,
        limit: int | None,
        order: str,
    ) -> list[TaskEvent]:
        wanted = None if types is None else {_type_name(t) for t in types}
        if wanted is not None and not wanted:
            return []
        queue_part = token(queue) if queue is not None else "*"
        type_part = token(next(iter(wanted))) if wanted and len(wanted) == 1 else "*"
        skew = self.settings["clock_skew"]
        start = since - skew if since is not None else None
        read: list[tuple[int, TaskEvent]] = []
        if task_id is None:
            read = [p async for p in self._events(self._subject(queue_part, type_part, "*"), start)]
        else:
            # The task's own messages and the bundles of its queue and type: two reads
            # (a consumer takes one filter subject on older servers), merged in append
            # order by stream sequence (a stable sort keeps a bundle's order).
            own = self._subject(queue_part, type_part, token(task_id))
            read = [p async for p in self._events(own, start, task_id)]
            bundles = self._subject(queue_part, type_part, BUNDLE)
            bundle_start = _bundle_start(task_id, start, skew)
            read += [p async for p in self._events(bundles, bundle_start, task_id)]
            read.sort(key=lambda p: p[0])
        found: list[TaskEvent] = []
        for _, event in read:
            if task_id is not None and event.task_id != task_id:
                continue
            if wanted is not None and _type_name(event.type) not in wanted:
                continue
            if (since is not None and event.timestamp < since) or (
                until is not None and event.timestamp >= until
            ):
                continue
            found.append(event)
        # sorted() is stable, also with reverse=True: ties keep append order.
        found.sort(key=lambda e: e.timestamp, reverse=order == "desc")
        return found if limit is None else found[:limit]

    async def _cleanup(self, older_than: float) -> int:
        """Purge the leading run of old messages in one call, then delete stragglers (an
        old timestamp appended after newer ones) one by one. A bundle of old and new
        events is stored anew with its new ones (and unreadable ones), then deleted: an
        event is never lost, at worst (a crash in between) stored twice."""
        old: list[int] = []
        count = 0
        first_new: int | None = None
        async for msg in self.scan(self.stream, f"{self.prefix}.ev.>"):
            seq = stream_sequence(msg)
            parts = _parts(msg)
            kept = [p for p in parts if not _older(p, older_than, msg.subject)]
            if not parts or len(kept) == len(parts):  # (an unreadable message is kept)
                if first_new is None:
                    first_new = seq
                continue
            if kept:
                # The id of the bundle it replaces: two cleanups at once (every worker
                # runs one) store it once (the stream's duplicate window).
                raws = [msgspec.Raw(p) if isinstance(p, bytes) else p for p in kept]
                rewrite = {"Nats-Msg-Id": f"{BUNDLE}:{seq}"}
                sequences(await self.inbox.ask([(msg.subject, encoder.encode(raws), rewrite)]))
            old.append(seq)
            count += len(parts) - len(kept)
        if not old:
            return 0
        head = [s for s in old if first_new is None or s < first_new]
        if head:
            await self.js.purge_stream(self.stream, seq=head[-1] + 1)
        await asyncio.gather(*(self.js.delete_msg(self.stream, s) for s in old[len(head) :]))
        return count


def _bundle_start(task_id: str, start: float | None, skew: float) -> float | None:
    """Where a query by ``task_id`` starts reading bundles: a bundle holds enqueued events
    only, written after the id was made, so for an id :func:`new_id` made, its time
    less ``skew`` (the id's time is the client's clock, the stream's the server's), or
    ``start`` when later. Any other id, or one from the future (not made by ``new_id``
    or by a clock off by more than the skew), reads from ``start``."""
    made = id_time(task_id)
    if made is None or made - skew > time.time():
        return start
    return made - skew if start is None else max(start, made - skew)


def _older(part: bytes | msgspec.Raw, older_than: float, subject: str) -> bool:
    """Whether an encoded event is older than ``older_than`` (an unreadable one is not)."""
    stamp = decode_or_skip(_stamp_decoder.decode, part, _WHERE, subject)
    return stamp is not None and stamp.timestamp < older_than
