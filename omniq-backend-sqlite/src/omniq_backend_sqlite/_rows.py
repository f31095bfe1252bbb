"""Task <-> ``omniq_tasks`` row.

Every Task field is a column (so tasks can be read with plain SQL); ``depends_on``,
``error`` and ``headers`` are JSON text (NULL when empty). Decoding validates every
column; a row that does not decode (edited by hand, written by a bug) becomes a stand-in
Task instead of an exception (:func:`omniq.records.stand_in`: the row's id, queue, name,
state and lease, an empty payload and an error naming the bad column), which the worker
dead-letters.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from itertools import compress, groupby, repeat
from operator import is_not, itemgetter
from typing import Any

import msgspec

from omniq.models import ErrorInfo, Task
from omniq.records import stand_in

log = logging.getLogger("omniq.sqlite")

TASK_COLUMNS = (
    "id", "name", "queue", "payload", "priority", "state", "created_at", "eta", "expires_at",
    "timeout", "max_retries", "retry_backoff", "retry_backoff_max", "max_deliveries",
    "attempts", "depends_on", "schedule_id", "lease_owner", "lease_token", "lease_deadline",
    "started_at", "finished_at", "error", "result_ttl", "dead_ttl", "headers",
    "on_parent_failure", "pass_results",
)  # fmt: skip
COLUMNS_SQL = ", ".join(TASK_COLUMNS)
#: The columns NOT NULL without a default (:class:`RowInsert`'s ``required``).
TASK_REQUIRED = (
    "id", "name", "queue", "payload", "priority", "state", "created_at", "max_retries",
    "retry_backoff", "retry_backoff_max", "max_deliveries", "attempts", "result_ttl",
    "dead_ttl",
)  # fmt: skip


def encode_error(error: ErrorInfo | None) -> str | None:
    return None if error is None else msgspec.json.encode(error).decode()


#: Largest payload :func:`blob` copies (a copy grows with the size, the adaptation not).
BLOB_COPY_MAX = 4096


def blob(data: bytes) -> bytes | bytearray:
    """``data`` as :mod:`sqlite3` binds a BLOB cheapest. It binds ``int``, ``float``,
    ``str`` and ``bytearray`` as they are, but first tries to adapt anything else,
    ``bytes`` included: a tuple built, the adapters looked up, and an AttributeError
    made and cleared for ``__adapt__`` (~4-5k instructions, ~0.6 µs a value on the
    development VM); the copy into a bytearray costs ~0.2 µs for a small payload. A
    BLOB reads back as ``bytes`` either way."""
    return bytearray(data) if len(data) <= BLOB_COPY_MAX else data


def task_params(task: Task) -> tuple[Any, ...]:
    """The row for ``task``, in :data:`TASK_COLUMNS` order (the payload as a
    :func:`blob`; the state by the member's attribute: ``.value`` is a Python-level
    property of :class:`enum.Enum`; :func:`blob` and :func:`encode_error` written out:
    this runs for every ``delay()``)."""
    payload, error = task.payload, task.error
    return (
        task.id, task.name, task.queue,
        bytearray(payload) if len(payload) <= BLOB_COPY_MAX else payload,
        task.priority, task.state._value_,
        task.created_at, task.eta, task.expires_at, task.timeout, task.max_retries,
        task.retry_backoff, task.retry_backoff_max, task.max_deliveries, task.attempts,
        msgspec.json.encode(task.depends_on).decode() if task.depends_on else None,
        task.schedule_id, task.lease_owner, task.lease_token, task.lease_deadline,
        task.started_at, task.finished_at,
        None if error is None else msgspec.json.encode(error).decode(), task.result_ttl,
        task.dead_ttl, msgspec.json.encode(task.headers).decode() if task.headers else None,
        task.on_parent_failure, int(task.pass_results),
    )  # fmt: skip


def new_task_insert(insert: RowInsert, task: Task) -> tuple[str, tuple[Any, ...]]:
    """``insert(task_params(task))`` for an insert of :data:`TASK_COLUMNS` with
    :data:`TASK_REQUIRED` (a ``delay()``'s): the key read off the task's fields, not
    off each optional value of its row (~8k -> ~2k instructions). One flag per column
    not in ``TASK_REQUIRED``, in order: set where :func:`task_params` puts a value, not
    None (``depends_on`` and ``headers`` when not empty; ``pass_results`` always)."""
    key = (
        task.eta is not None, task.expires_at is not None, task.timeout is not None,
        bool(task.depends_on), task.schedule_id is not None, task.lease_owner is not None,
        task.lease_token is not None, task.lease_deadline is not None,
        task.started_at is not None, task.finished_at is not None, task.error is not None,
        bool(task.headers), task.on_parent_failure is not None, True,
    )  # fmt: skip
    return insert.keyed(key, task_params(task))


class RowInsert:
    """``INSERT`` statements naming only a row's non-NULL columns: a column left out
    takes its default, NULL for every nullable column, and SQLite binds and copies fewer
    values (a new task has 10-12 NULL columns of 28; :mod:`sqlite3` also tries to adapt
    each None it binds, see :func:`blob`).
    One statement text per set of columns, cached here (and prepared once by
    :mod:`sqlite3`'s own statement cache).

    ``required`` names columns that are NOT NULL without a default: they are always
    named and bound, and only the other columns are looked at for None (a task's 14 of
    28: ~0.5 µs less a row). A None in one is refused by SQLite as before (NOT NULL)."""

    def __init__(
        self,
        table: str,
        columns: Sequence[str],
        suffix: str = "",
        required: Sequence[str] = (),
    ) -> None:
        self._head = f"INSERT INTO {table} ("
        self._columns = tuple(columns)
        self._suffix = f" {suffix}" if suffix else ""
        self._sql: dict[tuple[bool, ...], str] = {}
        #: The positions that may hold None, and a getter of their values.
        self._optional = tuple(i for i, c in enumerate(self._columns) if c not in required)
        self._pick = _getter(self._optional)
        #: By which optional values are not None: the statement and a getter of its values.
        self._forms: dict[tuple[bool, ...], tuple[str, Callable[[Sequence[Any]], Any]]] = {}

    def __call__(self, params: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """The statement and its parameters for the row ``params`` (in column order)."""
        key = tuple(map(is_not, self._pick(params), _NONES))
        form = self._forms.get(key) or self._form(key)
        return form[0], form[1](params)

    def keyed(self, key: tuple[bool, ...], params: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """:meth:`__call__` with the key its look at ``params`` would make already known
        (one flag per optional column, in order: the value is not None)."""
        form = self._forms.get(key) or self._form(key)
        return form[0], form[1](params)

    def _form(self, key: tuple[bool, ...]) -> tuple[str, Callable[[Sequence[Any]], Any]]:
        present = [True] * len(self._columns)
        for i, here in zip(self._optional, key, strict=True):
            present[i] = here
        kept = tuple(compress(range(len(present)), present))
        form = self._forms[key] = (self.statement(tuple(present)), _getter(kept))
        return form

    def statement(self, present: tuple[bool, ...]) -> str:
        """The statement naming the columns ``present`` marks (in column order)."""
        sql = self._sql.get(present)
        if sql is None:
            names = tuple(compress(self._columns, present))
            sql = self._sql[present] = (
                f"{self._head}{', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
                f"{self._suffix}"
            )
        return sql

    def run(self, conn: sqlite3.Connection | sqlite3.Cursor, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` in order: one ``execute`` for a single row, else one
        ``executemany`` per run of rows with the same NULL columns (a batch of one
        task function's calls is one run)."""
        if len(rows) == 1:
            conn.execute(*self(rows[0]))
            return
        for sql, run in groupby(map(self, rows), key=itemgetter(0)):
            conn.executemany(sql, [params for _, params in run])


def _getter(positions: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A function of a row giving the tuple of its values at ``positions``
    (``itemgetter`` of one position gives the value itself)."""
    if len(positions) == 1:
        [i] = positions
        return lambda row: (row[i],)
    if not positions:
        return lambda row: ()
    return itemgetter(*positions)


_NONES = repeat(None)


def row_to_task(row: Sequence[Any]) -> Task:
    """Decode a row selected as :data:`COLUMNS_SQL`; never raises (see module doc)."""
    fields = dict(zip(TASK_COLUMNS, row, strict=True))
    try:
        deps = fields["depends_on"]
        fields["depends_on"] = msgspec.json.decode(deps) if deps is not None else ()
        error = fields["error"]
        fields["error"] = msgspec.json.decode(error) if error is not None else None
        headers = fields["headers"]
        fields["headers"] = msgspec.json.decode(headers) if headers is not None else {}
        fields["pass_results"] = fields["pass_results"] == 1
        return msgspec.convert(fields, Task)
    except (msgspec.MsgspecError, TypeError, ValueError) as exc:
        return stand_in(
            str(fields["id"]),
            exc,
            "omniq_tasks",
            name=fields["name"],
            queue=fields["queue"],
            state=fields["state"],
            attempts=fields["attempts"],
            lease_owner=fields["lease_owner"],
            lease_token=fields["lease_token"],
            lease_deadline=fields["lease_deadline"],
        )
