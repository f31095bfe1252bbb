import os
import sys
import time
from datetime import UTC, datetime

import pytest

from omniq.errors import ConfigError
from omniq.models import (
    Schedule,
    Task,
    TaskState,
    id_time,
    new_id,
    new_ids,
    validate_cron,
    validate_name,
)


def ts(*args):
    return datetime(*args, tzinfo=UTC).timestamp()


def sched(**kw):
    return Schedule(id="s", template=Task(id="t", name="n"), **kw)


def test_interval_keeps_its_grid():
    s = sched(interval=10.0, next_run=100.0)
    assert s.following(100.0) == 110.0
    assert s.following(125.0) == 130.0
    assert s.following(50.0) == 100.0


def test_cron_following_is_utc():
    s = sched(cron="*/5 * * * *")
    assert s.following(ts(2026, 1, 1, 10, 3)) == ts(2026, 1, 1, 10, 5)
    assert s.following(ts(2026, 1, 1, 10, 5)) == ts(2026, 1, 1, 10, 10)


def test_due_firings_fires_latest_only_unless_catch_up():
    s = sched(interval=10.0, next_run=100.0)
    assert s.due_firings(99.0) == ([], 100.0)
    assert s.due_firings(135.0) == ([130.0], 140.0)
    s.catch_up = True
    assert s.due_firings(135.0) == ([100.0, 110.0, 120.0, 130.0], 140.0)
    s.paused = True
    assert s.due_firings(135.0) == ([], 100.0)


def test_due_firings_is_bounded_after_long_downtime():
    s = sched(interval=1.0, next_run=1000.0, catch_up=True)
    times, nxt = s.due_firings(10_000.5, limit=50)
    assert len(times) == 50 and nxt == 10_001.0


def test_firing_ids_are_deterministic_and_valid():
    s = sched(interval=1.0)
    assert s.firing_task_id(12.5) == s.firing_task_id(12.5) == "s:12500"
    validate_name("task id", s.firing_task_id(12.5))


@pytest.mark.parametrize(
    "bad", ["", "../x", "a/b", "a b", "x*", "q>1", "é", "-x", "a" * 201, 5, None]
)
def test_hostile_names_are_refused(bad):
    with pytest.raises(ConfigError, match="invalid queue name"):
        validate_name("queue name", bad)


def test_cron_validation_names_the_expression():
    with pytest.raises(ConfigError, match=r"invalid cron expression '61 \* \* \* \*'"):
        validate_cron("61 * * * *")


def test_task_readiness_and_backoff():
    t = Task(id="a", name="n", eta=10.0, expires_at=20.0, retry_backoff=2.0, retry_backoff_max=5.0)
    assert not t.is_ready(9.0) and t.is_ready(10.0) and not t.is_ready(20.0)
    t.state = TaskState.RUNNING
    assert not t.is_ready(15.0)
    t.attempts = 1
    assert t.backoff() == 2.0
    t.attempts = 5
    assert t.backoff() == 5.0


def test_ids_are_unique_and_sort_by_creation():
    ids = [new_id() for _ in range(2000)] + new_ids(2000)
    assert len(set(ids)) == len(ids)
    assert sorted(ids, key=lambda i: int(i.split("-")[0], 16)) == ids
    assert all(validate_name("id", i) == i for i in ids[:10])


def test_new_ids_sort_as_made_across_their_shared_digits():
    # 600 ids count their time up past at least two runs of 256 (new_ids' shared digits).
    ids = new_ids(600)
    later = new_id()
    times = [int(i.split("-")[0], 16) for i in ids]
    assert sorted(ids) == ids and len(set(times)) == len(ids)
    assert times == list(range(times[0], times[0] + len(ids)))
    assert int(later.split("-")[0], 16) > times[-1]


def test_id_time_reads_the_time_of_new_ids_only():
    before = time.time()
    made = [new_id(), *new_ids(3)]
    after = time.time()
    for i in made:
        t = id_time(i)
        assert t is not None and before - 0.001 <= t <= after + 0.001, (i, t)
    # Any other form (an application's id) has no time: a store reads all of it.
    others = [
        "order-42",
        "t.1",
        made[0].upper(),
        "0" + made[0],
        made[0] + "0",
        made[0].replace("-", "_"),
        "1" + made[0],  # 17 time digits: past 2554, not made by new_id
        "-" + made[0].split("-")[1],
        "17a-" + "g" * 16,
        made[0] + "\n",  # (a pattern ending in $ would take it)
    ]
    assert [id_time(i) for i in others] == [None] * len(others)


@pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_makes_ids_of_its_own():
    new_id()  # the parent now holds random parts it has not handed out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids and leave without running pytest's exit
        os.write(write, " ".join(new_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = {i.split("-")[1] for i in os.read(read, 4096).decode().split()}
    os.close(read)
    parent = {new_id().split("-")[1] for _ in range(5)}
    assert len(child) == 5 and not child & parent
