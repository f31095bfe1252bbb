"""OmniQ backend on file systems: local files and memory (all three stores), and any
fsspec file system such as S3, GCS or Azure (results and events)."""

from __future__ import annotations

from .events import FsspecEventStorage
from .queue import FileTaskQueue, FsspecTaskQueue, MemoryTaskQueue
from .results import FsspecResultStorage

__all__ = [
    "FileTaskQueue",
    "FsspecEventStorage",
    "FsspecResultStorage",
    "FsspecTaskQueue",
    "MemoryTaskQueue",
]
