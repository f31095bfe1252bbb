"""Redis-only behaviour: shared pool, foreign keys, connection errors, wake-ups, streams."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import textwrap
import time
from functools import partial
from typing import Any

import pytest
import redis

from omniq.config import mask_url
from omniq.errors import ConfigError, QueueError
from omniq.models import EventType, TaskResult, TaskState, encoder
from omniq.registry import registry
from omniq.testing import make_event, make_task, until
from omniq_backend_redis import ForeignKeyError, RedisUnavailableError, codec, reply
from omniq_backend_redis.connection import _SHARED
from omniq_backend_redis.events import RedisEventStorage

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["direct", "read"])
def reader_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways reply.py reads a reply off the stream: waiting on asyncio's
    StreamReader's own state (``direct``), and by its public ``read()``, as for any
    other reader (``read``)."""
    if request.param == "read":
        monkeypatch.setitem(reply._DIRECT, asyncio.StreamReader, False)
    return str(request.param)


def ref(url: str, prefix: str, **options: Any) -> dict[str, Any]:
    return {"backend": "redis", "url": url, "key_prefix": prefix, **options}


async def opened(kind: str, url: str, prefix: str, **options: Any) -> Any:
    store = registry.resolve(kind, ref(url, prefix, **options))  # type: ignore[arg-type]
    await store.open()
    return store


async def test_stores_on_one_server_share_one_pool(redis_url: str, key_prefix: str) -> None:
    before = len(_SHARED)
    stores = [
        await opened(k, redis_url, key_prefix)
        for k in ("task_queue", "result_storage", "event_storage")
    ]
    other_prefix = await opened("task_queue", redis_url, key_prefix + "-b")
    try:
        assert len({id(s.shared) for s in [*stores, other_prefix]}) == 1
        assert stores[0].shared.refs == 4
        assert len(_SHARED) == before + 1
    finally:
        for s in [*stores, other_prefix]:
            await s.close()
            await s.close()  # idempotent
    assert len(_SHARED) == before


