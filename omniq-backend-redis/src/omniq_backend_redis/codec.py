"""Tasks as the scripts store them: the encoded Task plus the fields that change."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec

from omniq.models import ErrorInfo, Task, TaskState, encoder, task_decoder
from omniq.records import decode_each, stand_in

error_decoder = msgspec.msgpack.Decoder(ErrorInfo)
STATES = {state.value.encode(): state for state in TaskState}  # a state as the scripts write it


def _float(value: bytes | None) -> float | None:
    return float(value) if value else None


def _str(value: bytes | None) -> str | None:
    return value.decode() if value else None


def decode_error(blob: bytes | None) -> ErrorInfo | None:
    return error_decoder.decode(blob) if blob else None


#: A task hash's fields as get() reads them: the header (the marker, then created_at and
#: the other fields that never change, as doubles: see prelude.lua), then a row's but c.
HASH_FIELDS = ("h", "d", "s", "a", "e", "lo", "lt", "ld", "sa", "fa", "er")
MARK = b"OQT2"


def is_task_hash(header: bytes | None) -> bool:
    return header is not None and header[:4] == MARK


def decode_hash(task_id: str, values: Sequence[bytes | None]) -> Task:
    """Build a Task from a hash's HASH_FIELDS (its header checked by is_task_hash); a
    stand-in when it does not decode."""
    try:
        (created,) = struct.unpack_from(">d", values[0] or b"", 4)
        return decode_task([values[1], created, *values[2:]])
    except Exception as exc:
        return rescue(task_id, values[1:], exc)


def rescue(task_id: str, row: Sequence[Any], exc: Exception, queue: Any = None) -> Task:
    """The stand-in of a row ``d [c] s a e lo lt ld ...`` (``c`` left out) that does not
    decode (:func:`omniq.records.stand_in`)."""
    _body, state, attempts, _eta, owner, token, deadline = row[:7]
    return stand_in(
        task_id,
        exc,
        "Redis",
        queue=queue or "default",
        state=state,
        attempts=attempts,
        lease_owner=owner,
        lease_token=token,
        lease_deadline=deadline,
    )


def decode_task(row: Sequence[Any]) -> Task:
    """Build a Task from a row ``d c s a e lo lt ld sa fa er`` (see prelude.lua; ``c`` a
    float); empty values mean none."""
    body, created, state, attempts, eta, owner, token, deadline, started, finished, error = row
    assert body is not None and state is not None
    task = task_decoder.decode(body)
    task.created_at = float(created or 0)
    task.state = STATES[state]
    task.attempts = int(attempts or 0)
    task.eta = _float(eta)
    task.lease_owner = _str(owner)
    task.lease_token = _str(token)
    task.lease_deadline = _float(deadline)
    task.started_at = _float(started)
    task.finished_at = _float(finished)
    task.error = decode_error(error)
    return task


def decode_rows(blob: bytes) -> list[Task]:
    """Tasks from a script's msgpack reply (a list of rows)."""
    return [decode_task(row) for row in msgspec.msgpack.decode(blob)]


def decode_rows_with_id(blob: bytes) -> list[Task]:
    """Tasks from a reply of ``row_id`` rows (the id last), a stand-in for a row that
    does not decode."""
    return decode_each(
        msgspec.msgpack.decode(blob),
        lambda row: decode_task(row[:-1]),
        lambda row, exc: rescue(_str(row[-1]) or "", [row[0], *row[2:]], exc),
    )


def encode_error(error: ErrorInfo | None) -> bytes:
    return encoder.encode(error) if error is not None else b""


def number(value: float | None) -> str:
    """A float for a script argument ('' for None), exact to the last bit."""
    return "" if value is None else repr(float(value))


def column(values: list[Any]) -> Any:
    """A column of a script's batch (see enqueue.lua): the one value every item has (a
    bulk's items share most fields), else the list of values."""
    first = values[0]
    # (C-level passes: == alone would take 1, 1.0 and True for one value)
    if values.count(first) == len(values) and len(set(map(type, values))) == 1:
        return first
    return values


#: Largest run of encoded items in one script argument: Redis refuses a bulk string over
#: proto-max-bulk-len (512 MB by default), which a batch of large payloads could pass.
BLOB_BYTES = 64 << 20


def blobs(bodies: list[bytes]) -> list[bytes]:
    """``bodies`` end to end, cut between items into runs of at most BLOB_BYTES (a
    single larger item gets a run of its own)."""
    if sum(map(len, bodies)) <= BLOB_BYTES:
        return [b"".join(bodies)]
    runs: list[bytes] = []
    run: list[bytes] = []
    size = 0
    for body in bodies:
        if run and size + len(body) > BLOB_BYTES:
            runs.append(b"".join(run))
            run, size = [], 0
        run.append(body)
        size += len(body)
    runs.append(b"".join(run))
    return runs
