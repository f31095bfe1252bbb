"""Schedules by name, end to end on SQLite files: updates in place, moving schedules
stored under the ids of earlier versions, and the time-zone options."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import msgspec
import pytest

from omniq import AsyncOmniQ
from omniq.errors import ConfigError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def app_on(tmp_path: Path, **settings: object) -> AsyncOmniQ:
    return AsyncOmniQ(
        task_queue=f"sqlite:///{tmp_path}/tasks.db",
        result_storage=f"sqlite:///{tmp_path}/results.db",
        event_storage=f"sqlite:///{tmp_path}/events.db",
        **settings,
    )


async def test_an_unnamed_schedule_keeps_its_id_without_keys_and_moves_from_a_keyed_one(
    tmp_path: Path,
) -> None:
    """Before 0.2 the default id hashed the (signed) payload: without secret_key the id
    is unchanged; with one, declaring the schedule again moves it to the new id, keeping
    its next firing and paused state, and deletes the old record (no double firing)."""
    async with app_on(tmp_path, secret_key="s3cret") as app:
        sid = await app.schedule("reports.daily", args=(1,), interval=60, start_at=2e9)
        [current] = await app.list_schedules()
        payload = current.template.payload  # signed: what the old id was derived from
        digest = hashlib.sha256(payload + f"None|60.0|{current.template.queue}".encode())
        legacy = f"reports.daily:{digest.hexdigest()[:12]}"
        assert legacy != sid
        await app.delete_schedule(sid)
        await app.task_queue.add_schedule(
            msgspec.structs.replace(current, id=legacy, next_run=2e9 + 5, paused=True)
        )
        assert await app.schedule("reports.daily", args=(1,), interval=60) == sid
        [moved] = await app.list_schedules()
        assert (moved.id, moved.next_run, moved.paused) == (sid, 2e9 + 5, True)
    async with app_on(tmp_path / "plain") as plain:
        unkeyed = await plain.schedule("reports.daily", args=(1,), interval=60)
        assert unkeyed == sid, "the id no longer depends on the key"


async def test_naming_an_unnamed_schedule_replaces_it(tmp_path: Path) -> None:
    async with app_on(tmp_path) as app:
        await app.schedule("reports.daily", cron="0 6 * * *", args=("eu",))
        sid = await app.schedule("reports.daily", name="eu-report", cron="0 6 * * *", args=("eu",))
        assert [s.id for s in await app.list_schedules()] == [sid] == ["eu-report"]
        again = await app.schedule("reports.daily", schedule_id="eu-report", cron="0 7 * * *")
        [updated] = await app.list_schedules()
        assert (again, updated.cron) == ("eu-report", "0 7 * * *")


async def test_an_unchanged_declaration_keeps_the_next_firing(tmp_path: Path) -> None:
    async with app_on(tmp_path) as app:
        await app.schedule("reports.daily", name="r", interval=60, start_at=time.time() + 5)
        [first] = await app.list_schedules()
        await app.schedule("reports.daily", name="r", interval=60, args=(2,))
        [second] = await app.list_schedules()
        assert second.next_run == first.next_run, "same timing: the grid is kept"
        await app.schedule("reports.daily", name="r", interval=30)
        [third] = await app.list_schedules()
        assert third.interval == 30.0 and third.next_run != first.next_run


async def test_time_zone_and_name_options_are_checked(tmp_path: Path) -> None:
    async with app_on(tmp_path) as app:
        with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
            await app.schedule("x.y", cron="0 2 * * *", tz="Mars/Olympus")
        with pytest.raises(ConfigError, match="tz='UTC' applies to cron schedules"):
            await app.schedule("x.y", interval=60, tz="UTC")
        with pytest.raises(ConfigError, match="give one"):
            await app.schedule("x.y", interval=60, name="a", schedule_id="b")
        with pytest.raises(ConfigError, match="schedule name"):
            await app.schedule("x.y", interval=60, name="has space")
        assert await app.list_schedules() == []
