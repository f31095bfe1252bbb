"""``Inbox.post``: one call's requests sent in place (a fresh ``delay()``, a wake-up)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import nats.aio.msg
import nats.errors
import pytest

from omniq.events import enqueued_events
from omniq.models import TaskResult, TaskState, task_decoder
from omniq.registry import registry
from omniq.testing import eventually, make_task
from omniq_backend_nats.batch import WRONG_REVISION, _writer, puts, revisions
from omniq_backend_nats.events import NatsEventStorage
from omniq_backend_nats.names import token
from omniq_backend_nats.queue import NatsTaskQueue
from omniq_backend_nats.results import NatsResultStorage

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def stores_at(url: str, prefix: str) -> AsyncIterator[tuple[NatsTaskQueue, NatsEventStorage]]:
    q = registry.resolve("task_queue", {"backend": "nats", "url": url, "prefix": prefix})
    ev = registry.resolve("event_storage", {"backend": "nats", "url": url, "prefix": prefix})
    assert isinstance(q, NatsTaskQueue) and isinstance(ev, NatsEventStorage)
    async with q, ev:
        yield q, ev


async def test_a_post_written_now_or_with_the_flusher_gets_its_answers(
    nats_url: str, nats_prefix: str
) -> None:
    """A post that is alone goes to the socket at once (nothing left in the client's
    buffer); posts made while another awaits its replies join the client's buffer and
    its flusher's next write. Either way each gets its own replies, in order; without
    what it needs (the inbox not open, the client's internals missing) a post sends
    nothing and says so."""
    async with stores_at(nats_url, nats_prefix) as (q, _):
        inbox, nc = q.inbox, q.nc
        bucket = f"{nats_prefix}_tasks"
        assert inbox.post(puts(bucket, [("k", b"v", 0)])) is None, "not open yet: send opens"
        await inbox.write(bucket, [("opened", b"", None)])
        nc_any: Any = nc

        alone = inbox.post(puts(bucket, [("a", b"1", 0), ("b", b"2", 0)]))
        assert alone is not None and not nc_any._pending, "written at once"
        first = revisions(await alone.replies())
        assert WRONG_REVISION not in first

        together = [
            inbox.post(puts(bucket, [(f"c{i}", b"x", 0), ("a", b"y", 0)])) for i in range(5)
        ]
        assert all(s is not None for s in together)
        assert nc_any._pending, "the posts after the first wait for the flusher"
        answers = [revisions(await s.replies()) for s in together if s is not None]
        assert [a[1] for a in answers] == [WRONG_REVISION] * 5
        assert len({a[0] for a in answers}) == 5 and min(a[0] for a in answers) > max(first)

        # A post without requests (a wake-up) goes with the next post's write, or on the
        # loop's next turn: never later than the client's flusher would write it.
        heard: list[bytes] = []

        async def hear(msg: nats.aio.msg.Msg) -> None:
            heard.append(msg.data)

        await nc.subscribe(f"{nats_prefix}.wake.x", cb=hear)
        await nc.flush()
        told = inbox.post((), tell=[(f"{nats_prefix}.wake.x", b"1", None)])
        assert told is not None and await told.replies() == [] and nc_any._pending
        along = inbox.post(puts(bucket, [("e", b"1", 0)]))
        assert along is not None and not nc_any._pending, "taken along"
        assert WRONG_REVISION not in revisions(await along.replies())
        inbox.post((), tell=[(f"{nats_prefix}.wake.x", b"2", None)])
        await asyncio.sleep(0)
        assert not nc_any._pending, "written on the loop's next turn"

        async def both_heard() -> bool | None:
            return heard == [b"1", b"2"] or None

        await eventually(both_heard, "both wake-ups heard, in order")

        kick, inbox._kick = inbox._kick, None  # (a client without the internals)
        assert inbox.post(puts(bucket, [("d", b"1", 0)])) is None
        inbox._kick = kick
        assert await inbox.get(bucket, ["d"]) == [None], "a refused post sent nothing"


async def test_a_send_alone_goes_out_now_and_a_finish_in_one_write(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send with nothing else in flight (the worker's read, claim, completion) is on
    the socket when it returns, not left for the flusher's turn; a finish writes the
    accepted result, then the message's ack and the dependents check, in one write, the
    result first (on the same path, sent a turn or two apart, they reached the server as
    the waiting client's next task did); the ended batch's lease entry is kept for the
    next reserve, not removed there."""
    async with stores_at(nats_url, nats_prefix) as (q, ev):
        results = registry.resolve(
            "result_storage", {"backend": "nats", "url": nats_url, "prefix": nats_prefix}
        )
        assert isinstance(results, NatsResultStorage)
        async with results:
            inbox, nc_any = q.inbox, cast(Any, q.nc)
            bucket = f"{nats_prefix}_tasks"
            await inbox.write(bucket, [("opened", b"", None)])
            sent = await inbox.send(puts(bucket, [("s", b"1", 0)]))
            assert not nc_any._pending, "on the socket at once"
            assert WRONG_REVISION not in revisions(await sent.replies())

            task = make_task(id="one-write")
            await q.enqueue_recorded([task], enqueued_events([task], 1.0), ev, fresh=True)
            (leased,) = await q.reserve(["default"], "w", 30.0)
            writes: list[bytes] = []
            transport = _writer(q.nc)
            assert transport is not None
            write, writelines = transport.write, transport.writelines

            inner: list[bool] = []  # (a writelines that calls write is one write)

            def recording(data: Any) -> None:
                if not inner:
                    writes.append(bytes(data))
                write(data)

            def recording_lines(lines: Any) -> None:
                lines = list(lines)
                writes.append(b"".join(lines))
                inner.append(True)
                try:
                    writelines(lines)
                finally:
                    inner.pop()

            monkeypatch.setattr(transport, "write", recording)
            monkeypatch.setattr(transport, "writelines", recording_lines)
            value = TaskResult(task_id=task.id, state=TaskState.SUCCEEDED, value=b"v")
            accepted = await q.finish_many(
                [(task.id, leased.lease_token or "", TaskState.SUCCEEDED, None)],
                [value],
                [],
                results,
                ev,
            )
            monkeypatch.undo()
            assert accepted == [True]
            (one,) = [w for w in writes if f"$KV.{nats_prefix}_results.".encode() in w]
            at = [
                one.find(part.encode())
                for part in (
                    f"$KV.{nats_prefix}_results.",
                    "$JS.ACK.",
                    f"DIRECT.GET.KV_{nats_prefix}_children",
                )
            ]
            assert -1 not in at and at == sorted(at), (at, writes)
            assert b"STREAM.PURGE" not in one, "the batch's lease entry is kept (spare)"
            assert (await results.get(task.id)) == value
            assert (await q.get(task.id)).state is TaskState.SUCCEEDED  # type: ignore[union-attr]


async def test_a_finish_whose_sends_fail_after_its_acceptance_still_stores_its_result(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completion accepted, the sends of the result and of the dependents check
    fail (the client's reconnect buffer full): the result is written again, as a
    failed send of it always was, and the finish answers accepted. Raised from the
    finish instead, the result was never written, and the retried completion was
    refused (its token spent): a finished task without its result."""
    async with stores_at(nats_url, nats_prefix) as (q, ev):
        results = registry.resolve(
            "result_storage", {"backend": "nats", "url": nats_url, "prefix": nats_prefix}
        )
        assert isinstance(results, NatsResultStorage)
        async with results:
            task = make_task(id="sends-fail")
            await q.enqueue_recorded([task], enqueued_events([task], 1.0), ev, fresh=True)
            (leased,) = await q.reserve(["default"], "w", 30.0)
            send = q.inbox.send
            failing = {f"$KV.{nats_prefix}_results.", f"DIRECT.GET.KV_{nats_prefix}_children"}

            async def full(requests: Any, *, tell: Any = ()) -> Any:
                hit = {part for part in failing for r in requests if part in r[0]}
                if hit:
                    failing.difference_update(hit)  # (once each: the buffer drained)
                    raise nats.errors.OutboundBufferLimitError
                return await send(requests, tell=tell)

            monkeypatch.setattr(q.inbox, "send", full)
            value = TaskResult(task_id=task.id, state=TaskState.SUCCEEDED, value=b"v")
            accepted = await q.finish_many(
                [(task.id, leased.lease_token or "", TaskState.SUCCEEDED, None)],
                [value],
                [],
                results,
                ev,
            )
            assert not failing, "both sends failed once"
            assert accepted == [True]
            assert (await results.get(task.id)) == value
            assert (await q.get(task.id)).state is TaskState.SUCCEEDED  # type: ignore[union-attr]


async def test_messages_with_headers_are_handled_as_the_client_reads_them(
    nats_url: str, nats_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply with headers (a direct get's) resolves its send, a waiting pull's
    delivery wakes the reserve and a result's put reaches its wait, all in the
    client's read loop (``deliver_in_place``), not a loop turn later through the
    subscription's task; a handler that fails is logged, the client reads on."""
    async with stores_at(nats_url, nats_prefix) as (q, _):
        inbox, nc_any = q.inbox, cast(Any, q.nc)
        bucket = f"{nats_prefix}_tasks"
        await inbox.write(bucket, [("k", b"v", None)])
        assert inbox._sub is not None
        sent = await inbox.send([(f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.k", b"", None)])
        (key,) = sent.keys
        head = b"NATS/1.0\r\nNats-Sequence: 1\r\n\r\n"
        await nc_any._process_msg(inbox._sub._id, f"{inbox._prefix}{key}".encode(), b"", b"v", head)
        assert sent._done.done(), "answered as read"
        (reply,) = await sent.replies()
        assert reply.data == b"v" and reply.headers == {"Nats-Sequence": "1"}

        pulls = q._pulls
        await pulls.arm([(f"{nats_prefix}.q.x.0", "none")], 0.1)
        assert pulls._sub is not None
        q._work.clear()
        await nc_any._process_msg(pulls._sub._id, b"s.q.x.0", b"r", b"t-1", b"")
        assert q._work.is_set() and [m.data for m in pulls.take()] == [b"t-1"]

        results = registry.resolve(
            "result_storage", {"backend": "nats", "url": nats_url, "prefix": nats_prefix}
        )
        assert isinstance(results, NatsResultStorage)
        async with results:
            await results._subscribe()
            assert results._every is not None
            waiter = asyncio.get_running_loop().create_future()
            results._waiters["t-2"] = {waiter}
            subject = f"$KV.{results.bucket}.t-2".encode()
            read = cast(Any, results.nc)._process_msg
            await read(results._every._id, subject, b"", b"data", b"")
            assert waiter.done() and waiter.result() == b"data"

            def fail(msg: Any) -> None:
                raise RuntimeError("boom")

            cast(Any, results._every._pending_queue)._handle = fail
            await read(results._every._id, subject, b"", b"data", b"")
            assert "boom" in caplog.text
            assert results._every._pending_size == 0


@pytest.mark.parametrize("in_place", [True, False])
async def test_a_fresh_delay_stores_record_message_event_and_wakes(
    nats_url: str, nats_prefix: str, in_place: bool
) -> None:
    """A fresh ``delay()``, posted in place or sent the client's way: the record, the
    delivery message and the ``enqueued`` event are stored, and the queue's waiters
    hear the wake-up naming the task, after the record exists."""
    async with stores_at(nats_url, nats_prefix) as (q, ev):
        await q.inbox.write(f"{nats_prefix}_tasks", [("opened", b"", None)])
        if not in_place:
            q.inbox._kick = None
        woken: asyncio.Queue[bytes] = asyncio.Queue()
        records: list[bytes | None] = []

        async def on_wake(msg: nats.aio.msg.Msg) -> None:
            found = await q.inbox.get(f"{nats_prefix}_tasks", [token(msg.data.decode())])
            records.append(found[0][0] if found[0] else None)
            woken.put_nowait(msg.data)

        await q.nc.subscribe(f"{nats_prefix}.wake.{token('default')}", cb=on_wake)
        await q.nc.flush()
        for n in range(3):
            task = make_task(id=f"fresh-{n}")
            (stored,) = await q.enqueue_recorded(
                [task], enqueued_events([task], 1.0), ev, fresh=True
            )
            assert stored.state is TaskState.PENDING
            assert await asyncio.wait_for(woken.get(), 5) == task.id.encode()
        assert all(
            r is not None and task_decoder.decode(r).id.startswith("fresh-") for r in records
        )
        assert await q.inbox.stream_messages(q.stream) == 3
        events = await ev.query(queue="default")
        assert sorted(e.task_id for e in events) == ["fresh-0", "fresh-1", "fresh-2"]


def test_a_blocking_delay_wakes_a_waiting_worker_before_the_loop_is_taken_back(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``delay()`` through the blocking API: the calling thread drives the loop only
    until its call is done, and the portal's thread takes the loop back only after
    ``omniq.sync.IDLE``. The wake-up must be on the wire by then, not left in the
    client's buffer for that later turn: a worker waiting on the queue (no pull armed
    yet, so only the wake-up wakes it) is woken promptly."""
    import threading

    import omniq.sync
    from omniq import OmniQ

    monkeypatch.setattr(omniq.sync, "IDLE", 30.0)  # (the portal's thread stays away)
    ready, woken = threading.Event(), threading.Event()
    url = f"{nats_url}?prefix={nats_prefix}"

    async def wait() -> None:
        settings = {"backend": "nats", "url": nats_url, "prefix": nats_prefix}
        q = registry.resolve("task_queue", settings)
        async with q:
            await q.wait_for_work(["default"], 0)  # (subscribes to the wake-ups)
            await q.nc.flush()
            ready.set()
            await q.wait_for_work(["default"], 20)
            woken.set()

    worker = threading.Thread(target=asyncio.run, args=(wait(),), daemon=True)
    worker.start()
    app = OmniQ(task_queue=url, result_storage=url, event_storage="memory://")
    try:

        @app.task
        def add(x: int, y: int) -> int:
            return x + y

        @app.task(queue="elsewhere")
        def opener() -> None:
            pass

        assert ready.wait(10), "the worker subscribed"
        opener.delay()  # (opens the stores and the inbox; its wake-up is for another queue)
        add.delay(1, 2)
        assert woken.wait(5), "the waiting worker heard the blocking delay()'s wake-up"
    finally:
        app.close()
        worker.join(25)
