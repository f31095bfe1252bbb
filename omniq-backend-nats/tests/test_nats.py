"""What only the NATS backend has: its URL options, its errors for a server that is down
or runs without JetStream, refusing a stream it did not make, subject encoding of
hostile names, the repairs of its crash windows, and a server restart mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import nats.aio.msg
import nats.errors
import nats.js.errors
import pytest
from nats.js import api

from omniq.errors import ConfigError, OmniQError, SerializationError
from omniq.events import enqueued_events
from omniq.limits import Limits
from omniq.models import (
    EventType,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    encoder,
    new_id,
    task_decoder,
)
from omniq.registry import registry
from omniq.testing import eventually, make_event, make_schedule, make_task
from omniq_backend_nats.acks import read_replies_fast
from omniq_backend_nats.batch import WRONG_REVISION, Inbox, _writes_at_once, puts, sequences
from omniq_backend_nats.connection import NatsUnavailableError, confirm
from omniq_backend_nats.events import BUNDLE, NatsEventStorage
from omniq_backend_nats.limits import CLAIM_GRACE
from omniq_backend_nats.names import consumer_name, token, untoken
from omniq_backend_nats.queue import NatsTaskQueue
from omniq_backend_nats.results import KEPT_MAX, NatsResultStorage

pytestmark = pytest.mark.anyio
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_server(port: int, store: Path | None, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A nats-server of our own on a loopback port (JetStream only with ``store``; more
    arguments in ``extra``), stopped on exit."""
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip(f"no nats-server binary at {NATS_SERVER}")
    args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), *extra]
    if store is not None:
        args += ["-js", "-sd", str(store)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.2),
            ):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"private nats-server on port {port} did not start")
            time.sleep(0.02)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def queue_at(url: str, prefix: str, **options: Any) -> AsyncIterator[NatsTaskQueue]:
    store = registry.resolve(
        "task_queue", {"backend": "nats", "url": url, "prefix": prefix, **options}
    )
    assert isinstance(store, NatsTaskQueue)
    async with store:
        yield store


# -- configuration ------------------------------------------------------------------------


def test_url_query_and_keyword_options() -> None:
    store = NatsTaskQueue.from_url("nats://10.0.0.1:4222?prefix=abc&ack_wait=5", replicas=3)
    assert (
        store.prefix == "abc"
        and store.settings["ack_wait"] == 5.0
        and store.settings["replicas"] == 3
    )
    assert store.settings.servers == ("nats://10.0.0.1:4222",)
    assert NatsTaskQueue.from_url("nats://").settings.servers == ("nats://127.0.0.1:4222",)
    both = NatsTaskQueue.from_url("tls://u:p@a:1,b:2").settings.servers
    assert both == ("tls://u:p@a:1", "tls://u:p@b:2")


