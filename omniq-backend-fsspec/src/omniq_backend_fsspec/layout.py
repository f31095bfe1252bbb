"""Where the task queue keeps what, chosen so every hot call lists only small directories.

::

    tasks/<id>                                   the task record (source of truth)
    queues/<queue>/name                          the queue's real name (for stats)
    queues/<queue>/pending/<P><seq/4096>/<P><seq>-<id>      ready now, in reserve order
    queues/<queue>/scheduled/<t/68s>/<eta>-<P><seq>-<id>     waiting for their eta
    queues/<queue>/retrying/<t/68s>/<eta>-<P><seq>-<id>
    queues/<queue>/waiting/<P><seq>-<id>                     waiting for dependencies
    queues/<queue>/running/<P><seq>-<id>
    queues/<queue>/<terminal state>/<t/68s>/<delete at>-<P><seq>-<id>
    expiry/<t/68s>/<expires at>-<P><seq>-<id>    tasks with a ttl, by expiry
    ...-<id>~<rev>                               entry names on S3 (see Record)
    deps/<parent id>/<child id>                  children of a parent (until it is deleted)
    schedules/<id>
    meta/seq                                     the enqueue counter

``P`` is ``9 - priority`` and ``seq`` a 16-digit hex enqueue counter, so plain name order
is reserve order (highest priority, then FIFO). Pending entries are grouped 4096 to a
directory and timed entries by 2**36 ns (about 68 s), so reserve and cleanup list only
the first directories, never a whole queue. Every ``<queue>`` and ``<id>`` segment is
encoded by :func:`omniq_backend_fsspec.names.encode`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from omniq.models import TERMINAL_STATES, Task, TaskState

from .files import Files
from .names import encode

__all__ = [
    "Record",
    "due_entries",
    "entry_path",
    "entry_paths",
    "entry_time",
    "expiry_path",
    "pending_entries",
    "queue_dir",
    "record_path",
    "split_entry",
]

SEQ_SHIFT = 12
TIME_SHIFT = 36
MAX_NS = 10**20 - 1


class Record(msgspec.Struct, array_like=True):
    """A stored task with its enqueue sequence number (FIFO order survives restarts).

    ``rev`` is empty on locked stores. On compare-and-set stores it changes whenever the
    record moves to another index directory and ends its entry's name (``...-<id>~<rev>``),
    so an entry left behind by a lost race or a crash never matches the record again.
    """

    seq: int
    task: Task
    rev: str = ""


def to_ns(t: float | None) -> int:
    return min(max(int((t or 0.0) * 1e9), 0), MAX_NS)


def sort_key(rec: Record) -> str:
    return f"{9 - min(max(rec.task.priority, 0), 9)}{rec.seq:016x}"


def record_path(task_id: str) -> str:
    return f"tasks/{encode('task id', task_id)}"


def queue_dir(queue: str) -> str:
    return f"queues/{encode('queue', queue)}"


def _timed(directory: str, t_ns: int, key: str, eid: str) -> str:
    return f"{directory}/{t_ns >> TIME_SHIFT:08x}/{t_ns:020d}-{key}-{eid}"


def entry_path(rec: Record) -> str:
    """The index entry a record in its current state must have."""
    task = rec.task
    key, eid = sort_key(rec), encode("task id", task.id) + (f"~{rec.rev}" if rec.rev else "")
    directory = f"{queue_dir(task.queue)}/{task.state.value}"
    if task.state is TaskState.PENDING:
        return f"{directory}/{key[0]}{rec.seq >> SEQ_SHIFT:012x}/{key}-{eid}"
    if task.state in (TaskState.SCHEDULED, TaskState.RETRYING):
        return _timed(directory, to_ns(task.eta), key, eid)
    if task.state in TERMINAL_STATES:
        return _timed(directory, to_ns((task.finished_at or 0.0) + task.retention()), key, eid)
    return f"{directory}/{key}-{eid}"


def expiry_path(rec: Record) -> str:
    return _timed(
        "expiry", to_ns(rec.task.expires_at), sort_key(rec), encode("task id", rec.task.id)
    )


def split_entry(path: str) -> tuple[str, str, str]:
    """``(sort key, encoded id, rev)`` of an entry path (timed or not). Encoded ids
    never hold ``~``, so it can only be the rev's separator."""
    name = path.rpartition("/")[2]
    if len(name) > 21 and name[20] == "-" and name[:20].isdigit():
        name = name[21:]
    eid, _, rev = name[18:].partition("~")
    return name[:17], eid, rev


def entry_time(path: str) -> int:
    """The time (epoch ns) a timed entry is filed under."""
    return int(path.rpartition("/")[2][:20])


def pending_entries(files: Files, queue: str) -> Iterator[tuple[str, str]]:
    """``(sort key, path)`` of a queue's pending entries in reserve order, listed one
    bucket at a time (empty buckets are removed on the way)."""
    directory = f"{queue_dir(queue)}/pending"
    for bucket in files.list(directory):
        names = files.list(f"{directory}/{bucket}")
        if not names:
            files.prune(f"{directory}/{bucket}")
        for name in names:
            yield name[:17], f"{directory}/{bucket}/{name}"


def due_entries(files: Files, directory: str, now_ns: int) -> Iterator[tuple[str, str]]:
    """``(sort key, path)`` of timed entries filed at or before ``now_ns``, by time."""
    for bucket in files.list(directory):
        if int(bucket, 16) << TIME_SHIFT > now_ns:
            return
        names = files.list(f"{directory}/{bucket}")
        if not names:
            files.prune(f"{directory}/{bucket}")
        for name in names:
            if int(name[:20]) > now_ns:
                return
            yield name[21:38], f"{directory}/{bucket}/{name}"


def entry_paths(
    files: Files, queue_directory: str, states: Iterable[TaskState]
) -> dict[TaskState, list[str]]:
    """Every entry of one queue in ``states``, by state (for list, stats, purge and the
    lease sweep), from one recursive listing."""
    wanted = {s.value: s for s in states}
    scope = f"{queue_directory}/{next(iter(wanted))}" if len(wanted) == 1 else queue_directory
    found: dict[TaskState, list[str]] = {s: [] for s in wanted.values()}
    for path in files.find(scope):
        state = wanted.get(path[len(queue_directory) + 1 :].partition("/")[0])
        if state is not None and path.count("/") > queue_directory.count("/") + 1:
            found[state].append(path)
    return found
