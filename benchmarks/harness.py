"""The four measurements, for any queue library that implements :class:`Subject`.

The harness owns the clock, the worker subprocess and the statistics; a subject only
knows how to talk to its library. OmniQ's subject is ``omniq_subject.py``; a peer
(arq, SAQ, taskiq, RQ, procrastinate, pgqueuer, ...) is one more module implementing the
same protocol (see README.md), so every library is measured by the same code. The timed
loops are :class:`Timed`, which runs where the subject lives: a peer that needs a
virtualenv of its own runs in a subprocess (``peers/remote.py``) and runs them there, so
the hop between the processes is not timed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["Figures", "Subject", "Timed", "measure"]


class Subject(Protocol):
    """One queue library under test, configured for one backend.

    Every task it enqueues is a no-op, so the figures measure the queue, not the work.
    """

    name: str
    # Optional: ``has_burst = False`` when the worker CLI cannot exit on an empty queue;
    # the harness then stops it itself once every task is done. Optional too:
    # ``enqueue_singles_sync(n) -> seconds``, n enqueues through a blocking API, timed by
    # the subject in a thread of the harness's (the ``enqueue_sync_per_s`` figure); and
    # ``max_n`` with ``max_n_reason`` for a library too slow for a large n: compare.py
    # measures it at ``max_n`` and says so.

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue_one(self) -> str:
        """Enqueue one task with a single call; return its id."""

    async def enqueue_bulk(self, n: int) -> list[str]:
        """Enqueue ``n`` tasks with the library's bulk call; return their ids."""

    async def clear(self) -> None:
        """Drop every queued task (between measurements)."""

    def worker_command(self, burst: bool) -> list[str]:
        """The command line of ONE worker process; with ``burst`` it exits once the
        queue is empty, else it runs until SIGTERM."""

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        """Epoch times of the first task's start and the last task's completion, read
        from the library's own records (events or result timestamps). Raises when a
        task has not succeeded."""

    async def wait_result(self, task_id: str, timeout: float) -> None:
        """Return as soon as the task's result is available to the producer."""


class Timed:
    """The three timed loops over one subject. A subject may carry its own ``timed``
    object with these methods (``peers.remote.RemoteSubject`` does: it forwards each loop
    to the process that holds the real subject, where this class runs it)."""

    def __init__(self, subject: Subject) -> None:
        self.subject = subject

    async def enqueue_singles(self, n: int) -> float:
        """Seconds for ``n`` sequential ``enqueue_one`` calls."""
        started = time.perf_counter()
        for _ in range(n):
            await self.subject.enqueue_one()
        return time.perf_counter() - started

    async def enqueue_bulk(self, n: int) -> tuple[list[str], float]:
        """The ids of one ``enqueue_bulk(n)`` and the seconds it took."""
        started = time.perf_counter()
        ids = await self.subject.enqueue_bulk(n)
        return ids, time.perf_counter() - started

    async def latency(self, samples: int) -> list[float]:
        """Seconds from enqueue to result for ``samples`` sequential tasks, after one
        untimed task that shows the worker is up."""
        await self.subject.wait_result(await self.subject.enqueue_one(), timeout=60)
        out = []
        for _ in range(samples):
            started = time.perf_counter()
            await self.subject.wait_result(await self.subject.enqueue_one(), timeout=60)
            out.append(time.perf_counter() - started)
        return out