@pytest.mark.parametrize(
    ("url", "options", "names"),
    [
        ("redis://127.0.0.1", {}, "scheme"),
        ("nats://127.0.0.1/x", {}, "no path"),
        ("nats://127.0.0.1", {"prefix": "a.b"}, "'a.b'"),
        ("nats://127.0.0.1", {"replicas": 9}, "replicas"),
        ("nats://127.0.0.1?ack_wait=soon", {}, "ack_wait"),
        ("nats://127.0.0.1", {"ack_wait": 0}, "ack_wait"),
    ],
)
def test_bad_settings_are_refused_by_name(url: str, options: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        NatsTaskQueue.from_url(url, **options)


def test_secrets_never_shown() -> None:
    store = NatsTaskQueue.from_url(
        "nats://alice:s3cret@127.0.0.1:4222?token=t0ken", password="pw-9"
    )
    shown = repr(store) + repr(store.settings)
    assert "s3cret" not in shown and "t0ken" not in shown and "pw-9" not in shown
    with pytest.raises(ConfigError) as info:
        NatsTaskQueue.from_url("nats://alice:s3cret@127.0.0.1?nope=1")
    assert "s3cret" not in str(info.value) and "nope" in str(info.value)


def test_token_and_cluster_urls_are_masked_in_reprs() -> None:
    """``nats://TOKEN@host`` is a documented form: the token is a secret like a password."""
    from omniq import AsyncOmniQ

    app = AsyncOmniQ(
        task_queue="nats://tok-S3CRET@127.0.0.1:4222",
        result_storage="nats://u:pw-ONE@127.0.0.1:4222,127.0.0.1:4223",
        event_storage="memory://x",
    )
    shown = repr(app) + repr(app.task_queue) + repr(app.result_storage)
    assert "tok-S3CRET" not in shown and "pw-ONE" not in shown, shown
    assert "nats://***@127.0.0.1:4222" in shown and "nats://u:***@127.0.0.1:4222," in shown
    # One URL per server, each with its password: every one is masked in the refusal.
    with pytest.raises(ConfigError) as info:
        NatsTaskQueue.from_url("nats://u:pw-ONE@127.0.0.1:4222,nats://u:pw-TWO@127.0.0.1:4223")
    assert "pw-ONE" not in str(info.value) and "pw-TWO" not in str(info.value), info.value


def test_bad_port_names_the_store_and_the_masked_url() -> None:
    with pytest.raises(ConfigError) as info:
        NatsTaskQueue.from_url("nats://tok-S3CRET@127.0.0.1:notaport")
    text = str(info.value)
    assert "nats task queue" in text and "'notaport'" in text and "1 to 65535" in text, text
    assert "nats://***@127.0.0.1:notaport" in text and "tok-S3CRET" not in text


def test_names_become_single_tokens() -> None:
    for name in ("default", "a.b", "x:y", "sched@1700000000000", "émoji_✓", "a_2e"):
        encoded = token(name)
        assert untoken(encoded) == name
        assert "." not in encoded and "*" not in encoded and ">" not in encoded
    assert token("a_2e") != token("a.")  # the escape character is itself escaped
    assert len(consumer_name("q" * 200, 9)) <= 120


# -- faults ---------------------------------------------------------------------------------


async def test_server_down_at_open_names_the_masked_url() -> None:
    store = NatsTaskQueue.from_url(
        f"nats://alice:s3cret@127.0.0.1:{free_port()}", connect_timeout=0.5
    )
    with pytest.raises(NatsUnavailableError) as info:
        await store.open()
    assert "127.0.0.1" in str(info.value) and "***" in str(info.value)
    assert "s3cret" not in str(info.value)


async def test_server_down_at_open_masks_a_token_url() -> None:
    url = f"nats://tok-S3CRET@127.0.0.1:{free_port()}"
    store = NatsTaskQueue.from_url(url, connect_timeout=0.5)
    with pytest.raises(NatsUnavailableError) as info:
        await store.open()
    text = "".join(traceback.format_exception(info.value))
    assert "127.0.0.1" in text and "***" in text
    assert "tok-S3CRET" not in text, text


async def test_server_without_jetstream_is_named(tmp_path: Path) -> None:
    port = free_port()
    with private_server(port, store=None):
        store = NatsTaskQueue.from_url(f"nats://127.0.0.1:{port}")
        with pytest.raises(NatsUnavailableError, match="JetStream is not enabled"):
            await store.open()


async def test_incompatible_stream_is_refused_and_kept(nats_url: str, nats_prefix: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        name = f"{nats_prefix}_queue"
        await js.add_stream(
            name=name, subjects=[f"{nats_prefix}.q.>"], retention=api.RetentionPolicy.LIMITS
        )
        await js.publish(f"{nats_prefix}.q.default.0", b"someone else's")
        with pytest.raises(ConfigError, match=f"'{name}'.*retention limits.*Nothing was changed"):
            async with queue_at(nats_url, nats_prefix):
                pass
        info = await js.stream_info(name)
        assert info.state.messages == 1 and info.config.retention == api.RetentionPolicy.LIMITS
    finally:
        await nc.close()


# -- how the queue sits on JetStream ---------------------------------------------------------


async def test_hostile_queue_names_stay_in_their_own_subject(
    nats_url: str, nats_prefix: str
) -> None:
    async with queue_at(nats_url, nats_prefix) as q:
        dotted = await q.enqueue(make_task(queue="a.b", priority=7))
        await q.enqueue(Task(id="nightly@1700000000000", name="t", queue="a"))
        info = await q.js.stream_info(q.stream, subjects_filter=f"{nats_prefix}.q.>")
        assert set(info.state.subjects or {}) == {
            f"{nats_prefix}.q.a_2eb.7",
            f"{nats_prefix}.q.a.0",
        }
        assert [t.id for t in await q.reserve(["a"], "w", 60)] == ["nightly@1700000000000"]
        assert [t.id for t in await q.reserve(["a.b"], "w", 60)] == [dotted.id]


async def test_foreign_messages_in_a_queue_subject_are_dropped(
    nats_url: str, nats_prefix: str
) -> None:
    async with queue_at(nats_url, nats_prefix) as q:
        for junk in (b"\xff\xfe", b"", b"no-such-task"):
            await q.js.publish(f"{nats_prefix}.q.default.0", junk)
        task = await q.enqueue(make_task())
        assert [t.id for t in await q.reserve(["default"], "w", 60, limit=10)] == [task.id]
        assert (await q.js.stream_info(q.stream)).state.messages == 1  # only the held one


async def test_two_messages_for_one_task_in_one_pull_lease_it_once(
    nats_url: str, nats_prefix: str
) -> None:
    """A stray second message (here: a bare id) pulled with the task's own: one lease,
    and the stray waits as a running task's message does."""
    async with queue_at(nats_url, nats_prefix) as q:
        task = await q.enqueue(make_task())
        await q.js.publish(f"{nats_prefix}.q.default.0", task.id.encode())
        (got,) = await q.reserve(["default"], "w", 60, limit=10)
        assert got.id == task.id and got.attempts == 1
        assert await lease_entries(q) == 1
        assert await q.complete(got.id, got.lease_token or "", TaskState.SUCCEEDED)
        assert await lease_entries(q) == 1 and len(q._spare) == 1  # kept for the next reserve


async def test_lost_lease_entry_is_rebuilt_from_redelivery(nats_url: str, nats_prefix: str) -> None:
    """A reserve that dies between the record and the lease entry: the held message comes
    back after AckWait, and that delivery writes the entry so the lease can lapse."""
    async with queue_at(nats_url, nats_prefix, ack_wait=0.3) as q:
        task = await q.enqueue(make_task())
        (running,) = await q.reserve(["default"], "w", 0.2)
        await q.js.purge_stream(f"KV_{nats_prefix}_leases")  # every lease entry, batched or not
        q._held.clear()
        q._batches.clear()

        async def lapsed() -> list[Task]:
            await q.reserve(["default"], "w2", 60)  # takes the redelivered message
            return [t for t in await q.release_expired_leases() if t.id == task.id]

        (back,) = await eventually(lapsed, "the lost lease never lapsed")
        assert back.state is TaskState.PENDING and back.attempts == 1
        (again,) = await eventually(lambda: q.reserve(["default"], "w3", 60), "not redelivered")
        assert (
            again.id == task.id and again.attempts == 2 and again.lease_token != running.lease_token
        )


async def age(q: NatsTaskQueue, task_id: str, seconds: float) -> None:
    """Move a running record's lease deadline ``seconds`` back, as if that much time had
    passed since its last heartbeat (a direct compare-and-set on the server)."""
    kv = await q.js.key_value(f"{q.prefix}_tasks")
    entry = await kv.get(token(task_id))
    assert entry.value is not None and entry.revision is not None
    task = task_decoder.decode(entry.value)
    assert task.state is TaskState.RUNNING and task.lease_deadline is not None
    aged = msgspec.structs.replace(task, lease_deadline=task.lease_deadline - seconds)
    await kv.update(token(task_id), encoder.encode(aged), last=entry.revision)


async def test_a_running_record_no_lease_entry_or_message_holds_is_returned(
    nats_url: str, nats_prefix: str
) -> None:
    """A nats-server killed with kill -9 loses the acknowledged writes it had not yet
    written to its files: here a completion's compare-and-set on the record, while its ack
    of the held message and its removal of the lease entry stayed. The record is left
    running with nothing a sweep or a redelivery reaches; the tasks' cleanup notes it once
    long past its deadline and the next sweep returns it (or dead-letters it after too
    many deliveries), as a lapsed lease. A running record whose holder heartbeats is left
    alone, though its deadline had passed when the cleanup read it."""
    async with queue_at(nats_url, nats_prefix) as gone:
        orphan = await gone.enqueue(make_task())
        doomed = await gone.enqueue(make_task(max_deliveries=1))
        held = await gone.reserve(["default"], "w", 60, limit=2)
        assert {t.id for t in held} == {orphan.id, doomed.id}
        for task in held:  # what the lost completions did that the server kept
            await confirm(gone.nc, gone._held[task.id].lease.reply, b"+ACK")
        await gone.js.purge_stream(f"KV_{nats_prefix}_leases")
        gone._held.clear()
        gone._batches.clear()
    async with queue_at(nats_url, nats_prefix) as worker, queue_at(nats_url, nats_prefix) as q:
        live = await worker.enqueue(make_task())
        (running,) = await worker.reserve(["default"], "w2", 60)
        assert running.id == live.id
        for task_id in (orphan.id, doomed.id, live.id):
            await age(q, task_id, 3600)  # an hour later, as far as the records tell
        assert await queue_messages(q) == 1  # the live task's, held
        assert await q.release_expired_leases() == []  # no lease entry says it lapsed

        await q.cleanup()
        assert await worker.heartbeat([(live.id, running.lease_token or "")], 60) == [live.id]
        back = {t.id: t for t in await q.release_expired_leases()}
        assert set(back) == {orphan.id, doomed.id}
        assert back[orphan.id].state is TaskState.PENDING and back[orphan.id].attempts == 1
        assert back[doomed.id].state is TaskState.DEAD and back[doomed.id].error is not None
        assert await q.release_expired_leases() == []

        (again,) = await eventually(lambda: q.reserve(["default"], "w3", 60), "not delivered")
        assert again.id == orphan.id and again.attempts == 2
        assert await q.complete(again.id, again.lease_token or "", TaskState.SUCCEEDED)
        assert await worker.complete(live.id, running.lease_token or "", TaskState.SUCCEEDED)
        assert await queue_messages(q) == 0


async def lease_entries(q: NatsTaskQueue) -> int:
    return (await q.js.stream_info(f"KV_{q.prefix}_leases")).state.messages


async def test_one_lease_entry_per_reserve_goes_with_its_last_task(
    nats_url: str, nats_prefix: str
) -> None:
    """A batched reserve indexes its leases in one entry, removed when the last of its
    tasks ends (a lapse sweep needs nothing else to find them)."""
    async with queue_at(nats_url, nats_prefix) as q:
        await q.enqueue_many([make_task() for _ in range(3)])
        first, second, third = await q.reserve(["default"], "w", 60, limit=3)
        assert await lease_entries(q) == 1
        assert await q.complete_many(
            [(t.id, t.lease_token or "", TaskState.SUCCEEDED, None) for t in (first, second)]
        )
        assert await lease_entries(q) == 1
        assert await q.retry(third.id, third.lease_token or "", await q.now())
        assert await lease_entries(q) == 0


async def test_an_ended_batch_entry_is_kept_for_the_next_reserve(
    nats_url: str, nats_prefix: str
) -> None:
    """The completion of a batch's one task keeps the batch's lease entry (its removal,
    a filtered ``STREAM.PURGE``, was the server's costliest step of a task, in the write
    that carries the result): the next batched reserve overwrites it, so an instance
    running tasks one after another keeps one entry. A larger batch's entry goes with
    its last task, as before. A sweep drops a kept one left past its deadline and
    changes not the ended task it lists; the next reserve writes it again; closing the
    store removes the kept ones."""
    async with queue_at(nats_url, nats_prefix) as other:
        async with queue_at(nats_url, nats_prefix) as q:
            for _ in range(3):
                await q.enqueue(make_task())
                (got,) = await q.reserve(["default"], "w", 60)
                assert await q.complete(got.id, got.lease_token or "", TaskState.SUCCEEDED)
                assert await lease_entries(q) == 1
            assert len(q._spare) == 1 and not q._batches

            await q.enqueue_many([make_task(), make_task()])
            pair = await q.reserve(["default"], "w", 60, limit=2)
            assert len(pair) == 2 and await lease_entries(q) == 1  # (the kept key, reused)
            assert await q.complete_many(
                [(t.id, t.lease_token or "", TaskState.SUCCEEDED, None) for t in pair]
            ) == [True, True]
            assert await lease_entries(q) == 0 and not q._spare

            await q.enqueue(make_task())
            (got,) = await q.reserve(["default"], "w", 0.2)
            assert await q.complete(got.id, got.lease_token or "", TaskState.SUCCEEDED)

            async def dropped() -> bool:
                assert await other.release_expired_leases() == []
                return await lease_entries(q) == 0

            await eventually(dropped, "the spare entry was never dropped")
            done = await q.get(got.id)
            assert done is not None and done.state is TaskState.SUCCEEDED

            await q.enqueue(make_task())
            (again,) = await q.reserve(["default"], "w", 60)
            assert await lease_entries(q) == 1, "written again under the spare key"
            assert await q.complete(again.id, again.lease_token or "", TaskState.SUCCEEDED)
            assert await lease_entries(q) == 1 and len(q._spare) == 1
        assert await lease_entries(other) == 0, "closing removed the spare"


async def test_closing_removes_a_kept_entry_a_heartbeat_rewrote_meanwhile(
    nats_url: str, nats_prefix: str
) -> None:
    """A heartbeat's rewrite of a batch entry, answered only after the batch's one task
    completed, leaves the kept entry at a newer revision than this instance cached
    (``_heartbeat`` caches it only while the batch still owns the key): ``close()``
    must still remove it, not leave it for a sweep after its deadline."""
    async with queue_at(nats_url, nats_prefix) as other:
        async with queue_at(nats_url, nats_prefix) as q:
            await q.enqueue(make_task())
            (got,) = await q.reserve(["default"], "w", 60)
            key = q._held[got.id].batch
            assert key is not None
            listed = q._batches[key][0]
            # The heartbeat's rewrite, as _heartbeat sends it, its answer read later.
            sent = await q.inbox.send(
                puts(f"{nats_prefix}_leases", [(key, encoder.encode(list(listed.values())), None)])
            )
            assert await q.complete(got.id, got.lease_token or "", TaskState.SUCCEEDED)
            (rev,) = sequences(await sent.replies())
            assert q._spare == [(key, rev - 1)]  # (cached before the rewrite landed)
        assert await lease_entries(other) == 0, "closing left the kept entry"


async def test_batched_leases_lapse_from_another_instance(nats_url: str, nats_prefix: str) -> None:
    """Another process finds the lapsed leases of a batch entry, returns the tasks and
    removes the entry; the late completion of the first holder is refused."""
    async with queue_at(nats_url, nats_prefix) as q, queue_at(nats_url, nats_prefix) as other:
        tasks = await q.enqueue_many([make_task() for _ in range(2)])
        held = await q.reserve(["default"], "w", 0.2, limit=2)
        assert len(held) == 2

        async def lapsed() -> list[Task]:
            found = await other.release_expired_leases()
            return found if len(found) == 2 else []

        back = await eventually(lapsed, "the batch's leases never lapsed")
        assert {t.id for t in back} == {t.id for t in tasks} and {t.state for t in back} == {
            TaskState.PENDING
        }
        assert await lease_entries(q) == 0
        assert await q.complete_many(
            [(t.id, t.lease_token or "", TaskState.SUCCEEDED, None) for t in held]
        ) == [False, False]
        again = await eventually(
            lambda: other.reserve(["default"], "w2", 60, limit=2), "not redelivered"
        )
        assert {t.id for t in again} <= {t.id for t in tasks}


async def test_a_stale_attempt_s_refusal_keeps_the_newer_lease_of_the_same_instance(
    nats_url: str, nats_prefix: str
) -> None:
    """An instance whose lease lapsed and that reserved the task again holds the newer
    lease; the older attempt's completion, refused, must leave that lease's index entry
    (what a sweep finds if this process dies) and its cached message, so the newer
    completion acks it at once."""
    async with queue_at(nats_url, nats_prefix) as q, queue_at(nats_url, nats_prefix) as other:
        (task,) = await q.enqueue_many([make_task()])
        (first,) = await q.reserve(["default"], "w", 0.2)

        async def lapsed() -> list[Task]:
            return await other.release_expired_leases()

        await eventually(lapsed, "the first lease never lapsed")
        (second,) = await eventually(
            lambda: q.reserve(["default"], "w", 60), "the task was not delivered again"
        )
        assert second.id == task.id and second.attempts == 2
        assert await lease_entries(q) == 1
        assert not await q.complete(first.id, first.lease_token or "", TaskState.SUCCEEDED)
        assert await lease_entries(q) == 1, "the newer lease's entry was removed"
        assert await q.heartbeat([(second.id, second.lease_token or "")], 60) == [second.id]
        assert await q.complete(second.id, second.lease_token or "", TaskState.SUCCEEDED)
        info = await q.js.stream_info(q.stream)
        assert info.state.messages == 0, "the newer completion did not ack its message"


_DIE_AFTER_PULL = """
import asyncio, os, signal, sys
from omniq.registry import registry
from omniq_backend_nats.queue import NatsTaskQueue
from omniq_backend_nats.results import NatsResultStorage

async def die(*args, **kwargs):
    print("pulled", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9: the message is pulled, nothing claimed

NatsTaskQueue._claim_many = die

async def main():
    ref = {"backend": "nats", "url": sys.argv[1], "prefix": sys.argv[2]}
    store = registry.resolve("task_queue", ref)
    async with store:
        await store.reserve(["default"], "doomed", float(sys.argv[3]))

asyncio.run(main())
"""


@pytest.mark.slow
async def test_a_task_pulled_by_a_killed_worker_comes_back_after_the_lease(
    nats_url: str, nats_prefix: str
) -> None:
    """A worker killed between pulling a message and claiming its task holds no lease
    (the record is still pending): the message comes back after AckWait, which follows
    the lease, not after the 60 s it used to be."""
    lease = 2.0
    async with queue_at(nats_url, nats_prefix) as q:
        task = await q.enqueue(make_task())
        proc = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-c", _DIE_AFTER_PULL, nats_url, nats_prefix, str(lease)],
                capture_output=True,
                text=True,
                timeout=30,
            )
        )
        assert proc.returncode == -signal.SIGKILL and proc.stdout == "pulled\n", proc.stderr
        assert (await q.get(task.id)).state is TaskState.PENDING  # pulled, never claimed
        [again] = await eventually(
            lambda: q.reserve(["default"], "survivor", lease),
            "the task pulled by the killed worker",
            deadline=lease + 8,
        )
        assert again.id == task.id and again.attempts == 1


