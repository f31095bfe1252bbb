"""How the task queue makes each change atomic: a lock, or compare-and-set.

:class:`LockedRecords` (local files, memory) runs every operation under the base
directory's exclusive lock, so a read followed by a write is atomic by construction.

:class:`ConditionalRecords` (S3) has no lock. Each record is replaced with a conditional
PUT (``If-Match`` the ETag it was read with; ``If-None-Match: *`` to create), so of two
writers starting from the same version exactly one wins and the other gets
:class:`Conflict`: a reserve skips that task, a completion re-reads and re-checks its
lease token. Index entries are hints written around the record (see :meth:`save`); the
record is the truth, and whoever lists a stale entry repairs it.
"""

from __future__ import annotations

import abc
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec

from omniq.errors import QueueError
from omniq.models import encoder
from omniq.records import stand_in

from .files import Files, LockingFiles, S3Files
from .layout import Record, entry_path, record_path, split_entry

__all__ = [
    "ConditionalRecords",
    "Conflict",
    "LockedRecords",
    "RecordStore",
    "Unreadable",
    "new_rev",
    "record_store",
    "rev_time",
]

T = TypeVar("T")
_record_decoder = msgspec.msgpack.Decoder(Record)
#: How often a compare-and-set is retried on conflict before giving up.
CAS_ATTEMPTS = 20
#: An entry whose record does not exist may be an enqueue still in flight; only entries
#: older than this are removed as orphans.
ORPHAN_GRACE_NS = 300 * 10**9
#: A record whose entry is still in its previous directory this long after the change
#: was left so by a crash; its entry is then moved by whoever lists it.
REPAIR_GRACE_NS = 30 * 10**9


class Unreadable(Record):
    """What :meth:`RecordStore.load` returns for a record file that does not decode: a
    stand-in task, placed by the engine where its index entry says (queue, state, order)."""


class Conflict(Exception):
    """Another writer changed the record since it was read (nothing was written)."""