async def test_enqueue_recorded_sends_tasks_and_events_together(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On one connection the events go with the enqueue script (append_many is called
    only for what the events script held back), also after the server lost its scripts."""
    queue = await opened("task_queue", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix)
    appended: list[list[str]] = []
    append_many = RedisEventStorage.append_many

    async def spy(self: RedisEventStorage, batch: Any) -> None:
        appended.append([e.task_id for e in batch])
        await append_many(self, batch)

    monkeypatch.setattr(RedisEventStorage, "append_many", spy)
    try:
        await queue.redis.script_flush()
        fresh, other = make_task(created_at=time.time()), make_task(created_at=time.time())
        await queue.enqueue(other)
        again = make_task(id=other.id, created_at=time.time())
        tasks = [fresh, again]
        recorded = [
            make_event(task_id=t.id, detail={"name": t.name, "state": "pending"}) for t in tasks
        ]
        stored = await queue.enqueue_recorded(tasks, recorded, events)
        assert [t.state for t in stored] == [TaskState.PENDING, TaskState.PENDING]
        assert appended == [[other.id]], "only the event of the task that existed went on its own"
        for task, event in zip(tasks, recorded, strict=True):
            assert [e.id for e in await events.query(task_id=task.id)] == [event.id]
    finally:
        await events.close()
        await queue.close()


async def test_a_single_enqueue_stores_what_the_batch_script_stores(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """delay()'s own script (enqueue_one.lua) writes the fields, indexes and event entry
    of the general one; what it hands back (an event older than the stream's last, an id
    that exists, a stream at its cap) is stored by the general script, event and all,
    without a second run of enqueue_one.lua."""
    queue = await opened("task_queue", redis_url, key_prefix)
    tried: list[str] = []
    enqueue_one = queue._enqueue_one

    async def counted(task: Any, *args: Any) -> Any:
        tried.append(task.id)
        return await enqueue_one(task, *args)

    monkeypatch.setattr(queue, "_enqueue_one", counted)
    events = await opened("event_storage", redis_url, key_prefix, max_events=3)
    r = queue.redis
    try:
        at = time.time()
        by_batch = make_task(created_at=at, eta=at + 60, expires_at=at + 120, priority=3)
        await queue.enqueue_recorded([by_batch, make_task(created_at=at)], [], None)
        one = make_task(created_at=at, eta=at + 60, expires_at=at + 120, priority=3)
        [stored] = await queue.enqueue_recorded([one], [], None)
        assert stored.state is TaskState.SCHEDULED
        fields = await r.hgetall(f"{key_prefix}:t:{one.id}")
        batch_fields = await r.hgetall(f"{key_prefix}:t:{by_batch.id}")
        assert fields.keys() == batch_fields.keys()
        assert float(fields[b"e"]) == float(batch_fields[b"e"]) == one.eta
        for key in ("q:default:delayed", "q:default:s:scheduled", "ttl"):
            assert await r.zscore(f"{key_prefix}:{key}", one.id) is not None, key
        assert (await queue.get(one.id)) == stored

        def recorded(task: Any, ts: float) -> Any:
            detail = {"name": task.name, "state": "pending"}
            return make_event(task_id=task.id, timestamp=ts, detail=detail)

        now = time.time()
        cases = [  # (task, event): new and on time; late; existing id; over the cap
            (make_task(created_at=now), now),
            (make_task(created_at=now), now - 30),
            (make_task(id=one.id, created_at=now), now + 1),
            (make_task(created_at=now), now + 2),
            (make_task(created_at=now), now + 3),
        ]
        first = await queue.enqueue_recorded([cases[0][0]], [recorded(*cases[0])], events)
        assert first[0].state is TaskState.PENDING
        for task, ts in cases[1:]:
            event = recorded(task, ts)
            tried.clear()
            [got] = await queue.enqueue_recorded([task], [event], events)
            assert tried == [task.id], "enqueue_one.lua runs once per single enqueue"
            assert (await queue.get(got.id)) is not None
            assert event.id in [e.id for e in await events.query(task_id=task.id)]
        assert (await queue.get(one.id)).state is TaskState.SCHEDULED, "the id kept its task"
        # (the cap trims whole stream nodes, none yet: the count still says every event)
        assert int(await r.get(f"{key_prefix}:ev:n")) == await r.xlen(f"{key_prefix}:ev") == 5
    finally:
        await events.close()
        await queue.close()


async def test_a_single_enqueue_packs_long_and_short_arguments_alike(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """enqueue_one.lua's arguments are packed by a table of length lines up to 1,023
    bytes, and longer ones (a big call, a big event) another way: either way the script
    alone stores the task and its event as given."""
    queue = await opened("task_queue", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix)

    async def general(*args: Any) -> Any:
        raise AssertionError("enqueue_one.lua handed the task back")
        yield  # pragma: no cover

    try:
        # (the stream's first event is the general script's: enqueue_one.lua needs it there)
        first = make_task(created_at=time.time())
        detail = {"name": first.name, "state": "pending"}
        event = make_event(task_id=first.id, timestamp=first.created_at, detail=detail)
        await queue.enqueue_recorded([first], [event], events)
        monkeypatch.setattr(queue, "_enqueue_all", general)
        for size in (4, 1023, 1024, 70_000):
            at = time.time()
            task = make_task(
                created_at=at, payload=bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            )
            detail = {"name": task.name, "state": "pending", "note": "n" * size}
            event = make_event(task_id=task.id, timestamp=at, detail=detail)
            [stored] = await queue.enqueue_recorded([task], [event], events)
            assert stored.state is TaskState.PENDING
            got = await queue.get(task.id)
            assert got is not None and got.payload == task.payload
            [said] = await events.query(task_id=task.id)
            assert said.id == event.id and said.detail == detail
    finally:
        await events.close()
        await queue.close()


async def test_a_single_enqueue_writes_its_event_with_any_sibling_storage(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delay() takes the event storage for one on its connection by a check of the
    usual case (a RedisEventStorage, its connection); any other sibling (a subclass)
    is found by _shares_home, and its event goes with the task just the same."""

    class Sub(RedisEventStorage):
        pass

    queue = await opened("task_queue", redis_url, key_prefix)
    plain = await opened("event_storage", redis_url, key_prefix)
    sub = Sub.from_url(f"{redis_url}?key_prefix={key_prefix}")
    await sub.open()
    appended: list[str] = []

    async def spy(self: RedisEventStorage, batch: Any) -> None:
        appended.extend(e.task_id for e in batch)

    monkeypatch.setattr(RedisEventStorage, "append_many", spy)
    try:
        for storage in (plain, sub):
            task = make_task(created_at=time.time())
            detail = {"name": task.name, "state": "pending"}
            event = make_event(task_id=task.id, timestamp=task.created_at, detail=detail)
            await queue.enqueue_recorded([task], [event], storage)
            assert [e.id for e in await storage.query(task_id=task.id)] == [event.id]
        assert appended == [], "every event went with its task"
    finally:
        await sub.close()
        await plain.close()
        await queue.close()


async def test_foreign_key_refuses_a_single_enqueue_with_nothing_written(
    redis_url: str, key_prefix: str
) -> None:
    """enqueue_one.lua checks by writing (see the script): a foreign key met after its
    first writes (a queue's ready set; an index bucket not listed yet) refuses the task
    with every key as it was, and the general script then names the key."""
    queue = await opened("task_queue", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix)
    r = queue.redis

    def recorded(task: Any, ts: float) -> Any:
        return make_event(
            task_id=task.id, timestamp=ts, detail={"name": task.name, "state": "pending"}
        )

    try:
        first = make_task(created_at=time.time())
        await queue.enqueue_recorded([first], [recorded(first, time.time())], events)
        await r.set(f"{key_prefix}:q:other:ready", b"not ours")
        later = time.time() + 3 * events.index_bucket_ms / 1000  # a bucket not listed yet
        bucket = f"{key_prefix}:ev:tx:{math.floor(later * 1000 / events.index_bucket_ms)}"
        await r.set(bucket, b"not ours")
        cases = [  # (task, its event's timestamp, the foreign key it meets)
            (make_task(queue="other", created_at=time.time()), time.time(), "q:other:ready"),
            (make_task(created_at=time.time()), later, bucket.split(":", 1)[1]),
        ]
        for task, ts, key in cases:
            before = await snapshot(r, key_prefix)
            with pytest.raises(ForeignKeyError, match=key):
                await queue.enqueue_recorded([task], [recorded(task, ts)], events)
            assert await snapshot(r, key_prefix) == before, key
    finally:
        await events.close()
        await queue.close()


async def test_a_command_larger_than_the_socket_takes_goes_whole(
    redis_url: str, key_prefix: str, reader_path: str
) -> None:
    """delay()'s command is written straight to the stream; one the socket does not take
    at once (a large payload) is drained before the reply is read, and the next call on
    the kept connection still gets its own reply."""
    queue = await opened("task_queue", redis_url, key_prefix)
    try:
        big = make_task(payload=b"x" * 16_000_000, created_at=time.time())
        small = make_task(created_at=time.time())
        for task in (big, small):
            [stored] = await queue.enqueue_recorded([task], [], None)
            assert stored.state is TaskState.PENDING
        assert (await queue.get(big.id)).payload == big.payload
        assert (await queue.get(small.id)).id == small.id
    finally:
        await queue.close()


async def test_a_reply_that_does_not_come_times_out_and_the_next_call_reconnects(
    redis_url: str, key_prefix: str, reader_path: str
) -> None:
    """delay()'s reply is read off the stream under one timer per connection (reply.py)
    instead of a timer per read: a server that stops answering still fails the read
    after socket_timeout, and the call after it gets its own reply on a new connection."""
    url = redis_url + ("&" if "?" in redis_url else "?") + "socket_timeout=0.2"
    queue = await opened("task_queue", url, key_prefix, retries=0, outage_timeout=0.1)
    admin = redis.Redis.from_url(redis_url)
    try:
        await queue.enqueue_recorded([make_task(created_at=time.time())], [], None)
        admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        try:
            with pytest.raises(RedisUnavailableError, match="Timeout reading"):
                await queue.enqueue_recorded([make_task(created_at=time.time())], [], None)
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        task = make_task(created_at=time.time())
        [stored] = await queue.enqueue_recorded([task], [], None)
        assert stored.state is TaskState.PENDING and (await queue.get(task.id)).id == task.id
        assert not queue.shared.deadlines._reads
    finally:
        admin.close()
        await queue.close()


async def test_an_error_reply_is_raised_and_the_connection_kept(
    redis_url: str, key_prefix: str, reader_path: str
) -> None:
    """An error reply read off the stream is redis-py's exception (a script the server
    lost comes back as NoScriptError, loaded again); an array reply, or one longer than
    a read, goes to redis-py's parser with what was read."""
    queue = await opened("task_queue", redis_url, key_prefix)
    admin = redis.Redis.from_url(redis_url)
    try:
        shared = queue.shared
        with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
            await shared.call_packed(None, b"*1\r\n$6\r\nNOSUCH\r\n")
        assert shared._kept is not None
        assert await shared.call_packed(None, b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n") == b"hi"
        assert await shared.call_packed(
            None, b"*3\r\n$4\r\nEVAL\r\n$15\r\nreturn {1, 'a'}\r\n$1\r\n0\r\n"
        ) == [1, b"a"]
        # A bulk string longer than one read (redis-py's parser reads on from what came),
        # then the empty string, nil and an integer: each call gets its own reply whole.
        big = bytes(range(256)) * 1024 + b"\r\n$3\r\nend"
        admin.set(f"{key_prefix}:big", big)
        key = f"{key_prefix}:big".encode()
        get = b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key)
        assert await shared.call_packed(None, get) == big
        assert await shared.call_packed(None, b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n") == b""
        assert await shared.call_packed(None, b"*2\r\n$3\r\nGET\r\n$2\r\nno\r\n") is None
        assert await shared.call_packed(None, b"*1\r\n$6\r\nDBSIZE\r\n") >= 1
        admin.delete(f"{key_prefix}:big")
        admin.script_flush()
        task = make_task(created_at=time.time())
        [stored] = await queue.enqueue_recorded([task], [], None)
        assert stored.state is TaskState.PENDING
        assert reply._DIRECT[asyncio.StreamReader] is (reader_path == "direct"), (
            "this Python's StreamReader has the state reply.py waits on directly"
        )
    finally:
        admin.script_load(queue.shared.script("enqueue").script)  # (a later test times it)
        admin.close()
        await queue.close()


def enqueued(tasks: list[Any]) -> list[Any]:
    return [make_event(task_id=t.id, detail={"name": t.name, "state": "pending"}) for t in tasks]


async def test_enqueue_batches_stores_a_batch_while_the_caller_builds(
    redis_url: str, key_prefix: str
) -> None:
    """Batch k reaches the server before the caller builds batch k + 1, and the batches'
    chain key is gone once the last one ran."""
    queue = await opened("task_queue", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix)
    batches = [[make_task(created_at=time.time()) for _ in range(3)] for _ in range(3)]
    probe = redis.Redis.from_url(redis_url)

    def build() -> Any:
        for number, batch in enumerate(batches):
            if number:
                key = f"{key_prefix}:t:{batches[number - 1][-1].id}"
                until(
                    partial(probe.exists, key),
                    f"batch {number} stored before batch {number + 1} is built",
                    deadline=10,
                    interval=0.005,
                )
            yield batch, enqueued(batch)

    try:
        stored = await queue.enqueue_batches(build(), events)
        assert [t.id for t in stored] == [t.id for batch in batches for t in batch]
        assert len(await events.query(types=[EventType.ENQUEUED])) == 9
        assert probe.keys(f"{key_prefix}:chain:*") == []
    finally:
        probe.close()
        await events.close()
        await queue.close()


async def test_a_refused_batch_stops_the_batches_after_it(redis_url: str, key_prefix: str) -> None:
    """A foreign key in batch 2 refuses it, and batch 3, though already sent, stores
    nothing: what is stored is batch 1, with its events, as the error's note says."""
    queue = await opened("task_queue", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix)
    one, two, three = ([make_task(created_at=time.time()) for _ in range(2)] for _ in range(3))
    await queue.redis.set(f"{key_prefix}:t:{two[1].id}", "not ours")
    try:
        with pytest.raises(ForeignKeyError) as caught:
            await queue.enqueue_batches([(b, enqueued(b)) for b in (one, two, three)], events)
        assert "the first 2 task(s) of this enqueue were stored" in "".join(caught.value.__notes__)
        others = [*one, two[0], *three]  # (two[1] is the foreign key)
        assert [await queue.get(t.id) is not None for t in others] == [True] * 2 + [False] * 3
        assert {e.task_id for e in await events.query()} == {t.id for t in one}
        assert await queue.redis.get(f"{key_prefix}:t:{two[1].id}") == b"not ours"
    finally:
        await events.close()
        await queue.close()


async def test_a_lapsed_chain_key_is_named(redis_url: str, key_prefix: str) -> None:
    """A batch whose predecessor ran but whose chain key is gone (more than 60 s between
    two batches) is not stored, and the error says why."""
    queue = await opened("task_queue", redis_url, key_prefix)
    first, second = [make_task(created_at=time.time())], [make_task(created_at=time.time())]
    probe = redis.Redis.from_url(redis_url)

    def build() -> Any:
        yield first, []
        chain = until(
            lambda: probe.keys(f"{key_prefix}:chain:*"),
            "the chain key",
            deadline=10,
            interval=0.005,
        )
        probe.delete(*chain)  # as if it had expired
        yield second, []

    try:
        with pytest.raises(
            QueueError, match="batch 2 of this enqueue was not stored: its chain key"
        ) as caught:
            await queue.enqueue_batches(build(), None)
        assert "the first 1 task(s) of this enqueue were stored" in "".join(caught.value.__notes__)
        assert await queue.get(first[0].id) is not None and await queue.get(second[0].id) is None
    finally:
        probe.close()
        await queue.close()


async def test_a_lease_scored_in_seconds_by_an_older_version_still_lapses(
    redis_url: str, key_prefix: str
) -> None:
    """P:running scores a lease in whole ms (rounded up) now; one an older version scored
    in seconds lapses all the same once due, and its task is delivered again."""
    queue = await opened("task_queue", redis_url, key_prefix)
    running = f"{key_prefix}:running"
    try:
        old, new = make_task(created_at=time.time()), make_task(created_at=time.time())
        await queue.enqueue_many([old, new])
        leased = {t.id: t for t in await queue.reserve(["default"], "w1", 60, limit=2)}
        deadline = leased[new.id].lease_deadline
        assert deadline is not None
        assert await queue.redis.zscore(running, new.id) == math.ceil(deadline * 1000)
        # as an older version wrote it: the deadline in seconds, here already past
        past = time.time() - 1
        await queue.redis.zadd(running, {old.id: past})
        await queue.redis.hset(f"{key_prefix}:t:{old.id}", "ld", repr(past))
        assert [t.id for t in await queue.release_expired_leases()] == [old.id]
        again = await queue.reserve(["default"], "w2", 60)
        assert [(t.id, t.attempts) for t in again] == [(old.id, 2)]
        assert await queue.release_expired_leases() == []  # the ms-scored leases hold
    finally:
        await queue.close()


async def test_foreign_task_key_is_named_and_left_alone(redis_url: str, key_prefix: str) -> None:
    queue = await opened("task_queue", redis_url, key_prefix)
    try:
        await queue.redis.set(f"{key_prefix}:t:taken", b"someone else's")
        await queue.redis.hset(f"{key_prefix}:t:hashy", mapping={"owner": "another app"})
        with pytest.raises(ForeignKeyError, match=f"'{key_prefix}:t:taken'.*string"):
            await queue.enqueue(make_task(id="taken"))
        with pytest.raises(ForeignKeyError, match=f"'{key_prefix}:t:hashy'.*marker"):
            await queue.enqueue_many([make_task(id="fine"), make_task(id="hashy")])
        assert await queue.redis.get(f"{key_prefix}:t:taken") == b"someone else's"
        assert await queue.redis.hgetall(f"{key_prefix}:t:hashy") == {b"owner": b"another app"}
        assert await queue.get("fine") is None  # nothing of the refused batch was written
        with pytest.raises(ForeignKeyError, match="taken"):
            await queue.get("taken")
        with pytest.raises(ForeignKeyError, match="hashy"):
            await queue.get("hashy")
    finally:
        await queue.close()


async def test_foreign_queue_key_refuses_a_batch_over_several_queues(
    redis_url: str, key_prefix: str
) -> None:
    """A batch of new tasks without parents skips the per-task look (enqueue.lua): the
    queue keys of every queue in it are still checked before anything is written."""
    queue = await opened("task_queue", redis_url, key_prefix)
    try:
        await queue.redis.set(f"{key_prefix}:q:second:s:pending", b"someone else's")
        batch = [make_task(id="one", queue="first"), make_task(id="two", queue="second")]
        with pytest.raises(ForeignKeyError, match=f"'{key_prefix}:q:second:s:pending'.*string"):
            await queue.enqueue_many(batch)
        assert await queue.get("one") is None
        assert await queue.redis.get(f"{key_prefix}:q:second:s:pending") == b"someone else's"
    finally:
        await queue.close()


async def test_foreign_global_key_fails_open(redis_url: str, key_prefix: str) -> None:
    queue = await opened("task_queue", redis_url, key_prefix)
    await queue.redis.set(f"{key_prefix}:running", b"x")
    await queue.close()
    store = registry.resolve("task_queue", ref(redis_url, key_prefix))
    with pytest.raises(ForeignKeyError, match=f"{key_prefix}:running.*string"):
        await store.open()


async def test_foreign_result_key_is_not_overwritten(redis_url: str, key_prefix: str) -> None:
    results = await opened("result_storage", redis_url, key_prefix)
    try:
        await results.redis.set(f"{key_prefix}:r:t1", b"not ours")
        with pytest.raises(ForeignKeyError, match=f"{key_prefix}:r:t1"):
            await results.set(TaskResult(task_id="t1", state=TaskState.SUCCEEDED))
        with pytest.raises(ForeignKeyError, match=f"{key_prefix}:r:t1"):
            await results.get("t1")
        with pytest.raises(ForeignKeyError):
            await results.delete("t1")
        assert await results.redis.get(f"{key_prefix}:r:t1") == b"not ours"
    finally:
        await results.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_down_server_error_names_url_without_password() -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{closed_port()}/0"
    store = registry.resolve("task_queue", {"backend": "redis", "url": url, "retries": 0})
    with pytest.raises(RedisUnavailableError) as info:
        await store.open()
    message = str(info.value)
    assert isinstance(info.value, QueueError)
    assert "hunter2secret" not in message and "hunter2secret" not in repr(store)
    assert f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in message and "***" in message


def test_bad_options_are_named() -> None:
    with pytest.raises(ConfigError, match="max_conections"):
        registry.resolve("task_queue", {"backend": "redis", "url": "redis://", "max_conections": 3})
    with pytest.raises(ConfigError, match="key_prefix"):
        registry.resolve("task_queue", "redis://localhost/0?key_prefix=bad*glob")
    with pytest.raises(ConfigError, match="max_connections=0"):
        registry.resolve(
            "task_queue", {"backend": "redis", "url": "redis://", "max_connections": 0}
        )


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("redis://:hunter2@localhost:99999/0", ["port '99999'", "1 to 65535"]),
        ("redis://:hunter2@localhost:notaport/0", ["port 'notaport'", "1 to 65535"]),
        ("redis://:hunter2@localhost:6379/abc", ["database 'abc'", ">= 0"]),
    ],
)
def test_bad_port_or_database_is_refused_at_configuration(url: str, names: list[str]) -> None:
    """Not at the first connection, and naming the store and the masked URL."""
    with pytest.raises(ConfigError) as info:
        registry.resolve("result_storage", url)
    text = str(info.value)
    assert "redis result storage" in text and mask_url(url) in text, text
    assert all(name in text for name in names) and "hunter2" not in text, text