async def test_enqueue_again_repairs_a_missing_message(nats_url: str, nats_prefix: str) -> None:
    """An enqueue that dies between the record and its message is repaired by enqueueing
    the same id again (the caller never saw it succeed)."""
    async with queue_at(nats_url, nats_prefix) as q:
        task = make_task()
        await q._tasks.create(token(task.id), encoder.encode(task))
        assert await q.reserve(["default"], "w", 60) == []
        assert (await q.enqueue(task)).state is TaskState.PENDING
        assert [t.id for t in await q.reserve(["default"], "w", 60)] == [task.id]


async def publish_early(q: NatsTaskQueue, task: Task) -> None:
    """The delivery message a fresh ``delay()`` sends with its record's create, alone:
    as if the server stored and delivered it before the record."""
    subject, data, headers = q._early_request(task)
    await q.js.publish(subject, data, headers=headers)


async def queue_messages(q: NatsTaskQueue) -> int:
    return (await q.js.stream_info(q.stream)).state.messages


async def test_a_message_before_its_record_waits_for_it(nats_url: str, nats_prefix: str) -> None:
    """A fresh enqueue's message delivered before its record is put back, not dropped:
    once the record is stored the task is leased, once, and nothing is left over."""
    async with queue_at(nats_url, nats_prefix) as q:
        task = make_task()
        await publish_early(q, task)
        assert await q.reserve(["default"], "w", 60, limit=10) == []
        assert await queue_messages(q) == 1, "the early message was dropped"
        await q._tasks.create(token(task.id), encoder.encode(task))
        (got,) = await eventually(
            lambda: q.reserve(["default"], "w", 60, limit=10), "the task never came"
        )
        assert (got.id, got.attempts) == (task.id, 1)
        assert await q.complete(got.id, got.lease_token or "", TaskState.SUCCEEDED)
        assert await eventually(lambda: _none_left(q), "the message was not acked away")
        assert (await q.get(task.id)).attempts == 1  # type: ignore[union-attr]


async def _none_left(q: NatsTaskQueue) -> bool:
    return await queue_messages(q) == 0


