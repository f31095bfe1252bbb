"""What only the fsspec backend has: URL forms, its file layout, hostile names used
directly on the stores, crash repair, compare-and-set on S3, and refusing a task queue
where claims cannot be made safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from omniq.errors import CapabilityError, ConfigError
from omniq.interfaces import Capability
from omniq.models import TaskState
from omniq.registry import registry
from omniq.testing import make_event, make_result, make_schedule, make_task
from omniq_backend_fsspec import records
from omniq_backend_fsspec.engine import QueueEngine
from omniq_backend_fsspec.layout import SEQ_SHIFT, record_path
from omniq_backend_fsspec.names import encode
from omniq_backend_fsspec.queue import FileTaskQueue, FsspecTaskQueue, MemoryTaskQueue, S3TaskQueue
from omniq_backend_fsspec.results import FsspecResultStorage

pytestmark = pytest.mark.anyio

HOSTILE = [
    "../../escaped",
    "/etc/passwd",
    "..",
    ".",
    "a/b",
    "a\\b",
    "nul\x00byte",
    "~",
    "%2e%2e",
    "*?[glob]",
    "new\nline",
    "é/ü",
    "x" * 600,
    "%h" + "0" * 64,
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


# -- URLs and options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("file://relative/dir", "absolute path"),
        ("file:///a/../b", "'..'"),
        ("s3://", "bucket"),
        ("nosuchproto://x", "fsspec does not know"),
        ("fsspec+nosuchproto://x", "nosuchproto"),
        ("memory://x?fsink=1", "did you mean 'fsync'"),
        ("memory://x#frag", "fragment"),
    ],
)
def test_bad_urls_are_refused_by_name(url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="fsspec") as info:
        FsspecResultStorage.from_url(url)
    assert needle in str(info.value)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="did you mean 'fsync'"):
        registry.resolve("task_queue", {"url": "memory://x", "fsyn": True})
    with pytest.raises(ConfigError, match="file:// only"):
        registry.resolve("task_queue", {"url": "memory://x", "fsync": True})
    with pytest.raises(ConfigError, match=r"storage_options='key=1'.*expected a mapping"):
        registry.resolve("result_storage", {"url": "memory://x", "storage_options": "key=1"})


def test_options_may_come_in_the_query(tmp_path: Path) -> None:
    store = registry.resolve("task_queue", f"file://{tmp_path}?fsync=true")
    assert store.location.fsync is True and store.location.base_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="'storage_options' cannot come in the URL"):
        registry.resolve("task_queue", f"file://{tmp_path}?storage_options=x")


def test_url_forms_resolve_to_the_right_class(tmp_path: Path) -> None:
    assert type(registry.resolve("task_queue", f"file://{tmp_path}")) is FileTaskQueue
    assert type(registry.resolve("task_queue", "memory://x")) is MemoryTaskQueue
    assert type(registry.resolve("task_queue", "fsspec+memory://x")) is MemoryTaskQueue
    default = registry.resolve("task_queue", "fsspec")
    assert type(default) is MemoryTaskQueue and default.location.base_dir == "omniq"
    assert registry.resolve("result_storage", "gcs://bucket/p").location.protocol == "gs"


def test_local_only_follows_the_protocol(tmp_path: Path) -> None:
    for kind in ("result_storage", "event_storage"):
        assert registry.resolve(kind, f"file://{tmp_path}").local_only is True
        assert registry.resolve(kind, "memory://x").local_only is True
        assert registry.resolve(kind, "s3://bucket/prefix").local_only is False
    assert FileTaskQueue.local_only and MemoryTaskQueue.local_only


@pytest.mark.parametrize("url", ["gs://bucket/p", "az://container/p", "fsspec+sftp://host/dir"])
def test_task_queue_without_compare_and_set_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        registry.resolve("task_queue", url)
    message = str(info.value)
    assert "no task queue" in message and "twice" in message and "s3://" in message
    assert url.split("://")[0].removeprefix("fsspec+") in message


def test_task_queue_on_s3_is_shared_but_not_local() -> None:
    queue = registry.resolve("task_queue", "s3://bucket/prefix")
    assert type(queue) is S3TaskQueue and not queue.local_only
    assert Capability.CROSS_PROCESS in S3TaskQueue.capabilities
    assert Capability.DEPENDENCIES not in S3TaskQueue.capabilities


def test_secrets_in_urls_are_masked() -> None:
    with pytest.raises(ConfigError) as info:
        registry.resolve("task_queue", "gs://user:hunter2@bucket/prefix")
    assert "hunter2" not in str(info.value)


# -- hostile names, used directly on the stores (no app validation in between) ---------------


async def test_hostile_ids_and_queue_names_stay_under_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "base"
    queue = FsspecTaskQueue.from_url(f"file://{base}")
    async with queue:
        tasks = [make_task(id=name, queue=name) for name in HOSTILE]
        await queue.enqueue_many(tasks)
        for task in tasks:
            fetched = await queue.get(task.id)
            assert fetched is not None and fetched.id == task.id and fetched.queue == task.queue
            got = await queue.reserve([task.queue], "w", 60.0)
            assert [t.id for t in got] == [task.id]
            assert await queue.complete(task.id, got[0].lease_token or "", TaskState.SUCCEEDED)
        assert set(await queue.stats()) == set(HOSTILE)
        for name in HOSTILE:
            await queue.add_schedule(make_schedule(id=name))
            assert (await queue.get_schedule(name)).id == name  # type: ignore[union-attr]
    results = registry.resolve("result_storage", f"file://{base}")
    async with results:
        for name in HOSTILE:
            await results.set(make_result(task_id=name))
            assert (await results.get(name)).task_id == name  # type: ignore[union-attr]
    assert files_under(tmp_path) - files_under(base) == {base}, (
        "a file was written outside base_dir"
    )
    assert not any(p.name in ("..", ".") for p in files_under(base))


async def test_distinct_hostile_names_never_share_a_file() -> None:
    names = ["a.b", "a%2Eb", "a%b", "a:b", "a/b", "a_b"]
    async with registry.resolve("result_storage", "memory://hostile-distinct") as results:
        for name in names:
            await results.set(make_result(task_id=name, worker_id=name))
        for name in names:
            assert (await results.get(name)).worker_id == name  # type: ignore[union-attr]


# -- layout and crash repair -------------------------------------------------------------------


async def test_pending_tasks_are_filed_in_small_buckets() -> None:
    count = (1 << SEQ_SHIFT) + 10
    async with FsspecTaskQueue.from_url("memory://buckets") as queue:
        await queue.enqueue_many([make_task(priority=i % 2) for i in range(count)])
        pending = "queues/default/pending"
        sizes = sorted(len(queue.files.list(f"{pending}/{b}")) for b in queue.files.list(pending))
        assert max(sizes) <= 1 << SEQ_SHIFT and sum(sizes) == count, sizes
        first = await queue.reserve(["default"], "w", 60.0, limit=3)
        assert [t.priority for t in first] == [1, 1, 1]


async def test_an_entry_left_in_the_wrong_directory_is_repaired(tmp_path: Path) -> None:
    """A crash between moving an entry and rewriting its record loses nothing."""
    async with FsspecTaskQueue.from_url(f"file://{tmp_path}") as queue:
        task = await queue.enqueue(make_task())
        entry = next((tmp_path / "queues" / "default" / "pending").rglob("*-*"))
        running = tmp_path / "queues" / "default" / "running"
        running.mkdir(parents=True)
        entry.rename(running / entry.name)  # as if the record rewrite never happened
        assert await queue.release_expired_leases() == []
        assert [t.id for t in await queue.reserve(["default"], "w", 60.0)] == [task.id]


@pytest.mark.parametrize("sweep", ["purge", "cleanup"])
async def test_an_unreadable_record_of_a_long_id_is_deleted(sweep: str) -> None:
    """A task id whose encoding is too long for a file name is filed under its hash, and
    the stand-in for its unreadable record carries that hash as its id, which encodes to
    another name. Deleting it by the stand-in's id left the record with no entry: listed
    by nothing, kept forever, while ``purge()`` counted it deleted."""
    task_id = "x" + ":" * 80  # a valid id; its encoding exceeds a file name
    async with FsspecTaskQueue.from_url(f"memory://unreadable-long-id-{sweep}") as queue:
        await queue.enqueue(make_task(id=task_id, result_ttl=0.0))
        assert await queue.cancel(task_id)
        assert encode("task id", task_id).startswith("%h")
        queue.files.write(record_path(task_id), b"not a record")
        if sweep == "purge":
            assert await queue.purge() == 1
        else:
            await queue.cleanup()
        assert queue.files.list("tasks") == []
        assert await queue.get(task_id) is None


async def test_dependents_left_waiting_by_a_crash_are_settled_by_cleanup(tmp_path: Path) -> None:
    """A process killed between a parent's change and the settling of its dependents
    left them waiting; the cleanup sweep settles them as the parent's end would have."""
    async with FsspecTaskQueue.from_url(f"file://{tmp_path}") as queue:
        parent = await queue.enqueue(make_task())
        runner = await queue.enqueue(
            make_task(queue="after", depends_on=(parent.id,), on_parent_failure="run")
        )
        doomed = await queue.enqueue(make_task(depends_on=(parent.id,)))
        engine = QueueEngine(queue.files)
        rec = engine.records.load(encode("task id", parent.id))
        assert rec is not None  # the parent ends, and the process dies before settling:
        engine.records.save(
            rec, records.Record(rec.seq, replace(rec.task, state=TaskState.DEAD), rec.rev)
        )
        assert (await queue.get(runner.id)).state is TaskState.WAITING  # type: ignore[union-attr]
        await queue.cleanup()
        assert (await queue.get(runner.id)).state is TaskState.PENDING  # type: ignore[union-attr]
        cancelled = await queue.get(doomed.id)
        assert cancelled is not None and cancelled.state is TaskState.CANCELLED
        assert cancelled.error is not None and parent.id in cancelled.error.message


