"""The task queue: Lua scripts make every multi-key change one atomic server-side step.

Layout and fields are described at the top of ``lua/prelude.lua``. Each method is one
round trip (one EVALSHA, or one pipeline for reads); leases, ETAs and TTLs are judged
by Redis ``TIME`` inside the scripts.
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import math
import secrets
import struct
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, ClassVar, cast

import msgspec
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from omniq.errors import QueueError, TaskNotFoundError
from omniq.interfaces import (
    BaseEventStorage,
    BaseResultStorage,
    BaseStore,
    BaseTaskQueue,
    Batch,
    Capability,
    Completion,
    LeaseRef,
    TaskPage,
    accepted_writes,
    as_stored,
)
from omniq.lifecycle import attempts_allowed, runs_on_failure
from omniq.limits import SCAN_AHEAD, Limits, Reservation
from omniq.models import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    ErrorInfo,
    EventType,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    WorkerInfo,
    encoder,
    worker_decoder,
)
from omniq.records import schedule_or_none

from .codec import (
    HASH_FIELDS,
    MARK,
    STATES,
    blobs,
    column,
    decode_error,
    decode_hash,
    decode_rows,
    decode_rows_with_id,
    decode_task,
    encode_error,
    is_task_hash,
    number,
    rescue,
)
from .connection import pack_evalsha, pack_script
from .errors import ForeignKeyError, foreign_from_reply
from .events import RedisEventStorage
from .paging import list_page
from .results import RedisResultStorage, set_args
from .store import RedisStore

_BATCH = 1000  # tasks per cleanup/purge/lease-recovery script call (bounds time in Redis)
_CAS_TRIES = 20


class RedisTaskQueue(RedisStore, BaseTaskQueue):
    capabilities = frozenset(
        {
            Capability.DELAYED,
            Capability.PRIORITY,
            Capability.SCHEDULES,
            Capability.DEPENDENCIES,
            Capability.CROSS_PROCESS,
            Capability.BLOCKING_RESERVE,
            Capability.LIMITS,
        }
    )
    local_only = False
    #: reserve.lua pops until it has its limit or the queues are empty, and wait_for_work
    #: returns at once while a queue has ready work anyway
    reserve_drains = True
    GLOBAL_KEYS: ClassVar[dict[str, str]] = {
        "running": "zset",
        "ttl": "zset",
        "done": "zset",
        "queues": "set",
        "seq": "string",
        "sched": "hash",
        "sched:due": "zset",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake: dict[tuple[str, ...], asyncio.Event] = {}
        #: enqueue_one's script and its packed command up to its task's arguments, per
        #: event storage
        self._one: dict[int, tuple[AsyncScript, bytes]] = {}
        #: wait_check.lua's whole packed command, per tuple of queues
        self._wait_check: dict[tuple[str, ...], bytes] = {}
        #: per tuple of queues, what the last reserve that drained them said of their
        #: delayed tasks: the loop time the earliest is due (inf for none); taken by the
        #: next wait_for_work instead of running wait_check.lua
        self._drained: dict[tuple[str, ...], float] = {}

    async def close(self) -> None:
        if self._shared is not None:
            for queues, event in self._wake.items():
                for q in queues:
                    self._shared.notifier.remove(self.key("w", q), event)
        self._wake.clear()
        await super().close()

    async def _run(self, name: str, args: list[Any]) -> Any:
        """Run a script with ``args`` after the prefix, packed here (redis-py's packing
        and reply handling cost the worker more than the script's own round trip)."""
        script = self.shared.script(name)
        try:
            return await self.shared.call_packed(script, pack_script(script, [self.prefix, *args]))
        except ResponseError as exc:
            raise _script_error(exc) from None

    # -- tasks -------------------------------------------------------------------------

    def _shares_home(self, store: BaseStore) -> bool:
        """A result or event storage on this connection (same server and database)."""
        return (
            isinstance(store, (RedisEventStorage, RedisResultStorage))
            and store.shared is self.shared
        )

    async def _enqueue_recorded(
        self,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[Task]:
        """``delay()``'s call: a single new task without parents, with its event storage
        on this connection or events off, goes straight to :meth:`_enqueue_one`, without
        the batch machinery (``enqueue_batches``, the ``_enqueue`` generator) it costs
        as much client time as; what that hands back goes to the general script (not
        through :meth:`_enqueue`, which would try enqueue_one.lua again), and the rest
        the general way."""
        if (
            event_storage is None
            # (_shares_home's usual case, written out: ~0.5 us a delay())
            or (
                type(event_storage) is RedisEventStorage
                and event_storage._shared is self._shared is not None
            )
            or self._shares_home(event_storage)
        ):
            # (_straight, written out: no coroutine of its own per delay())
            if len(tasks) == 1 and not tasks[0].depends_on and tasks[0].created_at:
                event = events[0] if event_storage is not None and events else None
                one = await self._enqueue_one(tasks[0], event, event_storage)
                if one is not None:
                    return [one]
            if len(tasks) == 1:
                return [
                    t
                    async for part in self._enqueue_all([(tasks, events)], event_storage)
                    for t in part
                ]
        return await super()._enqueue_recorded(tasks, events, event_storage)

    async def _straight(
        self,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        event_storage: BaseEventStorage | None,
    ) -> Task | None:
        """The one task of ``tasks`` stored by :meth:`_enqueue_one` when it is a single new
        task without parents; None when it is not, or the script handed it back."""
        if len(tasks) != 1 or tasks[0].depends_on or not tasks[0].created_at:
            return None
        event = events[0] if event_storage is not None and events else None
        return await self._enqueue_one(tasks[0], event, event_storage)

    async def _enqueue(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> AsyncIterator[list[Task]]:
        """One enqueue script run per batch, atomic (a foreign key or an unknown parent
        anywhere in a batch refuses all of it), each sent as soon as it is built, on one
        connection, each reply decoded as soon as it comes: the server stores a batch
        while the caller builds the next. A batch travels as msgpack columns plus the
        encoded tasks end to end (see enqueue.lua); a task the server stored exactly as
        given is returned as is, not copied. With the event storage on this connection
        (a sibling, given only then) the script also writes the batch's events: they are
        encoded before the server decides the tasks' states, so they say what the client
        expects (pending, or scheduled for an eta ahead of its clock), and the script
        writes those whose task it stored so; the others (a task that existed, an eta at
        the edge of now) follow in one more call, as stored. Unless ``batches`` is a
        sequence of one, the batches are chained (see enqueue.lua): one that fails stops
        those after it, so what is stored is the tasks before it."""
        if isinstance(batches, Sequence) and len(batches) == 1:
            tasks, events = batches[0]
            one = await self._straight(tasks, events, event_storage)
            if one is not None:
                yield [one]
                return
        async for part in self._enqueue_all(batches, event_storage):
            yield part

    async def _enqueue_all(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> AsyncIterator[list[Task]]:
        """:meth:`_enqueue` by the general script, every task of every batch."""
        sibling = event_storage is not None
        chained = not (isinstance(batches, Sequence) and len(batches) == 1)
        chain_key = self.key("chain", secrets.token_hex(8)) if chained else ""
        sent: list[tuple[Sequence[Task], Sequence[TaskEvent]]] = []
        failure: list[BaseException] = []

        def calls() -> Iterator[tuple[str, list[Any]]]:
            try:
                for tasks, events in batches:
                    if not tasks:
                        continue
                    chain = [chain_key, len(sent) + 1] if chained else None
                    args = [self.prefix]
                    if sibling and events:
                        at = time.time()
                        expected = [
                            TaskState.SCHEDULED
                            if t.eta is not None and t.eta > at
                            else TaskState.PENDING
                            for t in tasks
                        ]
                        said = [
                            as_stored(e, t, state)
                            for e, t, state in zip(events, tasks, expected, strict=True)
                        ]
                        args += _enqueue_args(tasks, chain, column([s.value for s in expected]))
                        args += cast(RedisEventStorage, event_storage).append_args(
                            said, task_ids=False
                        )
                    else:
                        args += _enqueue_args(tasks, chain)
                    sent.append((tasks, events))
                    yield "enqueue", args
            except Exception as exc:  # building a batch failed: keep what was sent, then raise
                failure.append(exc)

        decoded: dict[int, tuple[list[Task], list[int]] | ResponseError] = {}

        def decode(i: int, reply: Any) -> None:
            decoded[i] = reply if isinstance(reply, ResponseError) else _stored(sent[i][0], reply)

        await self.shared.pipelined(calls(), decode)
        if chained and sent:
            await self.redis.delete(chain_key)
        stored = 0
        held: list[TaskEvent] = []
        refusal: Exception | None = None
        for i, (_, events) in enumerate(sent):
            outcome = decoded[i]
            if isinstance(outcome, ResponseError):
                refusal = _script_error(outcome)
                if "OMNIQ_ABORTED" in str(outcome):  # the batch before ran, then its key lapsed
                    refusal = QueueError(
                        f"batch {i + 1} of this enqueue was not stored: its chain key "
                        f"{chain_key!r} was gone, which happens when more than 60 s pass "
                        f"between two batches (building one took that long?)"
                    )
                break
            batch_stored, positions = outcome
            stored += len(batch_stored)
            if events and event_storage is not None:
                held += [as_stored(events[j - 1], batch_stored[j - 1]) for j in positions]
            yield batch_stored
        if held:
            assert event_storage is not None
            await event_storage.append_many(held)
        elif sibling and stored:
            await cast(RedisEventStorage, event_storage).after_append()
        problem = refusal or (failure[0] if failure else None)
        if problem is not None:
            if stored:
                problem.add_note(
                    f"the first {stored} task(s) of this enqueue were stored, the rest were not"
                )
            raise problem

    async def _enqueue_one(
        self, task: Task, event: TaskEvent | None, event_storage: BaseEventStorage | None
    ) -> Task | None:
        """What ``delay()`` stores: one new task without parents, with its event, by
        enqueue_one.lua, sent as a command packed here (the script and its settings, which
        never change, made once per event storage). None when the script did not take it
        (an existing id, a foreign key, a late event: see the script), and then nothing
        was written and the general script has it."""
        # (no typing.cast() call, header() written out, times by '%.17g', as exact as
        # repr() and about half its cost: what runs once per delay())
        events: RedisEventStorage | None = event_storage if event is not None else None  # type: ignore[assignment]
        shared = self._shared or self.shared  # (the property, which raises, when not open)
        one = self._one.get(id(events))
        if one is None:
            script = shared.script("enqueue_one", one_settings(self.prefix, events))
            # (its last CRLF left to the first argument's line, see _ARG_LINES)
            one = self._one[id(events)] = (script, pack_evalsha(script, 12)[:-2])
        script, start = one
        eta, expires_at = task.eta, task.expires_at
        tid, q, body = task.id.encode(), task.queue.encode(), encoder.encode(task)
        # (each argument as a RESP bulk string after the CRLF that ends the one before,
        # see _ARG_LINES; those of few values made whole once, see _PRIORITY_ARGS)
        lines = _ARG_LINES
        p = _PRIORITY_ARGS.get(task.priority) or _bulk(str(task.priority).encode())
        if eta is None:
            e = _NO_ARG
        else:
            e = b"%.17g" % eta
            e = lines[len(e)] + e
        if expires_at is None:
            x = _NO_ARG
        else:
            x = b"%.17g" % expires_at
            x = lines[len(x)] + x
        if events is not None and event is not None:
            expected = (
                TaskState.SCHEDULED if eta is not None and eta > time.time() else TaskState.PENDING
            )
            said = as_stored(event, task, expected)
            ts = said.timestamp
            m = math.floor(ts * 1000)  # (not max(): ~1,900 instructions a call on 3.11)
            s, ms, exact = _STATE_ARGS[expected], b"%d" % (m if m > 0 else 0), b"%.17g" % ts
            y, ev = _TYPE_ARGS.get(said.type) or _bulk(said.type.encode()), encoder.encode(said)
        else:
            s = y = _NO_ARG
            ms = exact = ev = b""
        # (the 12 arguments by one join, the length lines looked up: a quarter of the cost
        # of one bytes format of them, ~1.5 us a call)
        head = _HEADER.pack(
            task.created_at, task.priority, attempts_allowed(task), task.result_ttl, task.dead_ttl
        )
        try:
            packed = b"".join((
                start, lines[len(tid)], tid, lines[len(q)], q, _HEAD_ARG, head,
                lines[len(body)], body, p, e, x, s, lines[len(ms)], ms, lines[len(exact)], exact,
                y, lines[len(ev)], ev, b"\r\n",
            ))  # fmt: skip
        except IndexError:  # an argument of _ARG_LINES' length or more (a big call)
            packed = b"".join((
                start, _bulk(tid), _bulk(q), _HEAD_ARG, head, _bulk(body), p, e, x, s, _bulk(ms),
                _bulk(exact), y, _bulk(ev), b"\r\n",
            ))  # fmt: skip
        try:
            state = await shared.call_packed(script, packed)
        except ResponseError as exc:
            raise _script_error(exc) from None
        if state == 0:
            return None
        if events is not None and events.max_age is not None:
            await events.after_append()
        return _as_new(task, STATES[state], None, task.created_at)

    async def _reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int
    ) -> list[Task]:
        blob = await self._run(
            "reserve", [worker_id, number(lease), limit, secrets.token_hex(8), *queues]
        )
        if type(blob) is list:  # it drained the queues: (rows, wait_check's answer)
            blob, when = blob
            due = float(when) if when else math.inf
            self._drained[tuple(queues)] = asyncio.get_running_loop().time() + due
        try:
            return decode_rows(blob)
        except Exception:  # a record that does not decode: not on the hot path
            return await self._rescue_reserved(msgspec.msgpack.decode(blob))

    async def _reserve_limited(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int, limits: Limits
    ) -> Reservation:
        """reserve_limited.lua: the limits' state lives beside the tasks (``P:limits``,
        ``P:lim:run:<name>``), judged and changed in the script that leases."""
        declared = [limits.task_rates, limits.queue_rates, limits.task_concurrency]
        blob, retry, deferred = await self._run(
            "reserve_limited",
            [
                worker_id,
                number(lease),
                limit,
                secrets.token_hex(8),
                SCAN_AHEAD,
                encoder.encode(declared),
                *queues,
            ],
        )
        try:
            tasks = decode_rows(blob)
        except Exception:  # a record that does not decode: not on the hot path
            tasks = await self._rescue_reserved(msgspec.msgpack.decode(blob))
        return Reservation(tasks, float(retry) if retry else None, bool(deferred))

    async def _rescue_reserved(self, rows: builtins.list[Any]) -> builtins.list[Task]:
        """Reserved rows with a stand-in for each one that does not decode. Its id, which
        the rows leave out, is found by its lease token among the running tasks of its
        lease deadline (a batch shares one; scored in whole ms rounded up, as
        lease_deadline in prelude.lua scores it)."""
        ids: builtins.list[bytes] = []
        running = self.key("running")
        for deadline in {row[7] for row in rows}:
            score = math.ceil(float(deadline) * 1000)
            ids += cast("list[bytes]", await self.redis.zrangebyscore(running, score, score))
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in ids:
                pipe.hmget(self.key("t", member.decode()), ("lt", "q"))
            found = await pipe.execute()
        by_token = {lt: (member.decode(), q) for member, (lt, q) in zip(ids, found, strict=True)}
        out = []
        for row in rows:
            try:
                out.append(decode_task(row))
            except Exception as exc:
                task_id, queue = by_token.get(row[6], ("", None))
                out.append(rescue(task_id, [row[0], *row[2:]], exc, queue))
        return out

    async def _heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> list[str]:
        args: list[Any] = [number(lease)]
        for task_id, token in leases:
            args += [task_id, token]
        return [i.decode() for i in await self._run("heartbeat", args)]

    async def _finish(
        self,
        items: Sequence[Completion],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage | None,
        event_storage: BaseEventStorage | None,
    ) -> list[bool]:
        """With the result storage on this connection, one script run (finish.lua): the
        completions, then the results and (event storage on this connection too) the
        events of those accepted, in one atomic step. Otherwise the complete script, then
        a sibling event storage's events of those accepted."""
        args: list[Any] = [len(items)]
        for task_id, token, state, error in items:
            args += [task_id, token, state.value, encode_error(error)]
        sibling_events = cast("RedisEventStorage | None", event_storage)
        if result_storage is None:
            accepted = [bool(ok) for ok in await self._run("complete", args)]
            if events and sibling_events is not None:
                await sibling_events.append_many(accepted_writes(items, accepted, (), events)[1])
            return accepted
        rp = cast(RedisResultStorage, result_storage).prefix
        if len(items) == 1:
            done = await self._finish_one(items[0], results, events, rp, sibling_events)
            if done is not None:
                if events and sibling_events is not None:
                    await sibling_events.after_append()
                return [done]
        args += [rp, len(results), *set_args(results)]
        if events and sibling_events is not None:
            args += sibling_events.append_args(events)
        accepted = [bool(ok) for ok in await self._run("finish", args)]
        if events and sibling_events is not None:
            await sibling_events.after_append()
        return accepted

    async def _finish_one(
        self,
        item: Completion,
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_prefix: str,
        event_storage: RedisEventStorage | None,
    ) -> bool | None:
        """One completion with at most its own result and its own events, in time order
        (what an idle worker sends per task): finish_one.lua, without finish.lua's
        prelude and general event append. None when it does not fit or the script handed
        it back, with nothing written: then finish.lua has it."""
        task_id, token, state, error = item
        if len(results) > 1 or (results and results[0].task_id != task_id):
            return None
        args: list[Any] = [task_id, token, state.value, encode_error(error), result_prefix]
        args += set_args(results)[1:] if results else ["", ""]
        if events and event_storage is not None:
            args += event_storage.append_settings()
            last = 0
            for event in events:
                ts = event.timestamp
                ms = max(math.floor(ts * 1000), 0)
                if event.task_id != task_id or ms < last:
                    return None
                last = ms
                args += [
                    b"%d" % ms,
                    repr(float(ts)),
                    event.queue,
                    event.type.encode(),
                    encoder.encode(event),
                ]
        else:
            args += ["", "", "", ""]
        done = await self._run("finish_one", args)
        return None if done < 0 else bool(done)

    async def _retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        return bool(await self._run("retry", [task_id, token, number(eta), encode_error(error)]))

    async def _release(self, task_id: str, token: str) -> bool:
        return bool(await self._run("release", [task_id, token]))

    async def _dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        fenced = "0" if token is None else "1"
        return bool(
            await self._run("dead_letter", [task_id, fenced, token or "", encode_error(error)])
        )

    async def _release_expired_leases(self) -> list[Task]:
        released: list[Task] = []
        while True:
            rows = decode_rows_with_id(await self._run("expire_leases", [_BATCH]))
            released += rows
            if len(rows) < _BATCH:
                return released

    async def _cancel(self, task_id: str) -> bool:
        outcome = await self._run("cancel", [task_id])
        if outcome < 0:
            await self._get(task_id)  # a foreign key under the task's name is named as such
            raise TaskNotFoundError(task_id)
        return bool(outcome)

    async def _get(self, task_id: str) -> Task | None:
        key = self.key("t", task_id)
        try:
            values = cast("list[bytes | None]", await self.redis.hmget(key, HASH_FIELDS))
        except ResponseError as exc:
            raise (await self.foreign(key, exc) or exc) from None
        if is_task_hash(values[0]):
            return decode_hash(task_id, values)
        if await self.redis.exists(key):
            raise ForeignKeyError(key, "is a hash without the OmniQ marker")
        return None

    async def _rows(self, ids: Sequence[bytes]) -> list[Task]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(self.key("t", task_id.decode()), HASH_FIELDS)
            found = await pipe.execute()
        return [
            decode_hash(i.decode(), v)
            for i, v in zip(ids, found, strict=True)
            if is_task_hash(v[0])
        ]

    async def _dependents(self, task_id: str) -> builtins.list[Task]:
        """The ``deps:<id>`` set the enqueue script keeps (children deleted since are
        left out: their hashes are gone)."""
        ids = cast("set[bytes]", await self.redis.smembers(self.key("deps", task_id)))
        return sorted(await self._rows(builtins.list(ids)), key=lambda t: t.id)

    async def _queues(self, queue: str | None) -> list[str]:
        if queue is not None:
            return [queue]
        names = cast("set[bytes]", await self.redis.smembers(self.key("queues")))
        return sorted(q.decode() for q in names)

    async def _list(
        self,
        queue: str | None,
        states: Iterable[TaskState] | None,
        limit: int,
    ) -> list[Task]:
        wanted = list(TaskState) if states is None else list(states)
        indexes = [(q, s) for q in await self._queues(queue) for s in wanted]
        if not indexes:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for q, s in indexes:
                pipe.zrange(self.key("q", q, "s", s.value), 0, limit - 1, withscores=True)
            found = await pipe.execute()
        # Each index is in enqueue order; merge them and keep the oldest.
        merged = heapq.merge(*([(score, tid) for tid, score in f] for f in found))
        ids = [tid for _, tid in list(merged)[:limit]]
        return await self._rows(ids)

    async def _list_page(
        self,
        *,
        queue: str | None,
        states: builtins.list[TaskState] | None,
        name: str | None,
        since: float | None,
        until: float | None,
        cursor: str | None,
        limit: int,
    ) -> TaskPage:
        """Paged by enqueue order over the per-state sorted sets (see :mod:`.paging`)."""
        return await list_page(
            self,
            queue=queue,
            states=states,
            name=name,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        )

    async def _stats(self) -> dict[str, dict[TaskState, int]]:
        queues = await self._queues(None)
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                for s in TaskState:
                    pipe.zcard(self.key("q", q, "s", s.value))
            counts = iter(await pipe.execute())
        out: dict[str, dict[TaskState, int]] = {}
        for q in queues:
            per_state = {s: n for s in TaskState if (n := next(counts))}
            if per_state:
                out[q] = per_state
        return out

    async def _purge(self, queue: str | None, states: Iterable[TaskState] | None) -> int:
        wanted = list(TaskState) if states is None else list(states)
        total = 0
        # a waiting dependent a purged parent cancels is deleted at once when matched
        also = [queue or "", "1" if TaskState.WAITING in wanted else ""]
        for q in await self._queues(queue):
            for s in wanted:
                while (n := await self._run("purge", [q, s.value, _BATCH, *also])) > 0:
                    total += n
                    if n < _BATCH:
                        break
        return total

    async def _cleanup(self) -> builtins.list[Task]:
        expired: builtins.list[Task] = []
        while True:
            blob, deleted = await self._run("cleanup", [_BATCH])
            rows = decode_rows_with_id(blob)
            expired += rows
            if len(rows) < _BATCH and deleted < _BATCH:
                return expired

    async def _wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Wait on pub/sub wake-ups that enqueue, retry and lease recovery publish; wake
        no later than the earliest eta among the queues' delayed tasks."""
        if timeout <= 0:
            return
        names = tuple(queues)
        notifier = self.shared.notifier
        event = self._wake.get(names)
        if event is None:
            event = self._wake[names] = asyncio.Event()
            for q in names:
                notifier.add(self.key("w", q), event)
        subscribed_now = [await notifier.subscribe(self.key("w", q)) for q in names]
        drained_due = self._drained.pop(names, None)
        if any(subscribed_now) or event.is_set():
            event.clear()
            return
        if drained_due is not None:
            # A reserve drained these queues just before, and said when their first
            # delayed task is due: what the check would say (work made ready since then
            # published a wake-up, which set the event).
            timeout = min(timeout, max(drained_due - asyncio.get_running_loop().time(), 0.0))
        else:
            # Let what is ready go first: the worker calls this right after starting the
            # tasks it reserved, and a short task's finish should not queue behind the
            # check.
            await asyncio.sleep(0)
            script = self.shared.script("wait_check")
            check = self._wait_check.get(names)
            if check is None:
                check = self._wait_check[names] = pack_script(script, [self.prefix, *names])
            found = await self.shared.call_packed(script, check)
            if found == b"r":
                return
            if found:
                timeout = min(timeout, max(float(found), 0.0))
        try:  # (no task per wait, unlike wait_for: one hop less to wake)
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass
        event.clear()

    # -- schedules ---------------------------------------------------------------------

    async def _add_schedule(self, schedule: Schedule) -> Schedule:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("sched"), schedule.id, encoder.encode(schedule))
            if schedule.paused:
                pipe.zrem(self.key("sched", "due"), schedule.id)
            else:
                pipe.zadd(self.key("sched", "due"), {schedule.id: schedule.next_run})
            await pipe.execute()
        return schedule

    async def _get_schedule(self, schedule_id: str) -> Schedule | None:
        blob = cast("bytes | None", await self.redis.hget(self.key("sched"), schedule_id))
        return schedule_or_none(schedule_id, blob, "Redis") if blob is not None else None

    async def _list_schedules(self) -> builtins.list[Schedule]:
        blobs = cast("dict[bytes, bytes]", await self.redis.hgetall(self.key("sched")))
        found = (schedule_or_none(k, blobs[k], "Redis") for k in sorted(blobs))
        return [s for s in found if s is not None]

    async def _delete_schedule(self, schedule_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key("sched"), schedule_id)
            pipe.zrem(self.key("sched", "due"), schedule_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    @staticmethod
    def _cas_args(schedule_id: str, old: bytes, new: Schedule) -> builtins.list[Any]:
        return [schedule_id, old, encoder.encode(new), "" if new.paused else number(new.next_run)]

    async def _set_schedule_paused(
        self, schedule_id: str, paused: bool, next_run: float | None
    ) -> bool:
        for _ in range(_CAS_TRIES):
            old = cast("bytes | None", await self.redis.hget(self.key("sched"), schedule_id))
            if old is None:
                return False
            current = schedule_or_none(schedule_id, old, "Redis")
            if current is None:
                return False
            new = msgspec.structs.replace(current, paused=paused)
            if next_run is not None:
                new = msgspec.structs.replace(new, next_run=next_run)
            if (await self._run("schedule_cas", self._cas_args(schedule_id, old, new)))[0]:
                return True
        raise RuntimeError(f"schedule {schedule_id!r} kept changing; pause/resume gave up")

    async def _claim_due_schedules(
        self, at: float, limit: int
    ) -> builtins.list[tuple[Schedule, builtins.list[float]]]:
        ids = cast(
            "builtins.list[bytes]",
            await self.redis.zrangebyscore(
                self.key("sched", "due"), "-inf", at, start=0, num=limit
            ),
        )
        if not ids:
            return []
        blobs = cast("builtins.list[bytes | None]", await self.redis.hmget(self.key("sched"), ids))
        candidates: builtins.list[tuple[Schedule, builtins.list[float]]] = []
        args: builtins.list[Any] = []
        for schedule_id, blob in zip(ids, blobs, strict=True):
            if blob is None:
                continue
            schedule = schedule_or_none(schedule_id, blob, "Redis")
            if schedule is None:
                continue
            times, nxt = schedule.due_firings(at)
            if not times:
                continue
            updated = msgspec.structs.replace(schedule, next_run=nxt, last_run=times[-1])
            candidates.append((schedule, times))
            args += self._cas_args(schedule.id, blob, updated)
        if not candidates:
            return []
        won = await self._run("schedule_cas", args)
        return [c for c, ok in zip(candidates, won, strict=True) if ok]

    # -- live workers ------------------------------------------------------------------
    # One hash, worker id -> WorkerInfo with expires_at by Redis TIME; entries that
    # expired are dropped when listed.

    async def _register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        stored = msgspec.structs.replace(info, expires_at=await self.now() + ttl)
        await self.redis.hset(self.key("workers"), info.id, encoder.encode(stored))
        return stored

    async def _list_workers(self) -> builtins.list[WorkerInfo]:
        blobs = cast("dict[bytes, bytes]", await self.redis.hgetall(self.key("workers")))
        at = await self.now()
        found = sorted((worker_decoder.decode(blob) for blob in blobs.values()), key=lambda w: w.id)
        gone = [w.id for w in found if w.expires_at <= at]
        if gone:
            await self.redis.hdel(self.key("workers"), *gone)
        return [w for w in found if w.expires_at > at]

    async def _unregister_worker(self, worker_id: str) -> bool:
        return bool(await self.redis.hdel(self.key("workers"), worker_id))


def _script_error(exc: ResponseError) -> Exception:
    """The error a script's refusal stands for (unknown parent, foreign key), else itself."""
    message = str(exc)
    if message.startswith("OMNIQ_NOTFOUND "):
        return TaskNotFoundError(message.split()[1], " (named in depends_on)")
    return foreign_from_reply(message) or exc


def _enqueue_args(
    tasks: Sequence[Task], chain: list[Any] | None = None, expected: Any = None
) -> list[Any]:
    """enqueue.lua's arguments after the prefix: the columns, then the encoded tasks
    (the caller adds the events' arguments when it gives ``expected``)."""
    bodies = [encoder.encode(t) for t in tasks]
    parents = run_flags = None
    if any(t.depends_on for t in tasks):
        parents = [list(dict.fromkeys(t.depends_on)) for t in tasks]
        if any(map(runs_on_failure, tasks)):
            run_flags = [runs_on_failure(t) for t in tasks]
    runs = blobs(bodies)
    columns = encoder.encode(
        [
            len(tasks),
            column([t.id for t in tasks]),
            column([len(body) for body in bodies]),
            column([t.queue for t in tasks]),
            column([t.priority for t in tasks]),
            column([t.eta for t in tasks]),
            column([t.expires_at for t in tasks]),
            column([attempts_allowed(t) for t in tasks]),
            column([t.result_ttl for t in tasks]),
            column([t.dead_ttl for t in tasks]),
            column([t.created_at for t in tasks]),
            parents,
            len(runs),
            chain,
            expected,
            len({t.id for t in tasks}) == len(tasks),
            run_flags,
        ]
    )
    return [columns, *runs]


def _stored(tasks: Sequence[Task], reply: bytes) -> tuple[list[Task], list[int]]:
    """The tasks as enqueue.lua stored them, and the positions of the events it held
    back, from its reply."""
    server_now, rows, held = msgspec.msgpack.decode(reply)
    now = float(server_now)
    stored = []
    for task, row in zip(tasks, rows, strict=True):
        error = None
        if type(row) is bytes:
            state = STATES[row]
        elif len(row) == 2:
            state, error = STATES[row[0]], decode_error(row[1])
        else:
            stored.append(decode_task(row))
            continue
        stored.append(_as_new(task, state, error, task.created_at or now))
    return stored, held


def _as_new(task: Task, state: TaskState, error: ErrorInfo | None, created: float) -> Task:
    """``task`` as an enqueue script stored it new: ``task`` itself when it says so already
    (no copy), else a copy with the stored state and created_at and no run yet."""
    if (
        error is None
        and task.state is state
        and task.created_at == created
        and task.attempts == 0
        and task.lease_owner is None
        and task.lease_token is None
        and task.lease_deadline is None
        and task.started_at is None
        and task.finished_at is None
        and task.error is None
    ):
        return task
    return msgspec.structs.replace(
        task,
        created_at=created,
        state=state,
        attempts=0,
        lease_owner=None,
        lease_token=None,
        lease_deadline=None,
        started_at=None,
        finished_at=None,
        error=error,
    )


def one_settings(prefix: str, events: RedisEventStorage | None) -> str:
    """enqueue_one.lua's settings, as Lua constants (see the script): what would
    otherwise be its first five arguments, and the keys built from them."""
    settings: list[Any] = events.append_settings() if events is not None else ["", "", 0, 0]
    e, cap, ttl, width = settings
    keys = [f"{e}:ev:n", f"{e}:ev:tx", f"{e}:ev", f"{prefix}:seq", f"{prefix}:queues"]
    return (
        f"P = {lua_string(prefix)}\n"
        f"local E, cap, ttl, width = {lua_string(e)}, {lua_string(str(cap))}, {int(ttl)}, "
        f"{int(width)}\n"
        f"local COUNT, BUCKETS, STREAM, SEQ, QUEUES = {', '.join(map(lua_string, keys))}\n"
    )


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal, every byte escaped (``\\ddd``)."""
    return "'" + "".join(f"\\{b:03d}" for b in text.encode()) + "'"


#: A task hash's header field (see prelude.lua) after its marker (``MARK``): created_at,
#: priority, delivery limit (``attempts_allowed``) and retentions as big-endian doubles.
_HEADER = struct.Struct(">ddddd")
#: The CRLF that ends one bulk string and the length line of the next (``$<n>``), by its
#: length, for the lengths most of enqueue_one.lua's arguments have
_ARG_LINES = [b"\r\n$%d\r\n" % n for n in range(1024)]


def _bulk(value: bytes) -> bytes:
    """``value`` as enqueue_one.lua's argument: its length line (after the CRLF that ends
    the argument before) and itself, for any length."""
    return b"\r\n$%d\r\n%b" % (len(value), value)


#: enqueue_one.lua's arguments that take few values, each made whole once (``_bulk``): a
#: priority, the task's state (``.value`` is a Python-level property of the enum), the
#: event's type, an absent time, and the start of the header (its length and marker).
_PRIORITY_ARGS = {p: _bulk(str(p).encode()) for p in range(PRIORITY_MIN, PRIORITY_MAX + 1)}
_STATE_ARGS = {state: _bulk(state.value.encode()) for state in TaskState}
_TYPE_ARGS = {kind: _bulk(kind.value.encode()) for kind in EventType}
_NO_ARG = _bulk(b"")
_HEAD_ARG = b"\r\n$%d\r\n%b" % (len(MARK) + _HEADER.size, MARK)