@dataclass
class Figures:
    subject: str
    n: int
    enqueue_per_s: float
    bulk_enqueue_per_s: float
    processing_per_s: float
    processing_s: float
    latency_samples: int
    latency_p50_ms: float
    latency_p99_ms: float
    #: One-by-one enqueue through the blocking API, for a subject that has one.
    enqueue_sync_per_s: float | None = None
    #: What went wrong without spoiling the figures (e.g. a worker that ignored SIGTERM).
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class WorkerFailed(RuntimeError):
    """The worker subprocess exited with an error or did not finish in time."""


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy())


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    try:
        code = await asyncio.to_thread(proc.wait, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise WorkerFailed(
            f"the worker did not finish within {timeout:g} s; its log: {log}"
        ) from None
    if code != 0:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        tail = text.strip().splitlines()[-5:]
        raise WorkerFailed(f"the worker exited with {code}: " + " | ".join(tail))


async def _process_without_burst(
    subject: Subject, ids: list[str], timeout: float, log: Path, warnings: list[str]
) -> tuple[float, float]:
    """For a library whose worker has no burst mode (``has_burst = False``): run it until
    the last task's result is there and every task has succeeded, then SIGTERM it. The
    window still comes from the task records, so the polling does not enter the figure."""
    worker = _spawn(subject.worker_command(burst=False), log)
    deadline = time.monotonic() + timeout
    try:
        await subject.wait_result(ids[-1], timeout)
        while True:
            try:
                return await subject.processing_window(ids)
            except RuntimeError:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await _stop(worker, log, warnings)


async def _stop(worker: subprocess.Popen[bytes], log: Path, warnings: list[str]) -> None:
    """SIGTERM a running worker. One that hangs on the way out is killed and noted,
    not fatal: its figures were already taken."""
    worker.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(worker.wait, 60)
    except subprocess.TimeoutExpired:
        worker.kill()
        await asyncio.to_thread(worker.wait)
        warnings.append("the running worker did not stop within 60 s of SIGTERM and was killed")
        return
    await _wait_exit(worker, 0, log)  # it has exited: raise on a non-zero code


async def measure(
    subject: Subject,
    n: int,
    latency_samples: int,
    workdir: Path,
    timeout: float = 600.0,
    progress: bool = True,
    before_processing: Callable[[], Awaitable[None]] | None = None,
    single_n: int = 10_000,
) -> Figures:
    """Run the four measurements in order on an empty backend; ``before_processing``
    (e.g. a vacuum) runs between the bulk enqueue and the processing run. One-by-one
    enqueue is timed over at most ``single_n`` tasks: its rate does not depend on n, and
    100,000 sequential round trips would dominate a large run."""
    log = workdir / "worker.log"
    warnings: list[str] = []

    def say(text: str) -> None:
        if progress:
            print(f"[{subject.name}] {text}", flush=True)

    await subject.open()
    timed: Timed = getattr(subject, "timed", None) or Timed(subject)
    try:
        singles = min(n, single_n)
        say(f"enqueue {singles} one by one")
        enqueue = singles / await timed.enqueue_singles(singles)
        await subject.clear()
        enqueue_sync = None
        sync_singles = getattr(subject, "enqueue_singles_sync", None)
        if sync_singles is not None:
            say(f"enqueue {singles} one by one through the sync API")
            enqueue_sync = round(singles / await asyncio.to_thread(sync_singles, singles), 1)
            await subject.clear()

        say(f"enqueue {n} in bulk")
        ids, seconds = await timed.enqueue_bulk(n)
        bulk = n / seconds

        if before_processing is not None:
            await before_processing()
        if getattr(subject, "has_burst", True):
            say(f"process {n} with one worker process (burst)")
            await _wait_exit(_spawn(subject.worker_command(burst=True), log), timeout, log)
            first, last = await subject.processing_window(ids)
        else:
            say(f"process {n} with one worker process (stopped once every task is done)")
            first, last = await _process_without_burst(subject, ids, timeout, log, warnings)

        say(f"latency of {latency_samples} sequential tasks")
        worker = _spawn(subject.worker_command(burst=False), log)
        try:
            samples = await timed.latency(latency_samples)
        finally:
            await _stop(worker, log, warnings)
    finally:
        await subject.close()
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return Figures(
        subject=subject.name,
        n=n,
        enqueue_per_s=round(enqueue, 1),
        enqueue_sync_per_s=enqueue_sync,
        bulk_enqueue_per_s=round(bulk, 1),
        processing_per_s=round(n / (last - first), 1),
        processing_s=round(last - first, 3),
        latency_samples=latency_samples,
        latency_p50_ms=round(cuts[49] * 1000, 2),
        latency_p99_ms=round(cuts[98] * 1000, 2),
        warnings=warnings,
    )
