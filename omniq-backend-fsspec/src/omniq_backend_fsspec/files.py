"""The few file operations the stores need, on three kinds of file system.

Paths are relative to the location's base directory and ``/``-separated; every segment
comes from :func:`omniq_backend_fsspec.names.encode` or from this package's own layout.

* :class:`LocalFiles` (``file://``) uses ``os`` directly: atomic replace by rename,
  ``flock`` for the task queue's lock (released by the kernel when a process dies).
* :class:`MemoryFiles` (``memory://``) keeps one dict per directory in this process, so
  listing a directory costs its own size (fsspec's memory file system scans every key).
* :class:`FsspecFiles` (object stores and any other fsspec protocol) has no rename and
  no lock, so it backs results and events only; :class:`S3Files` adds S3's conditional
  writes, on which the task queue's compare-and-set records are built.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

from omniq.errors import ConfigError, QueueError

from .location import Location

__all__ = [
    "Files",
    "FsspecFiles",
    "LocalFiles",
    "LockingFiles",
    "MemoryFiles",
    "S3Files",
    "open_files",
]


class Files(abc.ABC):
    """Whole-file reads and writes under one base directory."""

    #: True when calls are quick enough to make on the event loop (no I/O).
    inline: ClassVar[bool] = False

    @abc.abstractmethod
    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

    @abc.abstractmethod
    def write(self, path: str, data: bytes) -> None:
        """Create or replace the file atomically: readers see the old or the new bytes."""

    @abc.abstractmethod
    def delete(self, path: str) -> bool:
        """Remove the file; False when there was none."""

    @abc.abstractmethod
    def list(self, directory: str) -> builtins.list[str]:
        """Names in ``directory``, sorted; [] when it does not exist."""

    @abc.abstractmethod
    def find(self, directory: str) -> builtins.list[str]:
        """Paths of all files below ``directory``, at any depth (one listing request on
        object stores)."""

    def read_many(self, paths: builtins.list[str]) -> dict[str, bytes]:
        """The files that exist among ``paths``, by path."""
        found = ((p, self.read(p)) for p in paths)
        return {p: data for p, data in found if data is not None}

    def write_many(self, files: dict[str, bytes]) -> None:
        for path, data in files.items():
            self.write(path, data)

    def touch(self, path: str) -> None:
        """Create an empty file (an index entry: nothing in it can be torn)."""
        self.write(path, b"")

    def discard(self, path: str) -> None:
        """Remove the file if it exists (cheaper than :meth:`delete` on object stores)."""
        self.delete(path)

    def prune(self, directory: str) -> None:
        """Remove ``directory`` if it is empty (bucket directories come and go)."""

    def close(self) -> None:
        """Release what :func:`open_files` acquired."""


class LockingFiles(Files):
    """Files with atomic rename and one exclusive lock per base directory (task queue)."""

    @abc.abstractmethod
    def move(self, src: str, dst: str) -> bool:
        """Rename atomically (replacing ``dst``); False when ``src`` does not exist."""

    @abc.abstractmethod
    def lock(self) -> contextlib.AbstractContextManager[Any]:
        """Hold the base directory's exclusive lock (across threads and processes that
        share the directory)."""


class LocalFiles(LockingFiles):
    """A directory on this machine's disk."""

    def __init__(self, root: str, fsync: bool = False) -> None:
        self.root = root
        self.fsync = fsync
        self._tmp = os.path.join(root, ".tmp")
        os.makedirs(self._tmp, exist_ok=True)
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing a fd
        self._lock_fd: int | None = None

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, path)

    def read(self, path: str) -> bytes | None:
        try:
            with open(self._abs(path), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, path: str, data: bytes) -> None:
        tmp = os.path.join(self._tmp, uuid.uuid4().hex)
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        self._rename(tmp, self._abs(path))

    def _rename(self, src: str, dst: str) -> None:
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            if not os.path.exists(src):
                raise
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
        if self.fsync:
            self._sync_dir(os.path.dirname(dst))

    def delete(self, path: str) -> bool:
        try:
            os.unlink(self._abs(path))
            return True
        except FileNotFoundError:
            return False

    def list(self, directory: str) -> builtins.list[str]:
        try:
            return sorted(os.listdir(self._abs(directory)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def find(self, directory: str) -> builtins.list[str]:
        top = self._abs(directory)
        return [
            os.path.relpath(os.path.join(d, f), self.root)
            for d, _, files in os.walk(top)
            for f in files
        ]

    def move(self, src: str, dst: str) -> bool:
        try:
            self._rename(self._abs(src), self._abs(dst))
            return True
        except FileNotFoundError:
            return False

    def touch(self, path: str) -> None:
        full = self._abs(path)
        try:
            os.close(os.open(full, os.O_WRONLY | os.O_CREAT, 0o644))
        except FileNotFoundError:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            os.close(os.open(full, os.O_WRONLY | os.O_CREAT, 0o644))
        if self.fsync:
            self._sync_dir(os.path.dirname(full))

    @staticmethod
    def _sync_dir(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def prune(self, directory: str) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self._abs(directory))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        try:
            import fcntl  # imported here so results and events work everywhere
        except ImportError as exc:
            raise QueueError(
                f"a task queue on file:// needs POSIX flock, which this platform lacks ({exc}); "
                f"use sqlite:/// for a local task queue here"
            ) from exc

        with self._thread_lock:
            if self._lock_fd is None:
                self._lock_fd = os.open(self._abs(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._thread_lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


Tree = dict[str, "Tree | bytes"]


class _MemorySpace:
    def __init__(self) -> None:
        self.root: Tree = {}
        self.lock = threading.RLock()


_SPACES: dict[str, _MemorySpace] = {}
_SPACES_LOCK = threading.Lock()


class MemoryFiles(LockingFiles):
    """A namespace in this process's memory (a tree of dicts), shared by every store
    opened on it in this process and gone with it."""

    inline = True

    def __init__(self, name: str) -> None:
        with _SPACES_LOCK:
            self._space = _SPACES.setdefault(name, _MemorySpace())

    def _dir(self, directory: str, create: bool = False) -> Tree | None:
        node: Tree | bytes = self._space.root
        for part in directory.split("/") if directory else ():
            assert isinstance(node, dict)
            child = node.get(part)
            if child is None:
                if not create:
                    return None
                child = node[part] = {}
            if not isinstance(child, dict):
                return None
            node = child
        return node  # type: ignore[return-value]

    def read(self, path: str) -> bytes | None:
        directory, _, name = path.rpartition("/")
        with self._space.lock:
            node = self._dir(directory)
            data = node.get(name) if node is not None else None
        return data if isinstance(data, bytes) else None

    def write(self, path: str, data: bytes) -> None:
        directory, _, name = path.rpartition("/")
        with self._space.lock:
            node = self._dir(directory, create=True)
            assert node is not None, f"{directory!r} is a file"
            node[name] = data

    def delete(self, path: str) -> bool:
        directory, _, name = path.rpartition("/")
        with self._space.lock:
            node = self._dir(directory)
            if node is None or not isinstance(node.get(name), bytes):
                return False
            del node[name]
            return True

    def list(self, directory: str) -> builtins.list[str]:
        with self._space.lock:
            node = self._dir(directory)
            return sorted(node) if node is not None else []

    def find(self, directory: str) -> builtins.list[str]:
        with self._space.lock:
            stack = [(directory, self._dir(directory))]
            found = []
            while stack:
                prefix, node = stack.pop()
                for name, child in (node or {}).items():
                    if isinstance(child, dict):
                        stack.append((f"{prefix}/{name}", child))
                    else:
                        found.append(f"{prefix}/{name}")
            return found

    def move(self, src: str, dst: str) -> bool:
        with self._space.lock:
            data = self.read(src)
            if data is None:
                return False
            self.delete(src)
            self.write(dst, data)
            return True

    def prune(self, directory: str) -> None:
        parent, _, name = directory.rpartition("/")
        with self._space.lock:
            node = self._dir(parent)
            if node is not None and node.get(name) == {}:
                del node[name]

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        return self._space.lock


class FsspecFiles(Files):
    """Any fsspec file system; writes are single PUTs (atomic on object stores)."""

    def __init__(self, protocol: str, base_dir: str, storage_options: dict[str, Any]) -> None:
        import fsspec

        self.fs = fsspec.filesystem(protocol, **storage_options)
        self.root = base_dir
        self.fs.exists(base_dir)  # connect now (s3fs opens its session on first use)

    def _abs(self, path: str) -> str:
        return f"{self.root}/{path}"

    def read(self, path: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._abs(path)))
        except FileNotFoundError:
            return None

    def write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._abs(path), data)

    def find(self, directory: str) -> builtins.list[str]:
        full = self._abs(directory)
        self.fs.invalidate_cache(full)
        skip = len(self.root) + 1
        return [p[skip:] for p in self.fs.find(full)]

    def read_many(self, paths: builtins.list[str]) -> dict[str, bytes]:
        """One concurrent batch on async file systems (s3fs, gcsfs, adlfs)."""
        if not paths:
            return {}
        found = self.fs.cat([self._abs(p) for p in paths], on_error="omit")
        skip = len(self.root) + 1
        return {p[skip:] if p.startswith(self.root) else p: bytes(d) for p, d in found.items()}

    def write_many(self, files: dict[str, bytes]) -> None:
        if files:
            self.fs.pipe({self._abs(p): data for p, data in files.items()})

    def delete(self, path: str) -> bool:
        full = self._abs(path)
        if not self.fs.exists(full):
            return False
        self.fs.rm_file(full)
        return True

    def list(self, directory: str) -> builtins.list[str]:
        full = self._abs(directory)
        self.fs.invalidate_cache(full)  # s3fs caches listings; another writer may have added
        try:
            return sorted(p.rstrip("/").rpartition("/")[2] for p in self.fs.ls(full, detail=False))
        except FileNotFoundError:
            return []


class S3Files(FsspecFiles):
    """S3 (s3fs) with conditional writes: ``If-None-Match: *`` creates only what is
    absent, ``If-Match: <etag>`` replaces only what nobody changed since it was read.
    This compare-and-set is what makes the task queue on S3 safe without a lock."""

    #: Error codes S3 (and S3-compatible servers) answer when a condition does not hold.
    CONFLICTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})

    def list(self, directory: str) -> builtins.list[str]:
        """One request even for an empty directory (``ls`` would then list the parent)."""
        from fsspec.asyn import sync

        found = sync(self.fs.loop, self.fs._lsdir, self._abs(directory), refresh=True)
        return sorted(o["name"].rstrip("/").rpartition("/")[2] for o in found)

    def discard(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._abs(path))

    def read_versioned(self, path: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag from one GET, or None when it does not exist."""
        from fsspec.asyn import sync

        return sync(self.fs.loop, self._get, path)  # type: ignore[no-any-return]

    def write_if(self, path: str, data: bytes, etag: str | None) -> str | None:
        """PUT only if the object still has ``etag`` (None: only if it does not exist).
        Returns the new ETag, or None, writing nothing, when another writer got there first."""
        from fsspec.asyn import sync

        return sync(self.fs.loop, self._put, path, data, etag)  # type: ignore[no-any-return]

    async def _get(self, path: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        bucket, key, _ = self.fs.split_path(self._abs(path))
        client = await self.fs.set_session()
        try:
            response = await client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return await response["Body"].read(), response["ETag"]

    async def _put(self, path: str, data: bytes, etag: str | None) -> str | None:
        from botocore.exceptions import ClientError, ParamValidationError

        bucket, key, _ = self.fs.split_path(self._abs(path))
        client = await self.fs.set_session()
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            response = await client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in self.CONFLICTS:
                return None
            raise
        except ParamValidationError as exc:
            raise QueueError(
                f"the task queue on s3:// needs conditional PUTs (If-Match/If-None-Match), "
                f"which this botocore does not know ({exc}); upgrade s3fs and aiobotocore "
                f"(botocore 1.36 or newer)"
            ) from exc
        return str(response["ETag"])


def open_files(location: Location) -> Files:
    """The :class:`Files` for a location (creating a local base directory)."""
    if location.protocol == "file":
        if not location.create and not os.path.isdir(location.base_dir):
            raise ConfigError(
                f"directory {location.base_dir!r} does not exist (opened with "
                f"create=false, as the CLI's inspection commands do): check the path"
            )
        return LocalFiles(location.base_dir, fsync=location.fsync)
    if location.protocol == "memory":
        return MemoryFiles(location.base_dir)
    if location.protocol == "s3":
        return S3Files(location.protocol, location.base_dir, dict(location.storage_options))
    return FsspecFiles(location.protocol, location.base_dir, dict(location.storage_options))
