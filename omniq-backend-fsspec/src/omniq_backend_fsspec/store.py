"""What the three fsspec stores share: a location, its files, and running file calls
off the event loop (memory calls run inline: they do no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar

import anyio.to_thread

from omniq.config import mask_url
from omniq.errors import QueueError
from omniq.options import OptionSchema

from .files import Files, open_files
from .location import OPTIONS, Location, parse_location

__all__ = ["FilesStore"]

T = TypeVar("T")


class FilesStore:
    """Mixin for the stores: ``from_url`` parsing, open/close, and :meth:`_run`."""

    option_schema: ClassVar[OptionSchema] = OPTIONS

    def __init__(self, location: Location) -> None:
        self.location = location
        self._files: Files | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        location = parse_location(url, options, cls)
        return cls._class_for(location)(location)

    @classmethod
    def _class_for(cls, location: Location) -> type[Self]:
        """The class serving ``location`` (``local_only`` and capabilities are class
        data, so local and remote protocols get different classes)."""
        return cls

    def __repr__(self) -> str:
        return f"{type(self).__name__}({mask_url(self.location.url)!r})"

    async def open(self) -> None:
        if self._files is None:
            self._files = await anyio.to_thread.run_sync(open_files, self.location)

    async def close(self) -> None:
        files, self._files = self._files, None
        if files is not None:
            files.close()

    def _not_open(self) -> QueueError:
        return QueueError(f"{self!r} is not open: use 'async with store:' or await store.open()")

    @property
    def files(self) -> Files:
        if self._files is None:
            raise self._not_open()
        return self._files

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.files.inline:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)