async def test_an_early_message_whose_record_never_comes_is_dropped(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An early message whose record never comes (the create failed, or the task was
    purged) is put back a bounded number of times, then acked away: never looped
    forever. (The window, ~10 s, is shortened here to a few deliveries.)"""
    from omniq_backend_nats import delivery

    monkeypatch.setattr(delivery, "_EARLY_TRIES", 4)
    async with queue_at(nats_url, nats_prefix) as q:
        await publish_early(q, make_task())
        reserves = 0

        async def dropped() -> bool:
            nonlocal reserves
            reserves += 1
            assert await q.reserve(["default"], "w", 60, limit=10) == []
            return await queue_messages(q) == 0

        await eventually(dropped, "the orphan early message was never dropped")
        info = await q.js.consumer_info(q.stream, consumer_name("default", 0))
        assert info.delivered.consumer_seq == delivery._EARLY_TRIES, "delivered once per try"


async def test_a_purged_fresh_task_leaves_no_message_waiting(
    nats_url: str, nats_prefix: str
) -> None:
    """A purge deletes records and leaves their messages behind: an early one is acked
    away at its first delivery (the purge's mark), not put back for the whole window."""
    async with queue_at(nats_url, nats_prefix) as q:
        await q.enqueue_recorded([make_task()], [], None, fresh=True)
        await publish_early(q, make_task())  # its record never came
        assert await q.purge() == 1
        assert await q.reserve(["default"], "w", 60, limit=10) == []
        info = await q.js.stream_info(q.stream, subjects_filter=f"{nats_prefix}.q.default.*")
        assert not info.state.subjects, "a message was left in the band"
        await q.purge()  # a second mark replaces the first
        assert await queue_messages(q) == 1


async def test_a_fresh_id_found_taken_raises_and_keeps_the_task(
    nats_url: str, nats_prefix: str
) -> None:
    """A create under a "fresh" id that is taken after all raises (nothing claims to be
    enqueued); the existing task is untouched and runs once, its stray message harmless."""
    async with queue_at(nats_url, nats_prefix) as q:
        task = await q.enqueue(make_task())
        with pytest.raises(OmniQError, match="taken"):
            await q.enqueue_recorded([make_task(id=task.id, name="other")], [], None, fresh=True)
        assert (await q.get(task.id)).name == task.name  # type: ignore[union-attr]
        (got,) = await q.reserve(["default"], "w", 60, limit=10)
        assert got.id == task.id
        assert await q.reserve(["default"], "w", 60, limit=10) == []


async def test_no_schedule_stored_costs_no_scan(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker claims due schedules once a second: with none stored, the bucket's
    message count answers, without a scan's ephemeral consumer; with one, it is scanned."""
    async with queue_at(nats_url, nats_prefix) as q:
        scanned: list[str] = []
        scan = q.scan

        def counting(stream: str, subject: str, **options: Any) -> AsyncIterator[nats.aio.msg.Msg]:
            scanned.append(stream)
            return scan(stream, subject, **options)

        monkeypatch.setattr(q, "scan", counting)
        assert await q.claim_due_schedules(time.time()) == []
        assert await q.list_schedules() == []
        assert scanned == []
        schedule = await q.add_schedule(make_schedule())
        assert [s.id for s in await q.list_schedules()] == [schedule.id]
        assert scanned == [f"KV_{nats_prefix}_schedules"]


async def test_a_reserve_after_a_quiet_wait_asks_nothing_while_every_band_has_a_pull(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait that times out with a pull open on every band leaves nothing for the next
    reserve to ask the server (no STREAM.INFO, no pull); a task enqueued after it still
    reaches the worker through its waiting pull."""
    async with queue_at(nats_url, nats_prefix) as q:
        assert await q.reserve(["default"], "w", 60) == []  # the lease the pulls follow
        asked: list[list[str]] = []
        backlog = q._backlog

        async def counting(queues: list[str]) -> dict[tuple[str, int], int]:
            asked.append(queues)
            return await backlog(queues)

        monkeypatch.setattr(q, "_backlog", counting)
        await q.wait_for_work(["default"], 0.05)  # nothing comes: it times out
        assert await q.reserve(["default"], "w", 60) == []
        assert asked == []
        task = await q.enqueue(make_task())
        await q.wait_for_work(["default"], 30)

        async def delivered() -> bool:  # (the wake-up may come before the pull's message)
            return bool(q._pulls.held)

        await eventually(delivered, "the waiting pull never delivered the task")
        assert [t.id for t in await q.reserve(["default"], "w", 60)] == [task.id]
        assert asked == []
        assert await q.reserve(["default"], "w", 60) == []
        assert asked == [["default"]], "a reserve after no wait asks the server"


async def stream_count(q: NatsTaskQueue, stream: str) -> int:
    return (await q.js.stream_info(stream)).state.messages


async def test_pipelined_enqueue_stores_every_window_with_message_and_event(
    nats_url: str, nats_prefix: str
) -> None:
    """Batches of several windows, sent while the ones before are acknowledged: every
    task gets its record, one delivery message and its event (a window's events in one
    message); an id taken in a later
    window comes back as stored before, with no second message."""
    async with queue_at(nats_url, nats_prefix) as q:
        events = registry.resolve(
            "event_storage", {"backend": "nats", "url": nats_url, "prefix": nats_prefix}
        )
        async with events:
            first = [make_task() for _ in range(600)]
            second = [make_task() for _ in range(599)] + [first[10]]
            batches = [(tasks, enqueued_events(tasks, time.time())) for tasks in (first, second)]
            stored = await q.enqueue_batches(iter(batches), events)
            assert [t.id for t in stored] == [t.id for t in first + second]
            assert {t.state for t in stored} == {TaskState.PENDING}
            assert await stream_count(q, q.stream) == 1199
            assert await stream_count(q, f"KV_{nats_prefix}_tasks") == 1199
            # One message per window (queue and type): 512 + 88 events, twice.
            assert await stream_count(q, f"{nats_prefix}_events") == 4
            read = await events.query(limit=None)
            assert sorted(e.id for e in read) == sorted(e.id for _, es in batches for e in es)
            assert [e.task_id for e in await events.query(task_id=first[10].id)] == [
                first[10].id
            ] * 2


async def test_enqueue_failing_part_way_keeps_the_batches_before_it(
    nats_url: str, nats_prefix: str
) -> None:
    """A batch that cannot be built while the one before is in flight: the one before
    is stored whole, with its messages, and the error is raised."""
    async with queue_at(nats_url, nats_prefix) as q:
        first = [make_task() for _ in range(700)]

        def batches() -> Iterator[tuple[list[Task], list[Any]]]:
            yield first, []
            raise ValueError("bad argument")

        with pytest.raises(ValueError, match="bad argument"):
            await q.enqueue_batches(batches(), None)
        assert await stream_count(q, q.stream) == 700
        got = await q.reserve(["default"], "w", 60, limit=1000)
        assert {t.id for t in got} == {t.id for t in first}


async def test_a_send_missing_a_reply_times_out_every_time_it_is_read(
    nats_url: str, nats_prefix: str
) -> None:
    """A request nobody answers ends in the client's timeout error, also when its
    replies are read a second time (a pipelined enqueue that failed re-checks them)."""
    async with queue_at(nats_url, nats_prefix, outage_timeout=0.2) as q:
        await q.nc.subscribe(f"{nats_prefix}.silent", cb=_ignore_msg)  # never replies
        sent = await q.inbox.send([(f"{nats_prefix}.silent", b"", None)])
        for _ in range(2):
            with pytest.raises(nats.errors.TimeoutError):
                await sent.replies()
        assert not q.inbox._waiting


async def _ignore_msg(_msg: Any) -> None:
    pass


async def test_same_id_enqueued_after_purge_is_delivered(nats_url: str, nats_prefix: str) -> None:
    """Dedup is by id *and* record revision: purging a task and enqueueing its id again
    within the duplicate window still publishes a message."""
    async with queue_at(nats_url, nats_prefix) as q:
        task = make_task()
        await q.enqueue(task)
        assert await q.purge(queue="default") == 1
        assert await q.reserve(["default"], "w", 60) == []  # acks the orphaned message away
        await q.enqueue(task)
        assert [t.id for t in await q.reserve(["default"], "w", 60)] == [task.id]


async def test_delayed_task_waits_as_a_nak_not_a_poll(nats_url: str, nats_prefix: str) -> None:
    """A delayed task's message is nak'd with its delay: it stays in the stream and the
    consumer hands it out again when due."""
    async with queue_at(nats_url, nats_prefix) as q:
        task = await q.enqueue(make_task(eta=await q.now() + 0.3))
        assert await q.reserve(["default"], "w", 60) == []
        info = await q.js.consumer_info(q.stream, consumer_name("default", 0))
        assert info.num_ack_pending == 1 and info.num_pending == 0
        (got,) = await eventually(
            lambda: q.reserve(["default"], "w", 60), "delayed task never came"
        )
        assert got.id == task.id


async def test_server_restart_keeps_acknowledged_work(tmp_path: Path) -> None:
    """Stop and restart the server mid-run: stored tasks survive, the client reconnects,
    the held (unacked) task is still leased and the others can be reserved."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    with private_server(port, tmp_path / "js") as first:
        async with queue_at(url, "restart") as q:
            done, held, waiting = [await q.enqueue(make_task()) for _ in range(3)]
            (r1,) = await q.reserve(["default"], "w", 60)
            assert await q.complete(r1.id, r1.lease_token or "", TaskState.SUCCEEDED)
            (r2,) = await q.reserve(["default"], "w", 60)
            first.terminate()
            first.wait(timeout=10)
            with private_server(port, tmp_path / "js"):

                async def back() -> Task | None:
                    # Calls made while the client reconnects may time out: ask again.
                    with contextlib.suppress(Exception), anyio.move_on_after(0.5):
                        return await q.get(r2.id)
                    return None

                assert (
                    await eventually(back, "no answer after the restart")
                ).state is TaskState.RUNNING
                assert (await q.get(r1.id)).state is TaskState.SUCCEEDED  # type: ignore[union-attr]
                (r3,) = await eventually(
                    lambda: q.reserve(["default"], "w", 60), "nothing to reserve"
                )
                assert r3.id == waiting.id and {r1.id, r2.id} == {done.id, held.id}
                assert await q.complete(r2.id, r2.lease_token or "", TaskState.SUCCEEDED)
                assert await q.stats() == {
                    "default": {TaskState.SUCCEEDED: 2, TaskState.RUNNING: 1}
                }
                with anyio.fail_after(5):
                    await q.close()


async def test_a_task_over_the_servers_max_payload_names_size_limit_and_fix(
    nats_url: str, nats_prefix: str
) -> None:
    async with queue_at(nats_url, nats_prefix) as q:
        limit = q.nc.max_payload
        task = make_task(payload=b"x" * (limit + 1000))
        with pytest.raises(SerializationError) as info:
            await q.enqueue(task)
        size = len(encoder.encode(task))
        message = str(info.value)
        assert message.startswith(f"the record of task {task.id!r} is ")
        assert f"over the max_payload of {limit} bytes of the NATS server at nats://" in message
        assert "raise max_payload in the server's configuration" in message
        assert int(message.split(" is ")[1].split()[0]) >= size
        assert await q.get(task.id) is None


# -- waiting pulls ------------------------------------------------------------------------


def _band_subjects(q: NatsTaskQueue, queue: str = "default") -> list[str]:
    return [f"{q.prefix}.q.{token(queue)}.{band}" for band in range(10)]


async def _no_wake(_tasks: Any) -> None:
    pass


async def test_an_idle_worker_is_handed_a_task_by_its_waiting_pull(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task published while a worker waits reaches it through the pull it keeps open
    (no wake-up is sent here, and the wait would last a minute), and the reserve claims
    it without asking which bands hold messages: the pull said the band was drained."""
    async with queue_at(nats_url, nats_prefix) as worker, queue_at(nats_url, nats_prefix) as p:
        assert await worker.reserve(["default"], "w", 60) == []  # the lease sets AckWait
        monkeypatch.setattr(p, "_wake", _no_wake)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.wait_for_work, ["default"], 60.0)
                await eventually(
                    lambda: _true(worker._pulls.armed(_band_subjects(worker))), "no pulls open"
                )
                task = await p.enqueue(make_task(priority=3))
        assert [m.subject for m in worker._pulls.held] == [f"{nats_prefix}.q.default.3"]

        async def no_backlog(_queues: Any) -> Any:
            raise AssertionError("a drained band was asked about")

        monkeypatch.setattr(worker, "_backlog", no_backlog)
        assert [t.id for t in await worker.reserve(["default"], "w", 60)] == [task.id]


async def test_a_busy_worker_puts_a_delivered_task_back_at_once(
    nats_url: str, nats_prefix: str
) -> None:
    """A pull outlives its wait: a message it delivers once the worker no longer waits
    (busy) is nak'd, so another worker gets the task now, not after AckWait (60 s)."""
    async with queue_at(nats_url, nats_prefix) as busy, queue_at(nats_url, nats_prefix) as idle:
        assert await busy.reserve(["default"], "w1", 60) == []
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(busy.wait_for_work, ["default"], 60.0)
                await eventually(
                    lambda: _true(busy._pulls.armed(_band_subjects(busy))), "no pulls open"
                )
                scope.cancel()
        assert await busy.reserve(["default"], "w1", 60) == []  # now busy: no wait
        task = await idle.enqueue(make_task())
        (got,) = await eventually(lambda: idle.reserve(["default"], "w2", 60), "not put back")
        assert got.id == task.id and got.attempts == 1
        info = await idle.js.consumer_info(idle.stream, consumer_name("default", 0))
        assert info.num_redelivered == 1  # delivered to the busy worker's pull first
        assert busy._pulls.held == []


async def test_wake_ups_name_their_task_and_an_empty_one_still_wakes(
    nats_url: str, nats_prefix: str
) -> None:
    """The wake-up of one task carries its id; one for a task a pull delivered here is
    ignored, and an empty one (what an older writer sends) wakes a waiter."""
    async with queue_at(nats_url, nats_prefix) as q:
        got: list[bytes] = []

        async def collect(msg: Any) -> None:
            got.append(msg.data)

        await q.nc.subscribe(f"{nats_prefix}.wake.default", cb=collect)
        one = await q.enqueue(make_task())
        await q.enqueue_many([make_task(), make_task()])
        await eventually(lambda: _true(len(got) == 2), "no wake-ups")
        assert got == [one.id.encode(), b""]

        q._pulls.seen.append(one.id)
        q._work.clear()
        await q._on_wake(nats.aio.msg.Msg(q.nc, data=one.id.encode()))
        assert not q._work.is_set()
        await q._on_wake(nats.aio.msg.Msg(q.nc, data=b"another"))
        assert q._work.is_set()

        q._work.clear()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(q.wait_for_work, ["default"], 60.0)
                await eventually(lambda: _true("default" in q._wake_subs), "no subscription")
                await q.nc.publish(f"{nats_prefix}.wake.default", b"")


async def _true(value: bool) -> bool:
    return value


async def test_a_slot_freed_while_a_limited_reserve_judges_starts_the_next_after_its_end(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reserve that began before the slot's task finished, and read its record after,
    leases the task it admits no earlier than that end (records never show more tasks
    running at once than the limit)."""
    limits = Limits.build(task_concurrency={"capped": 1})
    async with queue_at(nats_url, nats_prefix) as q, queue_at(nats_url, nats_prefix) as other:
        first = await q.enqueue(make_task(name="capped"))
        (held,) = (await q.reserve_limited(["default"], "w1", 60, 1, limits)).tasks
        second = await q.enqueue(make_task(name="capped"))
        assert await other.complete(held.id, held.lease_token or "", TaskState.SUCCEEDED)
        ended = (await other.get(first.id)).finished_at  # type: ignore[union-attr]
        assert ended is not None
        began = ended - 0.5

        async def before_the_end() -> float:
            return began

        monkeypatch.setattr(q, "now", before_the_end)
        (got,) = (await q.reserve_limited(["default"], "w1", 60, 1, limits)).tasks
        assert got.id == second.id and (got.started_at or 0.0) >= ended


async def test_a_slot_taken_but_not_yet_claimed_is_held_from_another_reserver(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reserver took the only slot (its task's id is in the entry) and has not yet
    claimed the task (its record still says pending): another reserver judging meanwhile
    must not take the slot over, else two run at once under a limit of one."""
    limits = Limits.build(task_concurrency={"capped": 1})
    async with queue_at(nats_url, nats_prefix) as q, queue_at(nats_url, nats_prefix) as other:
        first = await q.enqueue(make_task(name="capped"))
        judged, go_on = asyncio.Event(), asyncio.Event()
        claim_many = q._claim_many

        async def claim_later(*args: Any) -> list[Task | BaseException | None]:
            judged.set()  # the slot is taken; the claim waits here
            await go_on.wait()
            return await claim_many(*args)

        monkeypatch.setattr(q, "_claim_many", claim_later)
        with anyio.fail_after(30):
            reserving = asyncio.ensure_future(q.reserve_limited(["default"], "w1", 60, 1, limits))
            await judged.wait()
            assert (await q.get(first.id)).state is TaskState.PENDING  # type: ignore[union-attr]
            second = await q.enqueue(make_task(name="capped"))
            meanwhile = await other.reserve_limited(["default"], "w2", 60, 1, limits)
            go_on.set()
            (got,) = (await reserving).tasks
        assert meanwhile.tasks == [] and got.id == first.id
        assert (await q.get(second.id)).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_a_slot_taken_by_a_reserver_that_died_before_its_claim_frees_after_a_grace(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reserver that took a slot and died before claiming its task holds the slot for
    ``CLAIM_GRACE`` only: a reserve judging after that takes it."""
    limits = Limits.build(task_concurrency={"capped": 1})
    async with queue_at(nats_url, nats_prefix) as q, queue_at(nats_url, nats_prefix) as other:
        await q.enqueue(make_task(name="capped"))
        judged = asyncio.Event()

        async def die(*args: Any) -> list[Task | BaseException | None]:
            judged.set()
            await asyncio.Event().wait()
            raise AssertionError("never reached")

        monkeypatch.setattr(q, "_claim_many", die)
        with anyio.fail_after(30):
            reserving = asyncio.ensure_future(q.reserve_limited(["default"], "w1", 60, 1, limits))
            await judged.wait()
        reserving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reserving
        second = await other.enqueue(make_task(name="capped"))
        later = await other.now() + CLAIM_GRACE

        async def after_the_grace() -> float:
            return later

        monkeypatch.setattr(other, "now", after_the_grace)
        (got,) = (await other.reserve_limited(["default"], "w2", 60, 1, limits)).tasks
        assert got.id == second.id


async def test_a_concurrency_entry_of_the_older_layout_is_read_and_older_readers_read_ours(
    nats_url: str, nats_prefix: str
) -> None:
    """An entry written before members carried when they took their slot (two fields)
    still decodes, its members counting as taken long ago; the entry written now (three
    fields) decodes with the older two-field layout."""

    class Older(msgspec.Struct, array_like=True):
        next_at: float = -1.0
        running: list[str] = []

    limits = Limits.build(task_concurrency={"capped": 1})
    async with queue_at(nats_url, nats_prefix) as q:
        task = await q.enqueue(make_task(name="capped"))  # pending, never claimed
        kv = await q._limits_bucket()
        await kv.put(token("task:capped"), encoder.encode(Older(-1.0, [task.id])))
        (got,) = (await q.reserve_limited(["default"], "w1", 60, 1, limits)).tasks
        assert got.id == task.id
        found = await kv.get(token("task:capped"))
        assert found.value is not None
        assert msgspec.msgpack.decode(found.value, type=Older).running == [task.id]


@contextlib.asynccontextmanager
async def results_at(url: str, prefix: str) -> AsyncIterator[NatsResultStorage]:
    store = registry.resolve("result_storage", {"backend": "nats", "url": url, "prefix": prefix})
    assert isinstance(store, NatsResultStorage)
    async with store:
        yield store


async def expected_flushed(results: NatsResultStorage) -> None:
    """Return once the results store has handled every put made before this call: a
    result under an expected id is seen only by its put's message."""
    results.expect("flush")
    await results.set(TaskResult(task_id="flush", state=TaskState.SUCCEEDED, value=b"f"))
    assert await results.wait("flush", 5.0) is not None


async def test_an_expected_result_is_caught_without_a_read_and_a_fenced_one_never(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result expected before its task was enqueued (the app's fresh ids) comes from
    its put's message with no read before the wait sleeps; the refused finish of an
    attempt that lost its lease puts nothing, so the waiter never sees its value."""
    async with (
        queue_at(nats_url, nats_prefix) as queue,
        results_at(nats_url, nats_prefix) as results,
    ):
        results.expect("before-the-first-wait")
        assert "before-the-first-wait" not in results._expected  # nothing would catch it
        assert await results.wait("warm-up", 0.0) is None  # subscribes to every key
        reads: list[list[str]] = []
        read = results.inbox.get

        async def counted(bucket: str, keys: Any) -> Any:
            reads.append(list(keys))
            return await read(bucket, keys)

        monkeypatch.setattr(results.inbox, "get", counted)
        task = make_task(created_at=time.time())
        results.expect(task.id)
        await queue.enqueue(task)
        [held] = await queue.reserve(["default"], "w1", 60, 1)
        waiting = asyncio.create_task(results.wait(task.id, 30.0))
        late = TaskResult(task_id=task.id, state=TaskState.SUCCEEDED, value=b"late")
        refused = (task.id, "another-token", TaskState.SUCCEEDED, None)
        assert await queue.finish_many([refused], [late], [], results, None) == [False]
        await expected_flushed(results)
        assert not waiting.done()  # the late value was never put
        ok = TaskResult(task_id=task.id, state=TaskState.SUCCEEDED, value=b"ok")
        assert held.lease_token is not None
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
        assert await results.wait("now", 0.0) is None and reads == [[token("now")]]
        # Waits not expected read first, as before.
        assert await results.wait(task.id, 1.0) is not None
        assert reads[-1] == [token(task.id)]
        # A large result is not held for a wait that may never come: its wait reads it.
        results.expect("large")
        big = b"x" * (KEPT_MAX + 1)
        await results.set(TaskResult(task_id="large", state=TaskState.SUCCEEDED, value=big))
        await expected_flushed(results)
        assert token("large") not in results._expected
        got = await results.wait("large", 5.0)
        assert got is not None and got.value == big and reads[-1] == [token("large")]


async def test_expectations_are_bounded_and_a_reconnect_makes_the_wait_read(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer that never waits keeps at most EXPECTED_MAX expectations (the oldest
    let go: its wait reads first); after a reconnect, which may have lost puts, an
    expectation made before it is not trusted either."""
    from omniq_backend_nats import results as results_module

    monkeypatch.setattr(results_module, "EXPECTED_MAX", 2)
    async with results_at(nats_url, nats_prefix) as results:
        assert await results.wait("warm-up", 0.0) is None
        for task_id in ("a", "b", "c"):
            results.expect(task_id)
        assert list(results._expected) == [token("b"), token("c")]
        await results.set(TaskResult(task_id="a", state=TaskState.SUCCEEDED, value=b"a"))
        got = await results.wait("a", 5.0)  # read: its expectation was let go
        assert got is not None and got.value == b"a"
        # A put lost while disconnected: the expectation says nothing came, and the
        # client's reconnect count moved since the subscription was known registered.
        del results._expected[token("b")]
        await results.set(TaskResult(task_id="b", state=TaskState.SUCCEEDED, value=b"b"))
        await expected_flushed(results)
        results.expect("b")
        reads: list[list[str]] = []
        read = results.inbox.get

        async def counted(bucket: str, keys: Any) -> Any:
            reads.append(list(keys))
            return await read(bucket, keys)

        monkeypatch.setattr(results.inbox, "get", counted)
        monkeypatch.setitem(results.nc.stats, "reconnects", results.nc.stats["reconnects"] + 1)
        got = await results.wait("b", 5.0)
        assert got is not None and got.value == b"b" and reads == [[token("b")]]
        assert results._expected == {}  # every expectation made before it let go


async def test_a_scan_reads_every_key_across_many_small_pulls(
    nats_url: str, nats_prefix: str
) -> None:
    """Scans pull a few messages at a time (a burst of many held up the replies of the
    tasks' own steps): every key still comes, once, with its latest value."""
    from omniq_backend_nats import connection

    count = connection._SCAN_BATCH * 3 + 1
    async with results_at(nats_url, nats_prefix) as results:
        stored = [
            TaskResult(task_id=f"r{i}", state=TaskState.SUCCEEDED, value=b"%d" % i)
            for i in range(count)
        ]
        await results.set_many(stored)
        await results.set(TaskResult(task_id="r0", state=TaskState.SUCCEEDED, value=b"new"))
        seen = [key async for key, _, _ in results.scan_bucket(results.bucket)]
        assert sorted(seen) == sorted(token(r.task_id) for r in stored)
        got = await results.get("r0")
        assert got is not None and got.value == b"new"


async def test_a_process_that_stopped_waiting_stops_receiving_every_result(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscription to every key is dropped at a put once no wait started for
    KEEP_IDLE seconds: expectations are not kept then, and the next wait subscribes
    again and reads first."""
    from omniq_backend_nats import results as results_module

    async with results_at(nats_url, nats_prefix) as results:
        assert await results.wait("warm-up", 0.0) is None
        sub = results._every
        assert sub is not None and results._since is not None
        monkeypatch.setattr(results_module, "KEEP_IDLE", 0.0)
        await results.set(TaskResult(task_id="other", state=TaskState.SUCCEEDED, value=b"o"))

        async def dropped() -> bool:
            return results._every is None and sub.subject not in {
                s.subject for s in results.nc._subs.values()
            }

        await eventually(dropped, "the subscription to every key dropped")
        results.expect("later")
        assert results._expected == {}  # nothing would catch it
        await results.set(TaskResult(task_id="later", state=TaskState.SUCCEEDED, value=b"l"))
        got = await results.wait("later", 5.0)  # subscribes again, reads
        assert got is not None and got.value == b"l" and results._every is not None


async def test_an_expected_wait_reads_before_it_gives_up(nats_url: str, nats_prefix: str) -> None:
    """A wait that skipped its first read (the result was expected) still reads before it
    gives up: a result written in time whose put's message is handled only after the
    deadline (a busy event loop here; a reconnect would lose it) is returned, not None."""
    async with results_at(nats_url, nats_prefix) as results:
        assert await results.wait("warm-up", 0.0) is None  # subscribes to every key
        results.expect("busy")
        waiting = asyncio.create_task(results.wait("busy", 0.3))

        async def sleeping() -> bool:
            return token("busy") in results._waiters

        await eventually(sleeping, "the wait never slept")
        deadline = time.monotonic() + 0.3
        # Another process writes the result while this loop is blocked, past the deadline.
        code = (
            "import asyncio\n"
            "from omniq.models import TaskResult, TaskState\n"
            "from omniq.registry import registry\n"
            "async def main():\n"
            f"    ref = {{'backend': 'nats', 'url': {nats_url!r}, 'prefix': {nats_prefix!r}}}\n"
            "    async with registry.resolve('result_storage', ref) as s:\n"
            "        await s.set(TaskResult(task_id='busy', state=TaskState.SUCCEEDED,"
            " value=b'b'))\n"
            "asyncio.run(main())\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # noqa: ASYNC221
        time.sleep(max(0.0, deadline - time.monotonic()) + 0.05)  # noqa: ASYNC251
        got = await asyncio.wait_for(waiting, 10)
        assert got is not None and got.value == b"b"


@contextlib.asynccontextmanager
async def event_stores(url: str, prefix: str) -> AsyncIterator[tuple[NatsEventStorage, ...]]:
    """Two event stores: ``prefix``'s and a reference one beside it (removed after)."""
    stores = [NatsEventStorage.from_url(url, prefix=p) for p in (prefix, f"{prefix}r")]
    async with stores[0], stores[1]:
        try:
            yield tuple(stores)
        finally:
            await stores[1].js.delete_stream(stores[1].stream)


async def test_bundled_events_read_as_events_one_by_one(nats_url: str, nats_prefix: str) -> None:
    """A bulk enqueue's bundles (one message per queue and type) and events stored one
    per message, mixed: every reader (queries by task, queue, type and time, counts,
    cleanup) gives what it gives for the same events stored one per message."""
    t0 = 1_700_000_000.0
    tasks = [f"t.{i}" for i in range(6)]
    bulk = [
        make_event(
            task_id=tasks[i % 6],
            queue=("a.q", "b")[i % 2],
            type=EventType.STARTED if i % 3 == 0 else EventType.ENQUEUED,
            timestamp=t0 + i,
        )
        for i in range(40)
    ]
    singles = [
        make_event(
            task_id=tasks[i % 6], queue="a.q", type=EventType.SUCCEEDED, timestamp=t0 + 0.5 + i * 3
        )
        for i in range(10)
    ]
    async with event_stores(nats_url, nats_prefix) as (bundled, reference):
        await bundled.append_many(singles[:5])
        messages = bundled.bundles(bulk, bundled.nc.max_payload)
        assert {subject.rsplit(".", 1)[1] for subject, _ in messages} == {BUNDLE}
        assert len(messages) == 4, "one message per queue and type"
        await bundled.inbox.publish(messages)
        await bundled.append_many(singles[5:])
        for events in (singles[:5], bulk, singles[5:]):
            await reference.append_many(events)

        queries: list[dict[str, Any]] = [
            {},
            {"order": "desc", "limit": 7},
            {"queue": "a.q"},
            {"types": [EventType.STARTED]},
            {"types": [EventType.STARTED, EventType.SUCCEEDED], "queue": "b"},
            {"since": t0 + 5, "until": t0 + 21},
            *({"task_id": t} for t in tasks),
            {"task_id": tasks[1], "types": [EventType.ENQUEUED]},
            {"task_id": tasks[0], "order": "desc", "limit": 3},
            {"task_id": "no-such-task"},
        ]
        for query in queries:
            expected = await reference.query(**query)
            assert await bundled.query(**query) == expected, query
        assert await bundled.query() != []
        window = {"since": t0, "until": t0 + 50, "step": 10.0}
        assert await bundled.counts(**window) == await reference.counts(**window)

        # Cleanup between two events of one bundle: the newer ones stay readable.
        assert await bundled.cleanup(t0 + 20.2) == await reference.cleanup(t0 + 20.2) > 0
        assert await bundled.query() == await reference.query()
        assert await bundled.cleanup(t0 + 100) == await reference.cleanup(t0 + 100) > 0
        assert await bundled.query() == []


async def test_a_bundle_leaves_out_only_what_it_cannot_decode(
    nats_url: str, nats_prefix: str
) -> None:
    """An element of a bundle that is no event is left out alone; a bundle that is not
    msgpack at all is left out whole, and the events around it are read."""
    import msgspec

    good = [make_event(task_id="t1", timestamp=1_700_000_000.0 + i) for i in range(3)]
    async with event_stores(nats_url, nats_prefix) as (events, _):
        [(subject, _data)] = events.bundles(good, events.nc.max_payload)
        raws = [msgspec.Raw(encoder.encode(e)) for e in good]
        await events.inbox.publish(
            [
                (subject, encoder.encode([raws[0], 42, raws[1]])),
                (subject, b"\xc1 not msgpack"),
            ]
        )
        await events.append_many(good[2:])
        assert await events.query() == good
        assert await events.query(task_id="t1") == good
        assert await events.cleanup(1_700_000_000.0 + 1.5) == 2
        assert await events.query() == good[2:]
        assert await stream_count_of(events) == 3, "the bad ones are kept, like a bad event"


async def test_a_query_by_task_reads_bundles_from_its_ids_time(
    nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query by a task whose id ``new_id`` made reads the bundles from the id's time
    less ``clock_skew`` (its enqueued event is in none before; the later of that and
    ``since``), not the queue's whole bulk history; an application's id, or one from
    the future, reads them all. Each finds its bundled event."""
    store = NatsEventStorage.from_url(nats_url, prefix=nats_prefix, clock_skew=0.0)
    async with store:
        read: list[str] = []  # the subjects of the bundles the reads deliver
        scan = store.scan

        async def counting(*args: Any, **kwargs: Any) -> AsyncIterator[nats.aio.msg.Msg]:
            async for msg in scan(*args, **kwargs):
                if msg.subject.endswith(BUNDLE):
                    read.append(msg.subject)
                yield msg

        monkeypatch.setattr(store, "scan", counting)

        async def bundled(*events: TaskEvent) -> None:
            await store.inbox.publish(store.bundles(events, store.nc.max_payload))

        future = f"{time.time_ns() + 3600 * 10**9:x}-{'0' * 16}"
        early = [make_event(task_id=i, queue="q") for i in ("order-1", future, new_id())]
        await bundled(*early)  # acknowledged: stored before the next id is made
        late_id = new_id()
        late = make_event(task_id=late_id, queue="q", timestamp=time.time())
        await bundled(late, make_event(queue="q"))

        async def query(task_id: str, **kw: Any) -> tuple[list[TaskEvent], int]:
            read.clear()
            found = await store.query(task_id=task_id, **kw)
            return found, len(read)

        assert await query(late_id) == ([late], 1), "the earlier bundle is not read"
        assert await query(late_id, queue="q") == ([late], 1)
        assert await query(late_id, since=late.timestamp - 3600) == ([late], 1)
        assert await query(late_id, since=late.timestamp) == ([late], 1)
        assert await query(late_id, since=late.timestamp + 60) == ([], 0)
        for event in early:
            assert await query(event.task_id) == ([event], 2), event.task_id
        assert await query(early[0].task_id, since=late.timestamp) == ([], 1)


async def test_two_cleanups_at_once_store_a_partly_old_bundle_once(
    nats_url: str, nats_prefix: str
) -> None:
    """Two workers' retention running at once over a bundle of old and new events: the
    second reads it before the first deletes it, and both store its new events anew.
    They must be stored once (every worker runs retention, so runs overlap)."""
    t0 = 1_700_000_000.0
    bulk = [make_event(task_id=f"t{i}", timestamp=t0 + i) for i in range(4)]
    async with event_stores(nats_url, nats_prefix) as (first, _):
        second = NatsEventStorage.from_url(nats_url, prefix=nats_prefix)
        async with second:
            await first.inbox.publish(first.bundles(bulk, first.nc.max_payload))
            purge = first.js.purge_stream

            async def purge_after_the_other(*args: Any, **kwargs: Any) -> Any:
                await second.cleanup(t0 + 1.5)  # (the other worker's run, in between)
                return await purge(*args, **kwargs)

            first.js.purge_stream = purge_after_the_other  # type: ignore[method-assign]
            await first.cleanup(t0 + 1.5)
            assert await first.query() == bulk[2:], "each new event stored once"


async def stream_count_of(events: NatsEventStorage) -> int:
    return (await events.js.stream_info(events.stream)).state.messages


async def test_a_bulk_delivery_message_carries_the_record_as_stored(
    nats_url: str, nats_prefix: str
) -> None:
    """The delivery message of a bulk-enqueued task carries the very bytes of its record
    at the revision it names (the worker leases from that copy without a read)."""
    async with queue_at(nats_url, nats_prefix) as q:
        tasks = [make_task() for _ in range(3)]
        await q.enqueue_batches([(tasks, [])], None)
        for seq in (1, 2, 3):
            msg = await q.js.get_msg(q.stream, seq)
            assert msg.headers is not None and msg.data is not None
            entry = await q._tasks.get(token(task_decoder.decode(msg.data).id))
            assert msg.data == entry.value
            assert int(msg.headers["Omniq-Rev"]) == entry.revision


@pytest.mark.parametrize("read_fast", [True, False], ids=["acks-read-here", "acks-by-callback"])
@pytest.mark.parametrize("at_once", [True, False], ids=["one-buffer", "publish-each"])
async def test_a_batch_written_at_once_or_one_publish_each_gets_the_same_answers(
    nats_url: str, nats_prefix: str, at_once: bool, read_fast: bool, monkeypatch: Any
) -> None:
    """A batch's commands go out as one buffer through the client's internals, or, when
    the client lacks them (``Inbox.at_once`` false), one ``publish`` each; the replies
    are read from the client's buffer (:mod:`.acks`) or, without its internals
    (``Inbox.read_fast`` false), through the subscription's callback: the server stores
    the same and every way gives the same answers (puts, compare-and-sets, publishes,
    gets)."""
    assert not _writes_at_once(object()), "a client without the internals publishes each"
    called_back: list[str] = []
    on_reply = Inbox._on_reply

    async def counting(self: Inbox, msg: nats.aio.msg.Msg) -> None:
        called_back.append(msg.subject)
        await on_reply(self, msg)

    monkeypatch.setattr(Inbox, "_on_reply", counting)
    async with queue_at(nats_url, nats_prefix) as q:
        inbox = q.inbox
        assert inbox.at_once, "nats-py as installed has the internals"
        inbox.at_once, inbox.read_fast = at_once, read_fast
        bucket = f"{nats_prefix}_tasks"
        revs = await inbox.write(bucket, [("a", b"1", 0), ("b", b"2", None), ("c", b"", 0)])
        assert WRONG_REVISION not in revs and len(set(revs)) == 3
        again = await inbox.write(bucket, [("a", b"x", 0), ("b", b"3", revs[1])])
        assert again[0] == WRONG_REVISION and again[1] > revs[2]
        assert await inbox.get(bucket, ["a", "b", "c", "none"]) == [
            (b"1", revs[0]),
            (b"3", again[1]),
            (b"", revs[2]),
            None,
        ]
        # A header Client.publish would trim goes its way: the same message is stored.
        subject = f"{nats_prefix}.q.default.0"
        (seq,) = sequences(await inbox.ask([(subject, b"hi", {"Omniq-Test": " padded "})]))
        msg = await q.js.get_msg(q.stream, seq)
        assert msg.data == b"hi" and msg.headers == {"Omniq-Test": "padded"}
        assert await inbox.publish([(subject, b"m1"), (subject, b"m2")]) == [seq + 1, seq + 2]
        with pytest.raises(nats.errors.MaxPayloadError):
            await inbox.publish([(subject, b"x" * (q.nc.max_payload + 1))])
        assert inbox.reads_fast is read_fast
        # Read here: every reply but the direct gets' (headers: parsed by the client,
        # then handed over in its read loop, deliver_in_place): none by the callback.
        assert len(called_back) == (0 if read_fast else 12)


class _Parser:
    """What :func:`read_replies_fast` needs of the client's parser; records what is left
    to it."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.state = 1
        self.left: list[bytes] = []

    async def parse(self, data: bytes = b"") -> None:
        self.buf.extend(data)
        if b"\r\n" in self.buf:  # (no whole line yet: kept, as the client's parser does)
            self.left.append(bytes(self.buf))
            self.buf.clear()


async def test_replies_read_from_the_buffer_leave_every_other_frame_in_order() -> None:
    """Header-less frames of the inbox's subscription at the head of the buffer are
    answered, also when they arrive in pieces (one cut short waits for its rest); the
    first other frame (another
    subscription's, one with a reply subject, headers) and all after it go to the
    client's parser; a client without the internals is left alone."""
    from types import SimpleNamespace

    nc: Any = SimpleNamespace(_ps=_Parser(), stats={"in_msgs": 0, "in_bytes": 0})
    sub: Any = SimpleNamespace(_id=7)
    got: list[tuple[str, bytes]] = []
    assert not read_replies_fast(SimpleNamespace(), sub, "_INBOX.x.", lambda k, m: None)
    assert read_replies_fast(nc, sub, "_INBOX.x.", lambda k, m: got.append((k, m.data)))
    wire = (
        b"MSG _INBOX.x.1 7  4\r\nack1\r\n"
        b"MSG _INBOX.x.2 7 4\r\nack2\r\n"
        b"MSG _INBOX.x.3 7 4\r\nack3\r\n"
    )
    for piece in (wire[:10], wire[10:30], wire[30:47], wire[47:]):
        await nc._ps.parse(piece)
    assert got == [("1", b"ack1"), ("2", b"ack2"), ("3", b"ack3")]
    assert nc.stats == {"in_msgs": 3, "in_bytes": 12}
    assert nc._ps.left == []
    for other in (
        b"MSG _INBOX.y.1 8 2\r\nhi\r\n",
        b"MSG _INBOX.x.4 7 _INBOX.r 2\r\nhi\r\n",
        b"HMSG _INBOX.x.5 7 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
    ):
        nc._ps.left.clear()
        await nc._ps.parse(other + b"MSG _INBOX.x.9 7 1\r\nz\r\n")
        assert nc._ps.left == [other + b"MSG _INBOX.x.9 7 1\r\nz\r\n"]
    assert len(got) == 3


def test_bundles_split_to_fit_max_payload() -> None:
    """A window's events of one queue and type too large for one message go in several,
    each within ``max_payload``, in order; a single event too large goes alone (for the
    server to refuse, as it refuses any message over the limit)."""
    import msgspec

    store = NatsEventStorage.from_url("nats://127.0.0.1:4222", prefix="p")
    events = [make_event(task_id=f"t{i}", detail={"pad": "x" * 100}) for i in range(40)]
    size = len(encoder.encode(events[0]))
    messages = store.bundles(events, size * 7)
    assert len(messages) > 1
    assert all(len(data) <= size * 7 for _, data in messages)
    assert {subject for subject, _ in messages} == {f"p.ev.default.enqueued.{BUNDLE}"}
    decoded = [
        e for _, data in messages for e in msgspec.msgpack.decode(data, type=list[TaskEvent])
    ]
    assert decoded == events
    assert len(store.bundles(events[:2], size // 2)) == 2


# -- a consumer wedged by an unclean stop --------------------------------------------------
#
# A durable pull consumer's stored state can list as delivered, unacknowledged messages
# the stream has deleted (a kill -9 that kept the stream's deletes and lost the
# consumer's acks). nats-server 2.9 fails to load each as it comes up for redelivery
# ("Received an error looking up message for consumer: deleted message") and leaves the
# no_wait pull that asked for it with no answer at all, every AckWait again: a queue's
# pulls all time out while the stream holds its messages. The task queue recreates such a
# consumer (repair.py). The test makes the unclean stop deterministic:
# the consumer's state file is saved while the tasks are leased and put back after their
# completions deleted their messages.

#: Leased when the state is saved, completed before it is put back: deleted messages
#: the restored consumer still lists as pending (more than pulls come per AckWait).
_LOST_ACKS = 40
_OPTIONS = {"ack_wait": 1.0, "outage_timeout": 1.0}


def consumer_states(store: Path, stream: str) -> Iterator[Path]:
    return (store / "jetstream" / "$G" / "streams" / stream / "obs").glob("*/o.dat")


async def answered(q: NatsTaskQueue, task_id: str) -> Task | None:
    """The record, once the client answers again after a restart."""
    with contextlib.suppress(Exception), anyio.move_on_after(0.5):
        return await q.get(task_id)
    return None


async def wedged(q: NatsTaskQueue) -> bool:
    """Whether a pull of queue ``default``'s band-0 consumer goes unanswered: true once
    the lost messages come up for redelivery."""
    try:
        await q.inbox.pull(q.stream, consumer_name("default", 0), 1)
    except nats.errors.TimeoutError:
        return True
    return False


async def test_a_consumer_whose_pulls_go_unanswered_is_recreated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two instances reserve from a wedged consumer: their pulls time out a few times,
    one of them recreates the consumer (one warning), and both get the new tasks within
    the deadline. A task leased before the wedge is fenced by its record (not handed out
    again) and its heartbeat and completion, sent on the old consumer's reply subject,
    still count (the ack deletes its message)."""
    port, js_dir = free_port(), tmp_path / "js"
    url = f"nats://127.0.0.1:{port}"
    saved = tmp_path / "saved"
    with private_server(port, js_dir) as server:
        async with queue_at(url, "wedge", **_OPTIONS) as q:
            await q.enqueue(make_task(queue="other"))  # keeps the stream's first sequence
            held_task = await q.enqueue(make_task())
            (held,) = await q.reserve(["default"], "w", 600)
            assert held.id == held_task.id
            await q.enqueue_many([make_task() for _ in range(_LOST_ACKS)])
            leased = await q.reserve(["default"], "w", 600, limit=_LOST_ACKS)
            assert len(leased) == _LOST_ACKS
            server.terminate()  # a clean stop writes the consumers' state
            server.wait(timeout=10)
            saved.mkdir()
            states = {p: saved / p.parent.name for p in consumer_states(js_dir, q.stream)}
            assert states
            for state, copy in states.items():
                shutil.copy(state, copy)
            with private_server(port, js_dir) as second:
                await eventually(lambda: answered(q, held.id), "no answer after the restart")
                done = await q.complete_many(
                    [(t.id, t.lease_token or "", TaskState.SUCCEEDED, None) for t in leased]
                )
                assert done == [True] * _LOST_ACKS
                second.terminate()
                second.wait(timeout=10)
            for state, copy in states.items():  # the acks are lost, the deletes kept
                shutil.copy(copy, state)
            with private_server(port, js_dir):
                await eventually(lambda: answered(q, held.id), "no answer after the restart")
                await eventually(lambda: wedged(q), "no pull went unanswered")
                async with (
                    queue_at(url, "wedge", **_OPTIONS) as one,
                    queue_at(url, "wedge", **_OPTIONS) as two,
                ):
                    fresh = {t.id for t in await one.enqueue_many([make_task() for _ in range(3)])}
                    got: list[tuple[NatsTaskQueue, Task]] = []

                    async def reserve(store: NatsTaskQueue) -> None:
                        while not fresh <= {t.id for _, t in got}:
                            with contextlib.suppress(Exception):
                                tasks = await store.reserve(["default"], "w2", 600, limit=3)
                                got.extend((store, t) for t in tasks)
                            await asyncio.sleep(0.05)

                    with caplog.at_level(logging.WARNING), anyio.fail_after(45):
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(reserve, one)
                            tg.start_soon(reserve, two)
                    assert {t.id for _, t in got} == fresh  # the held task stays fenced
                    warnings = [r for r in caplog.records if "recreat" in r.getMessage()]
                    assert len(warnings) == 1, [r.getMessage() for r in warnings]
                    assert q.stream in warnings[0].getMessage()
                    for store, task in got:
                        assert await store.complete(
                            task.id, task.lease_token or "", TaskState.SUCCEEDED
                        )
                # A heartbeat (+WPI) and the completion (ack) on the old reply subject.
                assert await q.heartbeat([(held.id, held.lease_token or "")], 600) == [held.id]
                assert await q.complete(held.id, held.lease_token or "", TaskState.SUCCEEDED)
                record = await q.get(held.id)
                assert record is not None and record.state is TaskState.SUCCEEDED
                assert record.attempts == 1
                # Its ack, on the old consumer's reply subject, deleted its message.

                async def emptied() -> bool:
                    return await q._backlog(["default"]) == {}

                await eventually(emptied, "messages of finished tasks are left")


@contextlib.asynccontextmanager
async def wedged_server(tmp_path: Path) -> AsyncIterator[str]:
    """A private server whose band-0 consumer of queue ``default`` (prefix ``wedge``) is
    wedged as in :func:`test_a_consumer_whose_pulls_go_unanswered_is_recreated`; yields
    its URL once a pull of that consumer goes unanswered."""
    port, js_dir = free_port(), tmp_path / "js"
    url = f"nats://127.0.0.1:{port}"
    saved = tmp_path / "saved"
    with private_server(port, js_dir) as server:
        async with queue_at(url, "wedge", **_OPTIONS) as q:
            await q.enqueue(make_task(queue="other"))
            await q.enqueue_many([make_task() for _ in range(_LOST_ACKS)])
            leased = await q.reserve(["default"], "w", 600, limit=_LOST_ACKS)
            assert len(leased) == _LOST_ACKS
            server.terminate()
            server.wait(timeout=10)
            saved.mkdir()
            states = {p: saved / p.parent.name for p in consumer_states(js_dir, q.stream)}
            for state, copy in states.items():
                shutil.copy(state, copy)
            with private_server(port, js_dir) as second:
                await eventually(lambda: answered(q, leased[0].id), "no answer after restart")
                done = await q.complete_many(
                    [(t.id, t.lease_token or "", TaskState.SUCCEEDED, None) for t in leased]
                )
                assert done == [True] * _LOST_ACKS
                second.terminate()
                second.wait(timeout=10)
            for state, copy in states.items():
                shutil.copy(copy, state)
            with private_server(port, js_dir):
                await eventually(lambda: answered(q, leased[0].id), "no answer after restart")
                await eventually(lambda: wedged(q), "no pull went unanswered")
                yield url


async def test_a_worker_waiting_for_work_repairs_a_wedged_consumer(tmp_path: Path) -> None:
    """A worker that waits for work between empty reserves (as the worker loop does,
    waits under a second) still gets to the repair: a wait whose pulls were left open
    and unanswered is no sign that the bands are drained."""
    async with wedged_server(tmp_path) as url, queue_at(url, "wedge", **_OPTIONS) as one:
        fresh = {t.id for t in await one.enqueue_many([make_task() for _ in range(3)])}
        got: set[str] = set()
        with anyio.fail_after(45):
            while not fresh <= got:
                with contextlib.suppress(Exception):
                    got |= {t.id for t in await one.reserve(["default"], "w2", 600, limit=3)}
                with contextlib.suppress(Exception):
                    await one.wait_for_work(["default"], 0.5)
        assert got == fresh


async def test_a_repair_claimed_by_an_instance_that_died_is_taken_over(tmp_path: Path) -> None:
    """An instance killed after its claim in ``<prefix>_repairs`` and before its delete
    (or whose delete timed out) leaves the claim of a consumer still wedged: another
    instance that finds the claim older than its own ``CONSUMER.INFO`` by more than
    ``outage_timeout`` takes the repair over, not an hour later."""
    async with wedged_server(tmp_path) as url, queue_at(url, "wedge", **_OPTIONS) as one:
        band = consumer_name("default", 0)
        info = await one.js.consumer_info(one.stream, band)
        repairs = await one.ensure_bucket("wedge_repairs", 3600.0)
        claimed = b"%r" % await one.now()  # the claim's time, as a repairer writes it
        await repairs.create(token(f"{band}@{info.created.isoformat()}"), claimed)  # then died
        fresh = {t.id for t in await one.enqueue_many([make_task() for _ in range(3)])}
        got: set[str] = set()
        with anyio.fail_after(45):
            while not fresh <= got:
                with contextlib.suppress(Exception):
                    got |= {t.id for t in await one.reserve(["default"], "w2", 600, limit=3)}
                await asyncio.sleep(0.05)
        assert got == fresh


async def test_a_consumer_deleted_by_a_repairer_that_died_is_recreated(tmp_path: Path) -> None:
    """A repairer killed between its delete and its create leaves the consumer missing;
    a pull of a missing consumer goes unanswered too. An instance that had set it up
    (cached) and waits for work between reserves creates it again."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    with private_server(port, tmp_path / "js"):
        async with queue_at(url, "gone", **_OPTIONS) as one:
            await one.enqueue(make_task())
            assert len(await one.reserve(["default"], "w", 600)) == 1
            await one.wait_for_work(["default"], 0.1)  # its waiting pulls are set up too
            await one.js.delete_consumer(one.stream, consumer_name("default", 0))  # then died
            task = await one.enqueue(make_task())
            got: list[Task] = []
            with anyio.fail_after(30):
                while not got:
                    with contextlib.suppress(Exception):
                        got = await one.reserve(["default"], "w", 600)
                    with contextlib.suppress(Exception):
                        await one.wait_for_work(["default"], 0.5)
            assert [t.id for t in got] == [task.id]


def api_calls(monitor: int) -> int:
    """JetStream API requests the server has served (its monitoring ``/jsz``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/jsz") as reply:
        return int(json.load(reply)["api"]["total"])


async def test_an_unanswered_count_of_an_emptied_band_is_dropped(tmp_path: Path) -> None:
    """A pull that timed out (the consumer gone, or the server held up) on a band that
    then holds nothing: no pull of it would reset the count, which must not keep an idle
    instance from trusting its open pulls (a ``STREAM.INFO`` after every wait)."""
    port, monitor = free_port(), free_port()
    url = f"nats://127.0.0.1:{port}"
    with private_server(port, tmp_path / "js", "-m", str(monitor)):
        async with queue_at(url, "count", **_OPTIONS) as one:
            await one.enqueue(make_task())
            (first,) = await one.reserve(["default"], "w", 600)
            assert await one.complete(first.id, first.lease_token or "", TaskState.SUCCEEDED)
            await one.js.delete_consumer(one.stream, consumer_name("default", 0))
            await one.enqueue(make_task())
            with pytest.raises(Exception):  # noqa: B017, PT011 (the pull timed out)
                await one.reserve(["default"], "w", 600)
            await one.js.purge_stream(one.stream)  # the band holds nothing now
            for _ in range(2):  # the first reserve finds the band empty
                await one.reserve(["default"], "w", 600)
                await one.wait_for_work(["default"], 0.5)
            before = api_calls(monitor)
            for _ in range(10):
                assert await one.reserve(["default"], "w", 600) == []
                await one.wait_for_work(["default"], 0.5)
            assert api_calls(monitor) - before < 5