class RecordStore(abc.ABC):
    """Reading and replacing records and their index entries, atomically."""

    #: Whether ``depends_on`` can be supported (it changes several records at once).
    dependencies: bool

    def __init__(self, files: Files) -> None:
        self.files = files

    @abc.abstractmethod
    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one engine operation (under the lock, or as is)."""

    @abc.abstractmethod
    def read(self, path: str) -> bytes | None:
        """A record's bytes (remembering their version for :meth:`replace`)."""

    @abc.abstractmethod
    def replace(self, path: str, data: bytes) -> None:
        """Replace a record read in this operation; :class:`Conflict` if it changed."""

    @abc.abstractmethod
    def save(self, old: Record | None, new: Record) -> Record:
        """Store ``new`` (replacing ``old``, or creating it) and move its index entry;
        return it as stored. :class:`Conflict` when another writer came first."""

    @abc.abstractmethod
    def next_seq(self, count: int) -> int:
        """Reserve ``count`` consecutive enqueue sequence numbers; return the first."""

    def may_drop_orphan(self, since_ns: int) -> bool:
        """Whether an entry whose record is missing, written at ``since_ns`` or later,
        can be deleted."""
        return True

    def may_repair(self, rec: Record) -> bool:
        """Whether a stale entry of ``rec`` should be repaired now (rather than left to
        the writer that is moving it)."""
        return True

    def retrying(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn`` again (it re-reads) while it meets a :class:`Conflict`."""
        return fn(*args)

    def load(self, eid: str) -> Record | None:
        data = self.read(f"tasks/{eid}")
        if data is None:
            return None
        try:
            return _record_decoder.decode(data)
        except Exception as exc:  # never let one bad file stop a read (omniq.records)
            task_id = eid if eid.startswith("%h") else unquote(eid)
            return Unreadable(0, stand_in(task_id, exc, "the tasks directory"))

    def drop(self, entry: str) -> None:
        """Delete the task listed at index ``entry``: its list of dependents (where kept),
        then its record, then the entry. A crash between two of these leaves the entry,
        which its lister finds again: with the record, it drops the task again; without,
        it deletes the entry as an orphan (and does not count it). Entry first left the
        record with nothing to list it, kept forever. The files are named by the entry's
        encoded id, not by the task's: an unreadable record's stand-in has a hashed id
        as its id, which encodes to another name."""
        eid = split_entry(entry)[1]
        if self.dependencies:
            deps_dir = f"deps/{eid}"
            for echild in self.files.list(deps_dir):
                self.files.discard(f"{deps_dir}/{echild}")
            self.files.prune(deps_dir)
        self.files.discard(f"tasks/{eid}")
        self.files.discard(entry)


class LockedRecords(RecordStore):
    dependencies = True

    def __init__(self, files: LockingFiles) -> None:
        super().__init__(files)
        self.locking = files

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self.locking.lock():
            return fn(*args)

    def read(self, path: str) -> bytes | None:
        return self.files.read(path)

    def replace(self, path: str, data: bytes) -> None:
        self.files.write(path, data)

    def save(self, old: Record | None, new: Record) -> Record:
        """Create: entry, then record (an entry without a record is dropped by its
        lister). Replace: record, then entry moved. After a crash between the two the
        entry is left in the directory of the state the task left, which is one that is
        listed often (pending, running, a due retry, waiting) and whose lister moves it.
        The other order left it in the new state's directory: a completion's in a
        finished bucket, listed only when its retention ends, and the record ``running``
        with no entry the lease sweep reads, for a day."""
        target = entry_path(new)
        if old is None:
            self.files.touch(target)
            self.files.write(record_path(new.task.id), encoder.encode(new))
            return new
        self.files.write(record_path(new.task.id), encoder.encode(new))
        if not self.locking.move(entry_path(old), target):
            self.files.touch(target)
        return new

    def next_seq(self, count: int) -> int:
        data = self.files.read("meta/seq")
        first = int(data) if data else 0
        self.files.write("meta/seq", str(first + count).encode())
        return first


class ConditionalRecords(RecordStore):
    dependencies = False

    def __init__(self, files: S3Files) -> None:
        super().__init__(files)
        self.s3 = files
        self._local = threading.local()  # ETags read by the operation running in this thread

    def _etags(self) -> dict[str, str]:
        if not hasattr(self._local, "etags"):
            self._local.etags = {}
        etags: dict[str, str] = self._local.etags
        return etags

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        self._etags().clear()
        return fn(*args)

    def retrying(self, fn: Callable[..., T], *args: Any) -> T:
        for _ in range(CAS_ATTEMPTS):
            try:
                return fn(*args)
            except Conflict:
                continue
        raise QueueError(
            f"{CAS_ATTEMPTS} conflicting writes in a row on {self.s3.root}; the store is too "
            f"contended for compare-and-set"
        )

    def read(self, path: str) -> bytes | None:
        found = self.s3.read_versioned(path)
        if found is None:
            self._etags().pop(path, None)
            return None
        data, self._etags()[path] = found
        return data

    def _put(self, path: str, data: bytes, etag: str | None) -> None:
        new = self.s3.write_if(path, data, etag)
        if new is None:
            raise Conflict(path)
        self._etags()[path] = new

    def replace(self, path: str, data: bytes) -> None:
        self._put(path, data, self._etags().get(path))

    def save(self, old: Record | None, new: Record) -> Record:
        """Create: entry, then record (an entry without a record is an enqueue in flight,
        or an orphan after the grace period). Replace: record, then new entry, then old
        entry removed (after a crash the old entry still leads to the record, and its
        lister moves it)."""
        path = record_path(new.task.id)
        if old is None:
            new = msgspec.structs.replace(new, rev=new_rev())
            self.files.touch(entry_path(new))
            try:
                self._put(path, encoder.encode(new), None)
            except Conflict:
                self.files.discard(entry_path(new))
                raise
            return new
        old_entry = entry_path(old)
        if entry_path(msgspec.structs.replace(new, rev=old.rev)) == old_entry:
            new = msgspec.structs.replace(new, rev=old.rev)
        else:
            new = msgspec.structs.replace(new, rev=new_rev())
        self.replace(path, encoder.encode(new))
        if entry_path(new) != old_entry:
            self.files.touch(entry_path(new))
            self.files.discard(old_entry)
        return new

    def next_seq(self, count: int) -> int:
        def bump() -> int:
            data = self.read("meta/seq")
            first = int(data) if data else 0
            self._put(
                "meta/seq",
                str(first + count).encode(),
                None if data is None else self._etags()["meta/seq"],
            )
            return first

        return self.retrying(bump)

    def may_drop_orphan(self, since_ns: int) -> bool:
        return time.time_ns() - since_ns > ORPHAN_GRACE_NS

    def may_repair(self, rec: Record) -> bool:
        """Only when its last change is older than :data:`REPAIR_GRACE_NS`: a fresh
        mismatch is a writer between its record and entry writes (a reserver racing
        others sees many); repairing it would only add requests."""
        return time.time_ns() - rev_time(rec.rev) > REPAIR_GRACE_NS


def rev_time(rev: str) -> int:
    """When a rev was made (epoch ns); 0 for the empty rev of locked stores."""
    try:
        return int(rev[:-8], 16)
    except ValueError:
        return 0


def new_rev() -> str:
    """Unique, and starting with its creation time (for :meth:`may_drop_orphan`)."""
    return f"{time.time_ns():x}{uuid.uuid4().hex[:8]}"


def record_store(files: Files) -> RecordStore:
    if isinstance(files, LockingFiles):
        return LockedRecords(files)
    if isinstance(files, S3Files):
        return ConditionalRecords(files)
    raise TypeError(f"no task queue on {type(files).__name__}")