def test_a_query_parameter_nobody_takes_is_named_before_connecting() -> None:
    """redis-py passes unknown query parameters to its connection class, which raised a
    TypeError only when the pool first connected."""
    with pytest.raises(ConfigError, match=r"unknown query parameter 'prefix'.*key_prefix") as info:
        registry.resolve("task_queue", "redis://:hunter2@localhost/0?prefix=app")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="database 'first'"):
        registry.resolve("task_queue", "redis://localhost/0?db=first")
    store = registry.resolve("task_queue", "redis://localhost/0?socket_timeout=2&key_prefix=app")
    assert store.prefix == "app"


async def test_wait_for_work_wakes_on_enqueue_from_another_connection(
    redis_url: str, key_prefix: str
) -> None:
    waiter = await opened("task_queue", redis_url, key_prefix)
    # A different pool option gives the producer its own connections.
    producer = await opened("task_queue", redis_url, key_prefix, max_connections=7)
    try:
        assert waiter.shared is not producer.shared
        await waiter.wait_for_work(["other", "jobs"], 0.01)  # the first call subscribes
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(waiter.wait_for_work(["other", "jobs"], 30.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await producer.enqueue(make_task(queue="jobs"))
        await asyncio.wait_for(waiting, 5.0)
        assert loop.time() - started < 5.0
        assert [t.queue for t in await waiter.reserve(["jobs"], "w", 30.0, 10)] == ["jobs"]
    finally:
        await waiter.close()
        await producer.close()


async def test_wait_for_work_wakes_when_a_delayed_task_falls_due(
    redis_url: str, key_prefix: str
) -> None:
    queue = await opened("task_queue", redis_url, key_prefix)
    try:
        await queue.wait_for_work(["d"], 0.01)
        await queue.enqueue(make_task(queue="d", eta=(await queue.now()) + 0.3))
        await queue.wait_for_work(["d"], 0.01)  # consume the enqueue's wake-up
        loop = asyncio.get_running_loop()
        started = loop.time()
        await queue.wait_for_work(["d"], 30.0)
        assert loop.time() - started < 5.0
        assert len(await queue.reserve(["d"], "w", 30.0)) == 1
    finally:
        await queue.close()


async def test_a_wait_after_a_draining_reserve_sends_no_check(
    redis_url: str, key_prefix: str
) -> None:
    """The reserve that drained the queue said when its delayed task is due: the wait
    after it sleeps until then without a wait_check.lua of its own."""
    queue = await opened("task_queue", redis_url, key_prefix)
    try:
        await queue.wait_for_work(["d"], 0.01)  # the first call subscribes
        due = (await queue.now()) + 0.4
        await queue.enqueue_many([make_task(queue="d"), make_task(queue="d", eta=due)])
        # (the batch's one wake-up, which the wait below takes)
        await asyncio.wait_for(queue._wake[("d",)].wait(), 5.0)
        await queue.wait_for_work(["d"], 5.0)
        assert len(await queue.reserve(["d"], "w", 30.0, 10)) == 1
        sent: list[bytes] = []
        call = queue.shared.call_packed

        async def counted(script: Any, packed: bytes) -> Any:
            sent.append(packed)
            return await call(script, packed)

        queue.shared.call_packed = counted
        try:
            await queue.wait_for_work(["d"], 30.0)
        finally:
            del queue.shared.call_packed
        assert sent == []
        assert await queue.now() >= due - 0.01  # it slept until the eta, not the timeout
        assert len(await queue.reserve(["d"], "w", 30.0, 10)) == 1
    finally:
        await queue.close()


async def test_results_wait_wakes_on_set(redis_url: str, key_prefix: str) -> None:
    reader = await opened("result_storage", redis_url, key_prefix)
    writer = await opened("result_storage", redis_url, key_prefix, max_connections=7)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(reader.wait("t-42", 30.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await writer.set(TaskResult(task_id="t-42", state=TaskState.SUCCEEDED, value=b"\x01"))
        result = await asyncio.wait_for(waiting, 5.0)
        assert result is not None and result.value == b"\x01"
        assert loop.time() - started < 5.0
        assert await reader.wait("missing", 0.05) is None
    finally:
        await reader.close()
        await writer.close()


async def test_a_small_result_rides_in_its_notification(redis_url: str, key_prefix: str) -> None:
    reader = await opened("result_storage", redis_url, key_prefix)
    writer = await opened("result_storage", redis_url, key_prefix, max_connections=7)
    listener = redis.Redis.from_url(redis_url).pubsub()
    listener.subscribe(f"{key_prefix}:rn")
    try:
        small = TaskResult(task_id="small", state=TaskState.SUCCEEDED, value=b"\x01")
        large = TaskResult(task_id="large", state=TaskState.SUCCEEDED, value=b"x" * 5000)
        waiting = [asyncio.create_task(reader.wait(r.task_id, 30.0)) for r in (small, large)]
        await asyncio.sleep(0.05)
        await writer.set_many([small, large])
        got = await asyncio.wait_for(asyncio.gather(*waiting), 5.0)
        assert [r.value for r in got] == [small.value, large.value]
        messages: list[bytes] = []
        deadline = time.monotonic() + 5
        while len(messages) < 2 and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.1)
            if message is not None and message["type"] == "message":
                messages.append(message["data"])
        stored = redis.Redis.from_url(redis_url).get(f"{key_prefix}:r:small")
        assert messages == [b"small " + stored, b"large"]  # a large one is read back
        expired = TaskResult(task_id="old", state=TaskState.SUCCEEDED, expires_at=time.time() - 1)
        assert reader._noted("old", b"OQR1" + encoder.encode(expired)) is None
    finally:
        listener.close()
        await reader.close()
        await writer.close()


async def test_results_expire_natively(redis_url: str, key_prefix: str) -> None:
    results = await opened("result_storage", redis_url, key_prefix)
    try:
        now = await results.now()
        await results.set(
            TaskResult(task_id="soon", state=TaskState.SUCCEEDED, expires_at=now + 60)
        )
        ttl_ms = await results.redis.pttl(f"{key_prefix}:r:soon")
        assert 55_000 < ttl_ms <= 60_001  # PXAT rounds up to the next ms: never early
        await results.set(TaskResult(task_id="gone", state=TaskState.SUCCEEDED, expires_at=now - 1))
        assert await results.get("gone") is None
    finally:
        await results.close()


async def test_stream_is_capped_by_events_not_entries(redis_url: str, key_prefix: str) -> None:
    """max_events counts events, also those that share an entry: an append over the cap
    drops as many of the oldest entries (whole stream nodes), a group with all its
    events, and the count learns what went without reading it."""
    events = await opened("event_storage", redis_url, key_prefix, max_events=100)
    try:
        for batch in range(10):  # one entry of 50 events (one timestamp), then 30 of one
            await events.append_many(
                [
                    make_event(task_id=f"g{batch}-{i}", timestamp=1000.0 + batch * 100)
                    for i in range(50)
                ]
            )
            await events.append_many(
                [
                    make_event(task_id=f"s{batch}-{i}", timestamp=1050.0 + batch * 100 + i)
                    for i in range(30)
                ]
            )
            kept = await events.query(limit=None)
            assert int(await events.redis.get(f"{key_prefix}:ev:n")) == len(kept)
            assert min(80 * (batch + 1), 100 - 49) <= len(kept) < 200  # short by a group at most
        assert kept[-1].task_id == "s9-29"
        assert 30 < await events.redis.xlen(f"{key_prefix}:ev") < len(kept)
        groups = await events.redis.zrange(f"{key_prefix}:ev:g", 0, -1)
        assert groups and all(member.endswith(b" 50") for member in groups)
        assert len(groups) == len({e.timestamp for e in kept if e.task_id.startswith("g")})
    finally:
        await events.close()


async def test_stream_deleted_behind_our_back_starts_a_new_count(
    redis_url: str, key_prefix: str
) -> None:
    """A count left from a stream someone deleted does not trim away what comes next."""
    events = await opened("event_storage", redis_url, key_prefix, max_events=100)
    try:
        await events.append_many([make_event(timestamp=1000.0) for _ in range(90)])
        await events.redis.delete(f"{key_prefix}:ev")
        await events.append_many([make_event(timestamp=1001.0 + i) for i in range(20)])
        assert len(await events.query(limit=None)) == 20
        assert int(await events.redis.get(f"{key_prefix}:ev:n")) == 20
        assert await events.redis.zcard(f"{key_prefix}:ev:g") == 0
    finally:
        await events.close()


async def test_events_sharing_time_queue_and_type_share_an_entry(
    redis_url: str, key_prefix: str
) -> None:
    """A bulk's events are one stream entry (one XADD), read back one by one: by time,
    type and task, and counted one by one by cleanup."""
    events = await opened("event_storage", redis_url, key_prefix)
    try:
        bulk = [make_event(timestamp=1000.0) for _ in range(600)]  # over GROUP_MAX: two entries
        other = make_event(task_id=bulk[7].task_id, timestamp=1000.0, type=EventType.STARTED)
        await events.append_many([*bulk, other, make_event(timestamp=1001.0)])
        assert await events.redis.xlen(f"{key_prefix}:ev") == 4
        assert await events.query(task_id=bulk[7].task_id) == [bulk[7], other]
        assert await events.query(task_id=bulk[550].task_id) == [bulk[550]]
        assert sorted(
            e.id for e in await events.query(until=1000.5, types=["enqueued"], limit=None)
        ) == sorted(e.id for e in bulk)
        assert len(await events.query(since=1000.0, limit=10, order="desc")) == 10
        assert await events.cleanup(1000.5) == 601
        assert [e.timestamp for e in await events.query()] == [1001.0]
        assert int(await events.redis.get(f"{key_prefix}:ev:n")) == 1
        assert await events.redis.zcard(f"{key_prefix}:ev:g") == 0
    finally:
        await events.close()


async def test_query_with_a_limit_reads_about_that_many_entries(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The latest few events cost a read of a few entries, not of 500 bulk groups; a
    filter that skips entries makes the next reads larger until the limit is met."""
    events = await opened("event_storage", redis_url, key_prefix)
    reads: list[int] = []
    for name in ("xrange", "xrevrange"):
        method = getattr(type(events.redis), name)

        async def spy(self: Any, *args: Any, _method: Any = method, **kwargs: Any) -> Any:
            reads.append(kwargs["count"])
            return await _method(self, *args, **kwargs)

        monkeypatch.setattr(type(events.redis), name, spy)
    try:
        for g in range(40):
            await events.append_many([make_event(timestamp=1000.0 + g) for _ in range(100)])
        latest = await events.query(order="desc", limit=10)
        assert {e.timestamp for e in latest} == {1039.0} and len(latest) == 10
        assert reads == [16]
        reads.clear()
        await events.append_many(
            [
                make_event(
                    timestamp=2000.0 + i,
                    type=EventType.STARTED if i % 4 == 0 else EventType.SUCCEEDED,
                )
                for i in range(400)
            ]
        )
        started = await events.query(since=2000.0, types=["started"], limit=50)
        assert [e.timestamp for e in started] == [2000.0 + 4 * i for i in range(50)]
        assert reads == [50, 100, 200]
    finally:
        await events.close()


async def test_cleanup_counts_a_group_appended_late(redis_url: str, key_prefix: str) -> None:
    events = await opened("event_storage", redis_url, key_prefix)
    try:
        await events.append_many([make_event(timestamp=2000.0)])
        await events.append_many([make_event(timestamp=1500.0) for _ in range(3)])  # id of 2000 s
        assert await events.cleanup(1600.0) == 3
        assert [e.timestamp for e in await events.query()] == [2000.0]
        assert int(await events.redis.get(f"{key_prefix}:ev:n")) == 1
        assert await events.redis.zcard(f"{key_prefix}:ev:g") == 0
    finally:
        await events.close()


async def test_events_appended_late_are_found_by_time_and_cleaned(
    redis_url: str, key_prefix: str
) -> None:
    events = await opened("event_storage", redis_url, key_prefix)
    try:
        await events.append_many([make_event(task_id="a", timestamp=2000.0)])
        # Appended after a newer event: its stream id is later than its timestamp.
        await events.append_many(
            [make_event(task_id="b", timestamp=1500.0, type=EventType.STARTED)]
        )
        assert [e.task_id for e in await events.query(until=1600.0)] == ["b"]
        assert [e.task_id for e in await events.query(since=1600.0)] == ["a"]
        assert [e.task_id for e in await events.query(order="asc")] == ["b", "a"]
        assert [e.task_id for e in await events.query(types=["started"])] == ["b"]
        assert await events.cleanup(1600.0) == 1
        assert [e.task_id for e in await events.query()] == ["a"]
    finally:
        await events.close()


async def test_task_index_keeps_a_bucket_per_period_and_frees_old_ones(
    redis_url: str, key_prefix: str
) -> None:
    """A task's events are found across index buckets; a bucket past task_index_ttl is
    freed by the next append, and cleanup frees the buckets of the events it drops."""
    events = await opened("event_storage", redis_url, key_prefix, task_index_ttl=64)
    assert events.index_bucket_ms == 1000  # 64 s / 256, at least one second
    try:
        first = [
            make_event(task_id="a", timestamp=1000.2),
            make_event(task_id="b", timestamp=1000.4),
            make_event(task_id="a", timestamp=1000.6, type=EventType.STARTED),
        ]
        await events.append_many(first)
        later = make_event(task_id="a", timestamp=1003.0, type=EventType.SUCCEEDED)
        await events.append_many([later])
        assert await events.redis.zrange(f"{key_prefix}:ev:tx", 0, -1) == [b"1000", b"1003"]
        assert await events.query(task_id="a") == [first[0], first[2], later]
        # 1003 + 64 s later: every entry of bucket 1000 is past the ttl, 1003's is not yet.
        await events.append_many([make_event(task_id="c", timestamp=1066.5)])
        assert await events.redis.zrange(f"{key_prefix}:ev:tx", 0, -1) == [b"1003", b"1066"]
        assert not await events.redis.exists(f"{key_prefix}:ev:tx:1000")
        assert await events.query(task_id="a") == [later]  # the index forgot the older two
        assert len(await events.query(queue=first[0].queue)) == 5  # the stream did not
        assert await events.cleanup(1066.0) == 4
        assert await events.redis.zrange(f"{key_prefix}:ev:tx", 0, -1) == [b"1066"]
        assert not await events.redis.exists(f"{key_prefix}:ev:tx:1003")
    finally:
        await events.close()


async def test_a_single_enqueue_indexes_its_event_by_bucket_and_frees_old_ones(
    redis_url: str, key_prefix: str
) -> None:
    """enqueue_one.lua, with its settings as constants of its own script, files its
    event in the bucket of the event's time (bucket width from task_index_ttl) and frees
    the buckets past the ttl when it starts a new one."""
    queue = await opened("task_queue", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix, task_index_ttl=64)
    assert events.index_bucket_ms == 1000
    try:
        tasks = [make_task(created_at=time.time()) for _ in range(2)]
        recorded = [
            make_event(task_id=t.id, timestamp=at, detail={"name": t.name, "state": "pending"})
            for t, at in zip(tasks, (1000.2, 1066.5), strict=True)
        ]
        await queue.enqueue_recorded(tasks[:1], recorded[:1], events)  # (makes the stream)

        async def general(*args: Any) -> Any:
            raise AssertionError("enqueue_one.lua handed the task back")
            yield

        queue._enqueue_all = general
        [stored] = await queue.enqueue_recorded(tasks[1:], recorded[1:], events)
        assert stored.state is TaskState.PENDING
        assert await events.redis.zrange(f"{key_prefix}:ev:tx", 0, -1) == [b"1066"]
        assert not await events.redis.exists(f"{key_prefix}:ev:tx:1000")
        assert await events.query(task_id=tasks[1].id) == [recorded[1]]
        assert await events.query(task_id=tasks[0].id) == []  # its bucket was freed
    finally:
        await events.close()
        await queue.close()


def test_a_setting_reaches_lua_as_it_is(redis_url: str) -> None:
    """enqueue_one.lua's settings are Lua literals of any prefix (quotes, backslashes,
    digits after an escape, non-ASCII)."""
    from omniq_backend_redis.queue import lua_string

    admin = redis.Redis.from_url(redis_url)
    try:
        for text in ["", "omniq", "a'b\"c\\d\n1", "\x001", "pré:fix"]:
            assert admin.eval(f"return {lua_string(text)}", 0) == text.encode()
    finally:
        admin.close()


async def test_foreign_index_bucket_is_named(redis_url: str, key_prefix: str) -> None:
    events = await opened("event_storage", redis_url, key_prefix)
    bucket = f"{key_prefix}:ev:tx:{int(1000.0 * 1000) // events.index_bucket_ms}"
    await events.redis.set(bucket, "not ours")
    try:
        with pytest.raises(ForeignKeyError, match=bucket):
            await events.append_many([make_event(task_id="a", timestamp=1000.0)])
        assert await events.redis.get(bucket) == b"not ours"
        assert await events.query() == []  # nothing written
    finally:
        await events.close()


@pytest.mark.parametrize("key", ["ev:n", "ev:late", "bucket"])
async def test_foreign_event_key_refuses_an_enqueue_before_its_tasks(
    redis_url: str, key_prefix: str, key: str
) -> None:
    """The enqueue script writes tasks and events: an event key holding what is not ours
    stops it before the first task is stored."""
    queue = await opened("task_queue", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix)
    if key == "bucket":
        key = f"ev:tx:{int(1000.0 * 1000) // events.index_bucket_ms}"
        await events.redis.rpush(f"{key_prefix}:{key}", "not ours")
    else:
        await events.redis.set(f"{key_prefix}:{key}", "not ours")
    tasks = [make_task(), make_task()]
    try:
        with pytest.raises(ForeignKeyError, match=f"{key_prefix}:{key}"):
            await queue.enqueue_recorded(
                tasks, [make_event(task_id=t.id, timestamp=1000.0) for t in tasks], events
            )
        assert [await queue.get(t.id) for t in tasks] == [None, None]
        assert await events.redis.xlen(f"{key_prefix}:ev") == 0
    finally:
        await events.close()
        await queue.close()


async def test_enqueue_many_sends_shared_and_differing_fields_alike(
    redis_url: str, key_prefix: str
) -> None:
    """The batch travels as columns (one value when every task shares it, else a list):
    a batch where every field differs somewhere stores each task exactly as given."""
    queue = await opened("task_queue", redis_url, key_prefix)
    try:
        parent = (await queue.enqueue_many([make_task()]))[0]
        now = await queue.now()
        batch = [
            make_task(queue="c1", priority=1, created_at=now - 5),
            make_task(
                queue="c2",
                priority=7,
                eta=now + 3600,
                expires_at=now + 7200,
                result_ttl=60.5,
                payload=b"\x00" * 300,
                max_retries=9,
            ),
            make_task(
                queue="c1", priority=0, depends_on=(parent.id,), dead_ttl=1.25, max_deliveries=2
            ),
            make_task(queue="c1", priority=1, created_at=0.0),
        ]
        stored = await queue.enqueue_many(batch)
        assert [t.state for t in stored] == [
            TaskState.PENDING,
            TaskState.SCHEDULED,
            TaskState.WAITING,
            TaskState.PENDING,
        ]
        assert stored[3].created_at >= now  # 0 means: the server's now
        for given, answer in zip(batch, stored, strict=True):
            got = await queue.get(given.id)
            assert got == answer
            for field in (
                "queue",
                "priority",
                "eta",
                "expires_at",
                "payload",
                "result_ttl",
                "dead_ttl",
                "max_retries",
                "max_deliveries",
                "depends_on",
            ):
                assert getattr(got, field) == getattr(given, field), field
        # Each queue got its own tasks, highest priority first.
        reserved = await queue.reserve(["c1"], "w", 30, limit=5)
        assert [t.id for t in reserved] == [batch[0].id, batch[3].id]
    finally:
        await queue.close()


async def test_events_with_differing_times_and_types_keep_theirs(
    redis_url: str, key_prefix: str
) -> None:
    events = await opened("event_storage", redis_url, key_prefix)
    try:
        batch = [
            make_event(timestamp=1000.25, type=EventType.STARTED, queue="e1"),
            make_event(timestamp=1000.25, type=EventType.SUCCEEDED, queue="e1"),
            make_event(timestamp=999.5, type=EventType.FAILED, queue="e2"),
        ]
        await events.append_many(batch)
        found = await events.query(since=0)
        assert sorted(found, key=lambda e: e.id) == sorted(batch, key=lambda e: e.id)
        for e in batch:
            assert await events.query(task_id=e.task_id) == [e]
    finally:
        await events.close()


async def test_a_batch_larger_than_one_argument_travels_in_several(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis refuses an argument over 512 MB, which a batch of large payloads can pass:
    the encoded items go in runs of at most codec.BLOB_BYTES (here made tiny)."""
    monkeypatch.setattr(codec, "BLOB_BYTES", 1000)
    bodies = [bytes([i]) * (100 + 150 * i) for i in range(10)]
    runs = codec.blobs(bodies)
    assert b"".join(runs) == b"".join(bodies) and len(runs) > 3
    assert all(len(r) <= 1000 or r in bodies for r in runs)  # a larger item goes alone

    queue = await opened("task_queue", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix)
    try:
        batch = [make_task(payload=body) for body in bodies]
        await queue.enqueue_many(batch)
        for task in batch:
            got = await queue.get(task.id)
            assert got is not None and got.payload == task.payload
        appended = [make_event(detail={"pad": "x" * (120 * i)}) for i in range(12)]
        await events.append_many(appended)
        for event in appended:
            assert await events.query(task_id=event.task_id) == [event]
    finally:
        await queue.close()
        await events.close()


def test_a_sync_app_never_closed_exits_quietly(
    redis_url: str, key_prefix: str, tmp_path: Any
) -> None:
    """A program that waits for a result (the pub/sub listener runs) and never closes
    its app: the app is closed at interpreter exit, so nothing is destroyed mid-flight."""
    script = tmp_path / "never_closed.py"
    script.write_text(
        textwrap.dedent(f"""
        from omniq import OmniQ
        from omniq.errors import ResultTimeoutError

        app = OmniQ({redis_url + "?key_prefix=" + key_prefix!r})

        @app.task
        def add(x: int, y: int) -> int:
            return x + y

        ref = add.delay(1, 2)
        try:
            app.get_result(ref, timeout=0.2)
        except ResultTimeoutError:
            print("waited")
    """)
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=15)
    assert proc.returncode == 0 and proc.stdout == "waited\n", proc.stderr
    assert proc.stderr == ""


async def reserved(queue: Any, n: int) -> list[Any]:
    """n new tasks on the default queue, reserved (one lease, a token each)."""
    for _ in range(n):
        await queue.enqueue(make_task(created_at=time.time()))
    got = await queue.reserve(["default"], "w1", 60, n)
    assert len(got) == n
    return got


async def snapshot(r: Any, prefix: str) -> dict[bytes, Any]:
    """Every key of ``prefix`` and what it holds (a hash by its fields: a read may move a
    large hash's rehashing on, which changes its DUMP but not what it holds)."""
    out = {}
    for key in await r.keys(f"{prefix}:*"):
        hashed = await r.type(key) == b"hash"
        out[key] = await r.hgetall(key) if hashed else await r.dump(key)
    return out


def finished(task: Any, at: float, *types: EventType) -> tuple[Any, Any, list[Any]]:
    """A succeeded completion of ``task`` with its result and events at ``at``, ``at`` + 1 ms..."""
    result = TaskResult(task_id=task.id, state=TaskState.SUCCEEDED, value=b"1", finished_at=at)
    events = [
        make_event(task_id=task.id, timestamp=at + i / 1000, type=t) for i, t in enumerate(types)
    ]
    return (task.id, task.lease_token, TaskState.SUCCEEDED, None), result, events


async def test_a_single_finish_stores_what_the_general_script_stores(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finish_one.lua (one task's completion, result and events) writes the fields,
    indexes, result and events finish.lua writes for a task finished in a batch; what it
    hands back (an event older than the stream's last) finish.lua stores, event and all;
    a lost lease is refused with nothing written."""
    queue = await opened("task_queue", redis_url, key_prefix)
    results = await opened("result_storage", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix)
    r = queue.redis
    handed: list[bool | None] = []
    finish_one = queue._finish_one

    async def counted(*args: Any) -> Any:
        handed.append(await finish_one(*args))
        return handed[-1]

    monkeypatch.setattr(queue, "_finish_one", counted)
    types = (EventType.STARTED, EventType.SUCCEEDED)
    try:
        await events.append_many([make_event(task_id="x", timestamp=time.time() - 1)])
        a, b, c = await reserved(queue, 3)
        now = time.time()
        one = finished(a, now, *types)
        assert await queue.finish_many([one[0]], [one[1]], one[2], results, events) == [True]
        assert handed == [True]
        two, three = finished(b, now, *types), finished(c, now, *types)
        batch = await queue.finish_many(
            [two[0], three[0]], [two[1], three[1]], two[2] + three[2], results, events
        )
        assert batch == [True, True] and handed == [True]
        alone = await r.hgetall(f"{key_prefix}:t:{a.id}")
        assert alone.keys() == (await r.hgetall(f"{key_prefix}:t:{b.id}")).keys()
        assert alone[b"s"] == b"succeeded" and alone[b"lt"] == b""
        for key in ("done", "q:default:s:succeeded"):
            assert await r.zscore(f"{key_prefix}:{key}", a.id) is not None, key
        for key in ("running", "q:default:s:running"):
            assert await r.zscore(f"{key_prefix}:{key}", a.id) is None, key
        assert (await results.get(a.id)).value == b"1"
        assert [e.id for e in await events.query(task_id=a.id)] == [e.id for e in one[2]]
        assert int(await r.get(f"{key_prefix}:ev:n")) == await r.xlen(f"{key_prefix}:ev") == 7

        # A late event: handed back, then stored by finish.lua.
        [d] = await reserved(queue, 1)
        late = finished(d, now - 30, *types)
        assert await queue.finish_many([late[0]], [late[1]], late[2], results, events) == [True]
        assert handed[-1] is None
        assert [e.id for e in await events.query(task_id=d.id)] == [e.id for e in late[2]]
        assert (await queue.get(d.id)).state is TaskState.SUCCEEDED

        # A lost lease (a stale token): refused, nothing of the attempt written.
        [e] = await reserved(queue, 1)
        stale = finished(e, time.time(), *types)
        stale = ((e.id, "not-the-token", TaskState.SUCCEEDED, None), stale[1], stale[2])
        before = await snapshot(r, key_prefix)
        assert await queue.finish_many([stale[0]], [stale[1]], stale[2], results, events) == [False]
        assert handed[-1] is False
        assert await snapshot(r, key_prefix) == before
    finally:
        await events.close()
        await results.close()
        await queue.close()


async def test_foreign_key_refuses_a_single_finish_with_nothing_written(
    redis_url: str, key_prefix: str
) -> None:
    """finish_one.lua meets a foreign index bucket after its first writes (the count, the
    bucket list): it takes them back and finish.lua then names the key."""
    queue = await opened("task_queue", redis_url, key_prefix)
    results = await opened("result_storage", redis_url, key_prefix)
    events = await opened("event_storage", redis_url, key_prefix)
    r = queue.redis
    try:
        await events.append_many([make_event(task_id="x", timestamp=time.time())])
        [a] = await reserved(queue, 1)
        later = time.time() + 3 * events.index_bucket_ms / 1000  # a bucket not listed yet
        bucket = f"{key_prefix}:ev:tx:{math.floor(later * 1000 / events.index_bucket_ms)}"
        await r.set(bucket, b"not ours")
        item, result, evs = finished(a, later, EventType.SUCCEEDED)
        before = await snapshot(r, key_prefix)
        with pytest.raises(ForeignKeyError, match=bucket.split(":", 1)[1]):
            await queue.finish_many([item], [result], evs, results, events)
        assert await snapshot(r, key_prefix) == before
    finally:
        await events.close()
        await results.close()
        await queue.close()


async def expected_flushed(results: Any) -> None:
    """Return once the results listener has handled every notification published before
    this call: a result set under an expected id is seen only by its notification."""
    results.expect("flush")
    await results.set(TaskResult(task_id="flush", state=TaskState.SUCCEEDED, value=b"f"))
    assert await results.wait("flush", 5.0) is not None


async def test_an_expected_result_is_caught_without_a_read_and_a_fenced_one_never(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result expected before its task was enqueued (the app's fresh ids) comes from
    its notification with no read before the wait sleeps; the refused finish of an
    attempt that lost its lease publishes nothing, so the waiter never sees its value."""
    queue = await opened("task_queue", redis_url, key_prefix)
    results = await opened("result_storage", redis_url, key_prefix)
    try:
        assert await results.wait("warm-up", 0.0) is None  # subscribes to the results
        reads: list[list[str]] = []
        read = results._get_many

        async def counted(task_ids: Any) -> Any:
            reads.append(list(task_ids))
            return await read(task_ids)

        monkeypatch.setattr(results, "_get_many", counted)
        task = make_task(created_at=time.time())
        results.expect(task.id)
        await queue.enqueue(task)
        [held] = await queue.reserve(["default"], "w1", 60, 1)
        waiting = asyncio.create_task(results.wait(task.id, 30.0))
        late = TaskResult(task_id=task.id, state=TaskState.SUCCEEDED, value=b"late")
        refused = (task.id, "another-token", TaskState.SUCCEEDED, None)
        assert await queue.finish_many([refused], [late], [], results, None) == [False]
        await expected_flushed(results)
        assert not waiting.done()  # the late value was never published
        ok = TaskResult(task_id=task.id, state=TaskState.SUCCEEDED, value=b"ok")
        accepted = (task.id, held.lease_token, TaskState.SUCCEEDED, None)
        assert await queue.finish_many([accepted], [ok], [], results, None) == [True]
        got = await asyncio.wait_for(waiting, 5.0)
        assert got is not None and got.value == b"ok"
        assert reads == []
        # A result that came before its wait was caught all the same.
        results.expect("early")
        await results.set(TaskResult(task_id="early", state=TaskState.SUCCEEDED, value=b"e"))
        await expected_flushed(results)
        got = await results.wait("early", 5.0)
        assert got is not None and got.value == b"e" and reads == []
        # With no time to wait, an expected result not yet caught is read.
        results.expect("now")
        assert await results.wait("now", 0.0) is None and reads == [["now"]]
    finally:
        await queue.close()
        await results.close()


async def test_expectations_are_bounded_oldest_first(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer that never waits keeps at most EXPECTED_MAX expectations; the wait for
    one let go reads first, as without an expectation, and so does one made before the
    results channel was subscribed (nothing caught it)."""
    from omniq_backend_redis import results as results_module

    monkeypatch.setattr(results_module, "EXPECTED_MAX", 2)
    results = await opened("result_storage", redis_url, key_prefix)
    try:
        notifier = results.shared.notifier
        channel = f"{key_prefix}:rn".encode()
        results.expect("before-subscribing")
        assert notifier.caught(channel, b"before-subscribing") == (False, None)
        assert await results.wait("warm-up", 0.0) is None
        for task_id in ("a", "b", "c"):
            results.expect(task_id)
        assert list(notifier._expected[channel]) == [b"b", b"c"]
        await results.set(TaskResult(task_id="a", state=TaskState.SUCCEEDED, value=b"a"))
        got = await results.wait("a", 5.0)  # read: its expectation was let go
        assert got is not None and got.value == b"a"
        notifier._wake_all()  # (what a reconnect does): an expectation not met says look
        assert notifier.caught(channel, b"b") == (True, b"")
    finally:
        await results.close()


async def test_a_stop_ends_the_workers_wait_for_work_and_a_cancel_still_cancels(
    redis_url: str, key_prefix: str
) -> None:
    """The reserve loop awaits the wait for work itself: request_stop cancels that wait
    (the worker stops without waiting out poll_interval), and a cancellation from outside
    is not taken for the stop's."""
    from omniq import AsyncOmniQ
    from omniq.testing.polling import eventually

    url = f"{redis_url}?key_prefix={key_prefix}"
    async with AsyncOmniQ(task_queue=url, result_storage=url, event_storage=url) as app:

        @app.task
        async def noop() -> None:
            pass

        for stop in (True, False):
            worker = app.worker(pool="async", poll_interval=60.0)
            running = asyncio.create_task(worker.run(install_signals=False))
            ref = await noop.delay()
            await app.get_result(ref, timeout=10)

            async def sleeping(worker: Any = worker) -> bool:
                return worker._waiting is not None

            await eventually(sleeping, "the worker never slept in its wait for work")
            started = time.monotonic()
            if stop:
                worker.request_stop("test")
                await asyncio.wait_for(running, 10)
            else:
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(running, 10)
            assert time.monotonic() - started < 10
            assert worker._waiting is None


async def test_a_stop_requested_during_a_reserve_is_not_waited_out(
    redis_url: str, key_prefix: str
) -> None:
    """A stop (a signal, max-tasks) that lands while the reserve's round trip is out
    ends the worker at once: the wait for work after that reserve has nothing to cancel
    it yet, so it must not start (it would sleep up to poll_interval)."""
    import redis.asyncio as aioredis

    from omniq import AsyncOmniQ
    from omniq.testing.polling import eventually

    url = f"{redis_url}?key_prefix={key_prefix}"
    publisher = aioredis.Redis.from_url(redis_url)
    async with AsyncOmniQ(task_queue=url, result_storage=url, event_storage=url) as app:
        worker = app.worker(pool="async", poll_interval=60.0)
        queue = app.task_queue
        reserve = queue.reserve
        reserves, stop_at = 0, 0

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal reserves
            reserves += 1
            if reserves == stop_at:
                worker.request_stop("test")  # (its round trip is still to come)
            return await reserve(*args, **kwargs)

        queue.reserve = counted  # type: ignore[method-assign]
        running = asyncio.create_task(worker.run(install_signals=False))
        try:
            # Empty wake-ups: each makes a reserve that finds nothing, and doubles the
            # idle wait up to poll_interval (60 s).
            for _ in range(16):
                before = reserves

                async def reserved(before: int = before) -> bool:
                    return reserves > before

                await publisher.publish(f"{key_prefix}:w:default", "1")
                await eventually(reserved, "the worker did not wake for its wait")
            stop_at = reserves + 1
            await publisher.publish(f"{key_prefix}:w:default", "1")
            assert await asyncio.wait_for(running, 2.0) == "test"  # (not 60 s, nor 5)
        finally:
            running.cancel()
            await publisher.aclose()
