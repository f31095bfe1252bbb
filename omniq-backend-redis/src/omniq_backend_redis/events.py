"""Events on one Redis Stream, capped by count and optionally by age.

An entry holds a group of events with one timestamp, queue and type (a bulk enqueue's
share them; see events_lib.lua). Entry ids follow the event timestamps, so a time filter
is an id range; queue and type are filtered here while reading, and an index by task (one
hash per time bucket, ``P:ev:tx:<bucket>``, task id -> entry ids, dropped
``task_index_ttl`` after its bucket) makes queries by task cheap. Trade-offs are in
docs/backends/redis.md.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, cast

import msgspec
from redis.exceptions import ResponseError

from omniq.interfaces import BaseEventStorage, Capability
from omniq.models import TaskEvent, encoder
from omniq.options import Option
from omniq.records import decode_or_skip

from .codec import blobs, column
from .settings import OPTIONS
from .store import RedisStore

_CHUNK = 500  # entries per XRANGE read
#: Buckets of the per-task index over ``task_index_ttl``: a query by task reads one hash
#: field per bucket, and a bucket is freed whole (UNLINK) once its events are past the ttl.
_INDEX_BUCKETS = 256
_Entries = list[tuple[bytes, dict[bytes, bytes]]]  # what XRANGE answers (bytes: no decoding)
#: An entry's events (field e: a msgpack array of them, see events_lib.lua).
_events = msgspec.msgpack.Decoder(list[TaskEvent]).decode


def _ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


class RedisEventStorage(RedisStore, BaseEventStorage):
    capabilities = frozenset({Capability.CROSS_PROCESS})
    local_only = False
    option_schema = OPTIONS.extend(
        Option(
            "max_events",
            "int",
            1_000_000,
            "Cap on the events in the stream, kept on each append (see below).",
            minimum=1,
            optional=True,
            off=(0, "0"),
        ),
        Option(
            "max_age",
            "duration",
            None,
            "Also delete events older than this on each append.",
            minimum=0.001,
            above=False,
            optional=True,
        ),
        Option(
            "task_index_ttl",
            "duration",
            7 * 86400.0,
            "How long an event stays findable by `query(task_id=...)` (the stream "
            "itself is capped by `max_events`/`max_age`).",
            minimum=1,
            above=False,
        ),
    )
    GLOBAL_KEYS: ClassVar[dict[str, str]] = {
        "ev": "stream",
        "ev:late": "string",
        "ev:n": "string",
        "ev:g": "zset",
        "ev:tx": "zset",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_events = self.options["max_events"]
        self.max_age = self.options["max_age"]
        self.task_index_ttl = self.options["task_index_ttl"]
        self.index_bucket_ms = max(int(self.task_index_ttl * 1000) // _INDEX_BUCKETS, 1000)

    async def _append_many(self, events: Sequence[TaskEvent]) -> None:
        """One script run; the events travel as msgpack columns plus the encoded events end
        to end (see events_lib.lua): a bulk enqueue's events share their timestamp,
        queue and type, so those are sent once, and the events stored as one entry."""
        try:
            await self.shared.script("events_append")(args=self.append_args(events))
        except ResponseError as exc:
            raise (await self.foreign(self.key("ev"), exc) or exc) from None
        await self.after_append()

    def append_args(self, events: Sequence[TaskEvent], task_ids: bool = True) -> list[Any]:
        """The arguments of events_lib.lua's append_events (what events_append.lua runs,
        and enqueue.lua after its tasks, which passes its own ids: ``task_ids=False``)."""
        bodies = [encoder.encode(e) for e in events]
        stamps = column([e.timestamp for e in events])
        if isinstance(stamps, list):
            ms: Any = [max(math.floor(ts * 1000), 0) for ts in stamps]
            exact: Any = [repr(float(ts)) for ts in stamps]
        else:
            ms, exact = max(math.floor(stamps * 1000), 0), repr(float(stamps))
        columns = [
            len(events),
            ms,
            exact,
            column([e.task_id for e in events]) if task_ids else None,
            column([e.queue for e in events]),
            column([e.type for e in events]),
            column([len(body) for body in bodies]),
        ]
        return [*self.append_settings(), encoder.encode(columns), *blobs(bodies)]

    def append_settings(self) -> list[Any]:
        """The first arguments of an append (events_lib.lua, enqueue_one.lua): prefix,
        cap ('' for none), index ttl ms, index bucket width ms."""
        return [
            self.prefix,
            "" if self.max_events is None else self.max_events,
            int(self.task_index_ttl * 1000),
            self.index_bucket_ms,
        ]

    async def after_append(self) -> None:
        """Drop events past ``max_age``, if set."""
        if self.max_age is not None:
            await self.cleanup((await self.now()) - self.max_age)

    async def _late(self) -> int:
        return int(await self.redis.get(self.key("ev", "late")) or 0)

    async def _query(
        self,
        *,
        task_id: str | None = None,
        queue: str | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = 1000,
        order: str = "asc",
    ) -> list[TaskEvent]:
        wanted_types = None if types is None else {getattr(t, "value", t).encode() for t in types}
        wanted_queue = None if queue is None else queue.encode()

        def keep(fields: dict[bytes, bytes]) -> float | None:
            """The timestamp of the entry's events when they pass every filter but the
            task's (applied to the decoded events), else None."""
            if wanted_queue is not None and fields[b"q"] != wanted_queue:
                return None
            if wanted_types is not None and fields[b"y"] not in wanted_types:
                return None
            ts = float(fields[b"ts"])
            if (since is not None and ts < since) or (until is not None and ts >= until):
                return None
            return ts

        late = await self._late()
        lo = "-" if since is None else str(max(math.floor(since * 1000), 0))
        hi = "+" if until is None else str(math.ceil(until * 1000) + late)
        if task_id is not None:
            found = await self._by_task(task_id, keep)
        else:
            found = await self._scan(lo, hi, keep, limit, late, order == "desc")
        # (timestamp, position) sorts by time with ties in append order
        found.sort(reverse=order == "desc")
        if limit is not None:
            found = found[:limit]
        return [event for _, _, event in found]

    async def _by_task(self, task_id: str, keep: Any) -> list[tuple[float, int, TaskEvent]]:
        script = self.shared.script("events_task")
        try:
            entries = await script(args=[self.prefix, task_id])
        except ResponseError as exc:
            raise (await self.foreign(self.key("ev"), exc) or exc) from None
        found: list[tuple[float, int, TaskEvent]] = []
        for entry_id, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if (ts := keep(fields)) is not None:
                events = decode_or_skip(_events, fields[b"e"], "the events stream", entry_id) or ()
                found += [(ts, len(found), e) for e in events if e.task_id == task_id]
        return found

    async def _scan(
        self, lo: str, hi: str, keep: Any, limit: int | None, late: int, desc: bool
    ) -> list[tuple[float, int, TaskEvent]]:
        """Read the id range in chunks, stopping once no later entry can make the cut:
        an entry's timestamp is at most its id and at least its id minus ``late``. With a
        limit the first chunk is about that many entries, then twice the last: an entry
        may be a bulk's group of hundreds of events, and the latest ten should not cost
        a read of hundreds of groups."""
        stream = self.key("ev")
        count = _CHUNK if limit is None else min(max(limit, 16), _CHUNK)
        found: list[tuple[float, int, TaskEvent]] = []
        best: list[float] = []  # heap of the `limit` best timestamps (negated when asc)
        position = 0
        start, end = (hi, lo) if desc else (lo, hi)
        while True:
            if desc:
                chunk = cast(_Entries, await self.redis.xrevrange(stream, start, end, count=count))
            else:
                chunk = cast(_Entries, await self.redis.xrange(stream, start, end, count=count))
            for entry_id, fields in chunk:
                ts = keep(fields)
                if ts is None:
                    continue
                group = decode_or_skip(_events, fields[b"e"], "the events stream", entry_id)
                for event in group or ():
                    position += 1
                    found.append((ts, -position if desc else position, event))
                    if limit is not None:
                        heapq.heappush(best, ts if desc else -ts)
                        if len(best) > limit:
                            heapq.heappop(best)
            if len(chunk) < count:
                return found
            last_ms = _ms(chunk[-1][0])
            if limit is not None and len(best) == limit:
                cut = best[0] if desc else -best[0]
                if (desc and last_ms < cut * 1000) or (not desc and last_ms - late > cut * 1000):
                    return found
            start = "(" + chunk[-1][0].decode()
            count = min(count * 2, _CHUNK)

    async def _cleanup(self, older_than: float) -> int:
        """One script (events_cleanup.lua): XTRIM MINID drops every entry whose id (hence
        timestamp) is older, then the few appended late, whose id is newer than their
        timestamp, go by XDEL; index buckets that only name dropped entries are freed."""
        older_ms = max(math.floor(older_than * 1000), 0)
        args: list[str | int] = [
            self.prefix,
            older_ms,
            repr(float(older_than)),
            self.index_bucket_ms,
        ]
        try:
            return cast(int, await self.shared.script("events_cleanup")(args=args))
        except ResponseError as exc:
            raise (await self.foreign(self.key("ev"), exc) or exc) from None
