"""Events on a JetStream stream ``<prefix>_events`` with a max age (native TTL).

Each event is one message on ``<prefix>.ev.<queue>.<type>.<task id>`` (each part
encoded by :func:`names.token`), so a query by task, queue or a single type is
filtered by the server. ``since`` starts the read at that stream time minus
``clock_skew`` seconds: an event is appended after it happened, so its message is
never older than its timestamp by more than the skew between hosts. ``until``, several
types and the ordering by timestamp are applied here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
from nats.js import api

from omniq.interfaces import BaseEventStorage, Capability
from omniq.models import TaskEvent, encoder, event_decoder
from omniq.options import Option
from omniq.records import decode_or_skip

from .connection import OPTIONS, NatsStore, stream_sequence
from .names import token

__all__ = ["NatsEventStorage"]

_PUBLISH_WINDOW = 512


class _Stamp(msgspec.Struct):
    """Only the timestamp of an encoded event: what cleanup needs, decoded cheaply."""

    timestamp: float


_stamp_decoder = msgspec.msgpack.Decoder(_Stamp)


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
        subject = self._subject(
            token(queue) if queue is not None else "*",
            token(next(iter(wanted))) if wanted and len(wanted) == 1 else "*",
            token(task_id) if task_id is not None else "*",
        )
        start = since - self.settings["clock_skew"] if since is not None else None
        found: list[TaskEvent] = []
        async for msg in self.scan(self.stream, subject, start_time=start):
            event = decode_or_skip(event_decoder.decode, msg.data, "the events stream", msg.subject)
            if event is None:
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
        """Purge the leading run of old events in one call, then delete stragglers (an
        old timestamp appended after newer ones) one by one."""
        old: list[int] = []
        first_new: int | None = None
        async for msg in self.scan(self.stream, f"{self.prefix}.ev.>"):
            seq = stream_sequence(msg)
            stamp = decode_or_skip(
                _stamp_decoder.decode, msg.data, "the events stream", msg.subject
            )
            if stamp is not None and stamp.timestamp < older_than:  # (an unreadable one is kept)
                old.append(seq)
            elif first_new is None:
                first_new = seq
        if not old:
            return 0
        head = [s for s in old if first_new is None or s < first_new]
        if head:
            await self.js.purge_stream(self.stream, seq=head[-1] + 1)
        await asyncio.gather(*(self.js.delete_msg(self.stream, s) for s in old[len(head) :]))
        return len(old)