async def test_events_skip_batches_outside_the_time_range(tmp_path: Path) -> None:
    async with registry.resolve("event_storage", f"file://{tmp_path}") as events:
        await events.append_many([make_event(timestamp=100.0), make_event(timestamp=200.0)])
        await events.append_many([make_event(timestamp=300.0)])
        assert [e.timestamp for e in await events.query(since=250.0)] == [300.0]
        assert await events.cleanup(150.0) == 1
        assert [e.timestamp for e in await events.query()] == [200.0, 300.0]


async def test_results_and_events_on_s3(s3_ref: dict[str, Any]) -> None:
    """The object-store path end to end (the conformance suite covers the rest)."""
    async with registry.resolve("result_storage", s3_ref) as results:
        await results.set_many([make_result(task_id="a"), make_result(task_id="b")])
        assert set(await results.get_many(["a", "b", "c"])) == {"a", "b"}
        assert await results.delete("a") and not await results.delete("a")


# -- S3: compare-and-set instead of a lock -----------------------------------------------------


async def test_s3_claims_are_compare_and_set(s3_ref: dict[str, Any]) -> None:
    """Two writers starting from one version of a task: exactly one wins."""
    async with registry.resolve("task_queue", s3_ref) as queue:
        task = await queue.enqueue(make_task())
        first, second = QueueEngine(queue.files), QueueEngine(queue.files)
        one, two = (
            first.records.load(encode("task id", task.id)),
            second.records.load(encode("task id", task.id)),
        )
        assert one is not None and two is not None
        first.records.save(
            one, records.Record(one.seq, replace(one.task, lease_owner="first"), one.rev)
        )
        with pytest.raises(records.Conflict):
            second.records.save(
                two, records.Record(two.seq, replace(two.task, lease_owner="second"), two.rev)
            )
        assert (await queue.get(task.id)).lease_owner == "first"  # type: ignore[union-attr]
        with pytest.raises(CapabilityError, match="depends_on"):
            await queue.enqueue(make_task(depends_on=(task.id,)))


async def test_s3_entry_left_behind_by_a_crash_is_repaired(
    s3_ref: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with registry.resolve("task_queue", s3_ref) as queue:
        task = await queue.enqueue(make_task())
        engine = QueueEngine(queue.files)
        rec = engine.records.load(encode("task id", task.id))
        assert rec is not None
        # The record moves to a new rev but the process dies before moving its entry.
        moved = records.Record(rec.seq, rec.task, records.new_rev())
        engine.records.replace(record_path(task.id), records.encoder.encode(moved))
        assert await queue.reserve(["default"], "w", 60.0) == [], "a fresh mismatch is left alone"
        monkeypatch.setattr(records, "REPAIR_GRACE_NS", -1)
        assert await queue.reserve(["default"], "w", 60.0) == []  # this lister repairs it
        assert [t.id for t in await queue.reserve(["default"], "w", 60.0)] == [task.id]
