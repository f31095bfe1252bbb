"""Scraping real ``omniq worker`` processes: what Prometheus would read, per pool, and the
totals of several worker processes on one host (one port each)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_workers import DEADLINE, Scrape, WorkerProcess

from omniq.testing import until

POOLS = ["async", "thread", "process", "gevent"]


def _counts(s: Scrape, task: str) -> dict[str, float]:
    return {
        outcome: s.value("omniq_tasks_total", task=task, outcome=outcome)
        for outcome in ("succeeded", "retried", "failed", "interrupted")
    }


@pytest.mark.slow
@pytest.mark.parametrize("pool", POOLS)
def test_a_scrape_shows_outcomes_times_in_progress_and_queue_depth(
    pool: str, producer: Any, start_worker: Any, tmp_path: Path
) -> None:
    if pool == "gevent":
        pytest.importorskip("omniq_workers_gevent")
    # Two tasks in a queue no worker serves: counted by state when the worker starts.
    for i in range(2):
        producer.ok.apply((i,), queue="later")
    w: WorkerProcess = start_worker("--pool", pool, "-c", "4", "-q", "default")
    oks = [producer.ok.delay(i) for i in range(6)]
    booms = [producer.boom.delay(i) for i in range(3)]  # one retry each, then dead

    s = w.wait_until(
        "6 successes and 3 failures",
        lambda s: (
            s.value("omniq_tasks_total", task="shop.ok", outcome="succeeded") == 6
            and s.value("omniq_tasks_total", task="shop.boom", outcome="failed") == 3
        ),
    )
    assert _counts(s, "shop.ok") == {"succeeded": 6, "retried": 0, "failed": 0, "interrupted": 0}
    assert _counts(s, "shop.boom") == {"succeeded": 0, "retried": 3, "failed": 3, "interrupted": 0}
    # Every attempt is timed, whatever its outcome; each waited in the queue first.
    for task, attempts in (("shop.ok", 6), ("shop.boom", 6)):
        for histogram in ("omniq_task_duration_seconds", "omniq_task_queue_wait_seconds"):
            labels = {"task": task, "queue": "default"}
            assert s.value(f"{histogram}_count", **labels) == attempts, (histogram, task)
            assert s.value(f"{histogram}_bucket", le="+Inf", **labels) == attempts
    assert s.value("omniq_tasks_in_progress") == 0
    assert s.value("omniq_worker_concurrency") == 4
    (info,) = s.labels("omniq_worker_info")
    assert info["pool"] == pool and info["queues"] == "default"
    assert s.value("omniq_queue_tasks", queue="later", state="pending") == 2
    assert "process_cpu_seconds_total" in s.text  # the client's own process metrics too

    # The depth is counted again every few seconds: the finished tasks show up.
    w.wait_until(
        "the queue depth after the run",
        lambda s: (
            s.value("omniq_queue_tasks", queue="default", state="succeeded") == 6
            and s.value("omniq_queue_tasks", queue="default", state="dead") == 3
            and s.value("omniq_queue_tasks", queue="default", state="pending") == 0
        ),
    )

    release = tmp_path / "release"
    held = producer.hold.delay(str(release))
    w.wait_until(
        "a running task in progress and in flight",
        lambda s: (
            s.value("omniq_tasks_in_progress", task="shop.hold", queue="default") == 1
            and s.value("omniq_worker_tasks_in_flight") == 1
        ),
    )
    release.touch()
    s = w.wait_until(
        "the held task done",
        lambda s: s.value("omniq_tasks_total", task="shop.hold", outcome="succeeded") == 1,
    )
    assert s.value("omniq_tasks_in_progress", task="shop.hold") == 0
    assert producer.app.get_result(held, timeout=DEADLINE) == str(release)
    assert [producer.app.get_result(r, timeout=DEADLINE) for r in oks] == list(range(6))
    assert all(producer.app.get_task(r.id).state.value == "dead" for r in booms)


@pytest.mark.slow
def test_two_worker_processes_on_one_host_each_count_their_own_and_add_up(
    producer: Any, start_worker: Any, worker_env: dict[str, str], tmp_path: Path
) -> None:
    # Two attempts at once and none reserved ahead: of four held tasks, each gets two.
    a = start_worker("-c", "2", "--prefetch", "0")
    b = start_worker("-c", "2", "--prefetch", "0")
    for w in (a, b):
        w.wait_until("the worker listed", lambda s: s.labels("omniq_worker_info"))
    release = tmp_path / "release"
    holds = [producer.hold.delay(str(release)) for _ in range(4)]
    for w in (a, b):
        w.wait_until(
            "two held tasks in progress",
            lambda s: s.value("omniq_tasks_in_progress", task="shop.hold") == 2,
        )
    release.touch()
    oks = [producer.ok.delay(i) for i in range(20)]
    refs = holds + oks
    for ref in refs:
        producer.app.get_result(ref, timeout=DEADLINE)

    # Which worker ran each task, as the result store recorded it.
    ran_by = Counter(producer.app.get_task_result(ref.id).worker_id for ref in refs)
    total = 0
    for w in (a, b):
        s = w.wait_until(
            "every task this worker ran counted",
            lambda s: (
                s.value("omniq_tasks_total", outcome="succeeded")
                == ran_by[s.labels("omniq_worker_info")[0]["worker_id"]]
            ),
        )
        worker_id = s.labels("omniq_worker_info")[0]["worker_id"]
        assert s.value("omniq_tasks_total", task="shop.hold", outcome="succeeded") == 2
        assert s.value("omniq_task_duration_seconds_count") == ran_by[worker_id]
        total += s.value("omniq_tasks_total", outcome="succeeded")
    assert total == len(refs) == 24
    assert set(ran_by) == {w.scrape().labels("omniq_worker_info")[0]["worker_id"] for w in (a, b)}

    # A third worker given a port already in use refuses to start, before loading the app.
    third = subprocess.run(
        [sys.executable, "-m", "omniq.cli", "worker", "--metrics-port", f"127.0.0.1:{a.port}"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert third.returncode == 2, third.stderr
    assert f"cannot serve metrics on 127.0.0.1:{a.port}" in third.stderr
    assert "needs its own port" in third.stderr


@pytest.mark.slow
@pytest.mark.parametrize("pool", POOLS)
def test_every_scrape_answers_while_tasks_run(
    pool: str, producer: Any, start_worker: Any, tmp_path: Path
) -> None:
    """Prometheus scrapes a target for as long as it runs: each scrape must answer, not
    only the one a test polls for (under gevent a scrape's connection used to drop when
    the server's request thread waited on a socket of the server thread's hub)."""
    if pool == "gevent":
        pytest.importorskip("omniq_workers_gevent")
    w: WorkerProcess = start_worker("--pool", pool, "-c", "4")
    release = tmp_path / "release"
    held = [producer.hold.delay(str(release)) for _ in range(2)]
    oks = [producer.ok.delay(i) for i in range(40)]
    w.wait_until(
        "two held tasks running and a first success",
        lambda s: (
            s.value("omniq_tasks_in_progress", task="shop.hold") == 2
            and s.value("omniq_tasks_total", outcome="succeeded") >= 1
        ),
    )

    scrapes: list[Scrape] = []

    def forty_scrapes() -> bool:
        scrapes.append(w.scrape())  # raises (and fails the test) on a dropped connection
        return len(scrapes) >= 40

    until(forty_scrapes, "40 scrapes", deadline=DEADLINE, interval=0.01)
    for s in scrapes:
        assert {"omniq_tasks_total", "omniq_worker_info", "omniq_tasks_in_progress"} <= {
            name for name, _, _ in s.samples
        }
    release.touch()
    assert [producer.app.get_result(r, timeout=DEADLINE) for r in oks] == list(range(40))
    assert all(producer.app.get_result(r, timeout=DEADLINE) == str(release) for r in held)


@pytest.mark.slow
@pytest.mark.parametrize("pool", POOLS)
def test_clients_that_send_nothing_or_half_a_request_do_not_hold_up_scrapes(
    pool: str, start_worker: Any
) -> None:
    """A client that connects and stalls (a half-open scraper, a port scan, slowloris)
    must not make real scrapes wait: Prometheus gives up on a scrape after 10 s, so a
    server that answered one connection at a time with a 10 s read timeout each showed
    the target as down while a few such connections were open."""
    if pool == "gevent":
        pytest.importorskip("omniq_workers_gevent")
    w: WorkerProcess = start_worker("--pool", pool)
    w.wait_until("serving", lambda s: s.value("omniq_worker_concurrency") > 0)
    stalled = [socket.create_connection(("127.0.0.1", w.port)) for _ in range(4)]
    try:
        stalled[1].sendall(b"GET /metrics HTTP/1.1\r\n")  # a request line, no headers
        stalled[2].sendall(b"GET /met")  # half a request line
        w.wait_until("answered while four connections stall", lambda s: True)
        for _ in range(3):  # every scrape answers, not just one (urlopen gives up after 10 s)
            assert w.scrape().value("omniq_worker_concurrency") > 0
        # A hand-typed request ends its lines with a bare LF; the HTTP server takes it.
        with socket.create_connection(("127.0.0.1", w.port), timeout=10) as bare:
            bare.sendall(b"GET /metrics HTTP/1.0\n\n")
            assert bare.makefile("rb").readline().startswith(b"HTTP/1.0 200")
    finally:
        for s in stalled:
            s.close()
