"""The result-storage contract: every rule of :class:`omniq.interfaces.BaseResultStorage`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anyio
import pytest

from ..interfaces import BaseResultStorage, Capability
from ..models import TaskResult, TaskState
from ..records import CORRUPT_RESULT
from ..registry import StoreKind
from .arguments import ResultArgumentTests
from .base import StoreContract, abstract_ref, open_store
from .factories import make_error, make_result
from .polling import SHORT, eventually, wait_past

__all__ = ["ResultStorageContract"]


class ResultStorageContract(StoreContract, ResultArgumentTests):
    """Conformance tests for a :class:`~omniq.interfaces.BaseResultStorage`.

    Override :meth:`result_storage_ref` with a URL or mapping for an empty namespace.
    """

    kind: ClassVar[StoreKind] = "result_storage"

    @pytest.fixture
    def result_storage_ref(self) -> Any:
        """Override: a URL or mapping for an EMPTY result-storage namespace of your backend."""
        raise abstract_ref("result_storage", 'f"mydb:///{tmp_path}/results.db"')

    @pytest.fixture
    async def result_storage(self, result_storage_ref: Any) -> AsyncIterator[BaseResultStorage]:
        """The store under test, opened from ``result_storage_ref`` and closed afterwards."""
        async with open_store("result_storage", result_storage_ref) as store:
            yield store

    async def corrupt_result(self, store: BaseResultStorage, task_id: str) -> None:
        """Override: make the stored result of ``task_id`` undecodable, as a disk fault
        would (a store that keeps objects rather than bytes may ``pytest.skip``)."""
        pytest.fail(
            "override corrupt_result(self, store, task_id) in your test class: make the "
            "stored result of task_id undecodable (e.g. bytes that are not msgpack)"
        )

    async def test_a_corrupt_result_reads_as_failed_for_its_task_alone(
        self, result_storage: BaseResultStorage
    ) -> None:
        good, bad = make_result(), make_result()
        await result_storage.set_many([good, bad])
        await self.corrupt_result(result_storage, bad.task_id)
        got = await result_storage.get(bad.task_id)
        assert got is not None and got.task_id == bad.task_id and got.state is TaskState.FAILED
        assert got.error is not None and got.error.type == CORRUPT_RESULT, got.error
        assert bad.task_id in got.error.message and "cannot be decoded" in got.error.message
        both = await result_storage.get_many([good.task_id, bad.task_id])
        assert both[good.task_id] == good and both[bad.task_id].error == got.error
        await result_storage.cleanup()

    async def test_set_and_get_round_trip(self, result_storage: BaseResultStorage) -> None:
        ok = make_result(
            value=bytes(range(256)) * 8, expires_at=(await result_storage.now()) + 3600
        )
        failed = make_result(state=TaskState.FAILED, value=None, error=make_error(), attempts=3)
        for result in (ok, failed):
            await result_storage.set(result)
            assert await result_storage.get(result.task_id) == result

    async def test_get_missing_is_none(self, result_storage: BaseResultStorage) -> None:
        assert await result_storage.get("no-such-task") is None

    async def test_set_overwrites(self, result_storage: BaseResultStorage) -> None:
        """A re-run overwrites its result, never adds one."""
        first = make_result(value=b"first", attempts=1)
        second = make_result(
            task_id=first.task_id,
            value=b"second",
            attempts=2,
            state=TaskState.FAILED,
            error=make_error(),
        )
        await result_storage.set(first)
        await result_storage.set(second)
        assert await result_storage.get(first.task_id) == second
        assert await result_storage.get_many([first.task_id]) == {first.task_id: second}

    async def test_expired_result_is_invisible(self, result_storage: BaseResultStorage) -> None:
        """An expired result is gone for readers even before any cleanup sweep runs."""
        now = await result_storage.now()
        gone = make_result(expires_at=now - 1)
        soon = make_result(expires_at=now + SHORT)
        kept = make_result(expires_at=None)
        await result_storage.set_many([gone, soon, kept])
        assert await result_storage.get(gone.task_id) is None
        assert await result_storage.get(soon.task_id) == soon
        await wait_past(result_storage, now + SHORT)
        assert await result_storage.get(soon.task_id) is None
        assert await result_storage.get_many([gone.task_id, soon.task_id, kept.task_id]) == {
            kept.task_id: kept
        }

    async def test_delete(self, result_storage: BaseResultStorage) -> None:
        result = make_result()
        await result_storage.set(result)
        assert await result_storage.delete(result.task_id) is True
        assert await result_storage.get(result.task_id) is None
        assert await result_storage.delete(result.task_id) is False

    async def test_cleanup_deletes_expired_results(self, result_storage: BaseResultStorage) -> None:
        now = await result_storage.now()
        expired = [make_result(expires_at=now - 1 - i) for i in range(3)]
        kept = [make_result(expires_at=now + 3600), make_result(expires_at=None)]
        await result_storage.set_many(expired + kept)
        removed = await result_storage.cleanup()
        if Capability.NATIVE_TTL in type(result_storage).capabilities:
            assert removed >= 0
        else:
            assert removed == 3, (
                f"cleanup should report the 3 expired results it deleted, said {removed}"
            )
            assert await result_storage.cleanup() == 0
        assert await result_storage.get_many([r.task_id for r in expired + kept]) == {
            r.task_id: r for r in kept
        }

    async def test_set_many_and_get_many(self, result_storage: BaseResultStorage) -> None:
        results = [make_result(value=bytes([i])) for i in range(5)]
        await result_storage.set_many(results)
        ids = [r.task_id for r in results]
        assert await result_storage.get_many([*ids, "no-such-task"]) == {
            r.task_id: r for r in results
        }
        assert await result_storage.get_many([]) == {}

    async def test_wait_returns_an_existing_result_at_once(
        self, result_storage: BaseResultStorage
    ) -> None:
        result = make_result()
        await result_storage.set(result)
        started = time.monotonic()
        assert await result_storage.wait(result.task_id, 30.0) == result
        assert time.monotonic() - started < 5.0

    async def test_wait_returns_when_another_instance_sets(
        self, result_storage: BaseResultStorage, result_storage_ref: Any
    ) -> None:
        result = make_result()
        async with open_store("result_storage", result_storage_ref) as writer:
            got = None
            started = time.monotonic()
            async with anyio.create_task_group() as tg:

                async def write_later() -> None:
                    await anyio.sleep(SHORT)
                    await writer.set(result)

                tg.start_soon(write_later)
                got = await result_storage.wait(result.task_id, 30.0)
        assert got == result, "wait must return the result set meanwhile (by another instance)"
        assert time.monotonic() - started < 10.0

    async def test_an_expected_result_is_found_however_it_was_written(
        self, result_storage: BaseResultStorage, result_storage_ref: Any
    ) -> None:
        """``expect`` (told before a fresh id's enqueue) never makes ``wait`` miss the
        result: set by another instance after the wait began, set before it, or present
        when a wait of timeout 0 looks."""
        await result_storage.wait("warm-up", 0)  # a listening store is up by now
        async with open_store("result_storage", result_storage_ref) as writer:
            later, earlier, instant = make_result(), make_result(), make_result()
            for result in (later, earlier, instant):
                result_storage.expect(result.task_id)
            async with anyio.create_task_group() as tg:

                async def write_later() -> None:
                    await anyio.sleep(SHORT)
                    await writer.set(later)

                tg.start_soon(write_later)
                assert await result_storage.wait(later.task_id, 30.0) == later
            await writer.set(earlier)
            assert await result_storage.wait(earlier.task_id, 30.0) == earlier
            await writer.set(instant)

            async def found() -> bool:
                return await result_storage.wait(instant.task_id, 0) == instant

            await eventually(found, "wait(timeout=0) missed an expected result already set")

    async def test_wait_returns_none_on_timeout(self, result_storage: BaseResultStorage) -> None:
        started = time.monotonic()
        assert await result_storage.wait("no-such-task", SHORT) is None
        elapsed = time.monotonic() - started
        assert SHORT * 0.5 <= elapsed < SHORT + 5.0, (
            f"wait(timeout={SHORT}) returned after {elapsed:.3f} s"
        )

    async def test_results_are_shared_between_instances(
        self, result_storage: BaseResultStorage, result_storage_ref: Any
    ) -> None:
        result = make_result()
        await result_storage.set(result)
        async with open_store("result_storage", result_storage_ref) as other:

            async def visible() -> bool:
                found: TaskResult | None = await other.get(result.task_id)
                return found == result

            await eventually(visible, "a result set by one instance is not visible to another")
