"""Live workers as files ``workers/<id>``: each the msgpack-encoded
:class:`~omniq.models.WorkerInfo` with its ``expires_at``, rewritten whole on every
registration (a plain write replaces a file atomically, so no lock is needed) and removed
when a listing finds it expired. Time is this host's clock, as everywhere in this backend.
"""

from __future__ import annotations

import time

import msgspec

from omniq.models import WorkerInfo, encoder, worker_decoder

from .files import Files
from .names import encode

__all__ = ["list_workers", "register_worker", "unregister_worker"]

_DIR = "workers"


def _path(worker_id: str) -> str:
    return f"{_DIR}/{encode('worker id', worker_id)}"


def register_worker(files: Files, info: WorkerInfo, ttl: float) -> WorkerInfo:
    stored = msgspec.structs.replace(info, expires_at=time.time() + ttl)
    files.write(_path(info.id), encoder.encode(stored))
    return stored


def list_workers(files: Files) -> list[WorkerInfo]:
    at = time.time()
    live = []
    for name in files.list(_DIR):
        data = files.read(f"{_DIR}/{name}")
        if data is None:  # unregistered meanwhile
            continue
        info = worker_decoder.decode(data)
        if info.expires_at > at:
            live.append(info)
        else:
            files.discard(f"{_DIR}/{name}")
    return sorted(live, key=lambda w: w.id)


def unregister_worker(files: Files, worker_id: str) -> bool:
    return files.delete(_path(worker_id))
