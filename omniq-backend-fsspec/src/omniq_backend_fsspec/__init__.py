"""OmniQ backend on file systems: all three stores on local files, memory and S3;
results and events on any fsspec file system (GCS, Azure, ...)."""

from __future__ import annotations

from .events import FsspecEventStorage
from .queue import FileTaskQueue, FsspecTaskQueue, MemoryTaskQueue, S3TaskQueue
from .results import FsspecResultStorage

__all__ = [
    "FileTaskQueue",
    "FsspecEventStorage",
    "FsspecResultStorage",
    "FsspecTaskQueue",
    "MemoryTaskQueue",
    "S3TaskQueue",
]
