"""A worker's presence: its entry in the task queue's worker registry and, optionally, a
health file, both refreshed on the heartbeat cadence (never per task).

``omniq workers`` lists the entries; ``omniq health`` fails when no live entry serves a
queue. An entry outlives its worker by at most its ttl (three heartbeat intervals, the
lease by default), so a killed worker drops out of both on its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..models import WorkerInfo

if TYPE_CHECKING:
    from .runtime import Worker

__all__ = ["HEALTH_MAX_AGE", "Presence", "omniq_version"]

log = logging.getLogger("omniq.worker")

#: An entry lives this many heartbeat intervals after the last refresh: one missed
#: refresh (a slow store) does not make a live worker look dead.
TTL_BEATS = 3
#: What a health file says: ``max-age <seconds>``, the age past which its worker is
#: taken for dead (see :meth:`Presence._touch`).
HEALTH_MAX_AGE = "max-age"


def omniq_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omniq-core")
    except PackageNotFoundError:
        return ""


class Presence:
    """Registers ``worker`` at start, refreshes it, unregisters it on stop."""

    def __init__(self, worker: Worker, health_file: str | os.PathLike[str] | None = None) -> None:
        self.worker = worker
        self.interval = worker.heartbeat_interval
        self.ttl = self.interval * TTL_BEATS
        self.health_file = Path(health_file) if health_file is not None else None
        self.started_at = time.time()
        self.host = socket.gethostname()
        self.version = omniq_version()
        self._supported = True

    def info(self) -> WorkerInfo:
        w = self.worker
        return WorkerInfo(
            id=w.id,
            host=self.host,
            pid=os.getpid(),
            pool=w.pool.name,
            concurrency=w.concurrency,
            queues=tuple(w.queues),
            started_at=self.started_at,
            heartbeat_at=time.time(),
            in_flight=w.running,
            version=self.version,
        )

    def check(self) -> None:
        """Before the worker starts: a health file it cannot write stops it (a probe
        reading the file would fail for ever, with nothing said why). The file is made
        and removed again: it must not say the worker lives before the store took it."""
        if self.health_file is None:
            return
        try:
            self._touch()
            self.health_file.unlink()
        except OSError as exc:
            raise ConfigError(self._problem(exc)) from exc

    def _touch(self) -> None:
        """Refresh the file's time or, when it is not there, write it stating how old it
        may get (the registry entry's ttl): ``omniq health --file`` then needs no
        ``--max-age`` to tell a killed worker's file, which stays, from a live one's. It
        is written whole under another name and renamed, so a probe never reads it
        half-written."""
        path = self.health_file
        assert path is not None
        try:
            os.utime(path)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_name(f".{path.name}.{os.getpid()}")
            part.write_text(f"{HEALTH_MAX_AGE} {self.ttl:g}\n")
            os.replace(part, path)

    def _problem(self, exc: OSError) -> str:
        return (
            f"cannot write the health file (--health-file {self.health_file}): "
            f"{type(exc).__name__}: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename else "")
        )

    async def beat(self) -> None:
        """Register (again) and touch the health file; the file is touched only when the
        store took the entry, so its age says the worker and its store both answer. A
        file that can no longer be written is logged; the worker runs on."""
        if self._supported:
            try:
                await self.worker.app.task_queue.register_worker(self.info(), self.ttl)
            except NotImplementedError as exc:
                self._supported = False
                log.warning(
                    "worker %s is not listed by 'omniq workers' or checked by 'omniq health': %s",
                    self.worker.id,
                    exc,
                )
            except Exception:
                log.exception(
                    "worker %s: could not register in the worker registry", self.worker.id
                )
                return
        if self.health_file is not None:
            try:
                self._touch()
            except OSError as exc:
                log.warning("worker %s: %s", self.worker.id, self._problem(exc))

    async def run(self) -> None:
        """Beat every heartbeat interval: one of the worker's helpers, which it cancels
        (and, like its other loops, flags) when it stops."""
        while not self.worker._helpers_done:
            await asyncio.sleep(self.interval)
            await self.beat()

    async def leave(self) -> None:
        """Unregister and remove the health file (a stopped worker is not alive)."""
        if self.health_file is not None:
            self.health_file.unlink(missing_ok=True)
        if not self._supported:
            return
        try:
            await self.worker.app.task_queue.unregister_worker(self.worker.id)
        except Exception:
            log.warning(
                "worker %s: could not unregister; its entry expires within %g s",
                self.worker.id,
                self.ttl,
                exc_info=True,
            )
