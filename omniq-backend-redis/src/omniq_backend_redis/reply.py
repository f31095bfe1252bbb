"""Reading one command's reply straight off a connection's stream.

``SharedConnection.call_packed`` (every ``delay()`` and worker script) reads its reply
here instead of through redis-py's ``read_response``, which per call formats the host
for its error messages, enters ``asyncio.timeout`` under ``socket_timeout`` (a Timeout
object, a timer handle pushed on the loop's heap and cancelled) and runs the RESP parser
coroutines: together ~45,000 of the ~267,000 instructions of a ``delay()`` with redis-py
8 (callgrind; the timeout alone ~44,000). The replies the scripts give, a bulk string,
an integer or an error, are read here by one ``read`` of the stream (whatever has come:
one command is in flight on the connection; ``readuntil`` then ``readexactly`` cost a
coroutine more per bulk-string reply; for asyncio's own StreamReader that read is
written out, a wait on the reader's waiter and its buffer taken, see ``_read``); anything
else goes to redis-py's parser with what was read. The
timeout stays: one timer per shared connection (:class:`Deadlines`) watches every read
in flight and fails a read past its deadline, instead of a timer per read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # (redis-py's private parsers: a release without them reads through read_response)
    from redis._parsers import _AsyncHiredisParser
    from redis._parsers.base import _AsyncRESPBase
except ImportError:  # pragma: no cover
    _AsyncHiredisParser = _AsyncRESPBase = None  # type: ignore[assignment,misc]

#: How early a deadline's timer may fire and still fail the read (the loop runs a timer
#: up to its clock resolution early; a read timed out 1 ms before ``socket_timeout``
#: is not one that would have finished).
_SLACK = 0.001


class Deadlines:
    """The reads in flight on one event loop's connections and when each must end: one
    timer, set for the earliest deadline when it is not set already, and set again when
    it fires and reads are still in flight. A read past its deadline gets TimeoutError
    from its stream (``StreamReader.set_exception``), so the connection is dropped as
    after any failed read.

    A read registers itself in :func:`_read`, written out there (its deadline in
    ``_reads``, the timer started if none is set; removed when it ends): methods for
    these cost a ``delay()`` a Python frame each, ~3,000 instructions together."""

    def __init__(self) -> None:
        self._reads: dict[asyncio.StreamReader, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._reads.clear()

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time() + _SLACK
        for reader, deadline in list(self._reads.items()):
            if deadline <= now:
                del self._reads[reader]
                reader.set_exception(TimeoutError())
        if self._reads:
            self._timer = loop.call_at(min(self._reads.values()), self._expire, loop)


def read_reply(conn: Any, deadlines: Deadlines) -> Awaitable[Any]:
    """The reply to the command just sent on ``conn`` (raw bytes: the pool does not
    decode), as ``conn.read_response()`` gives it: an error reply raised as its
    ResponseError, a failed read as redis-py's ConnectionError or TimeoutError (and the
    caller drops the connection). A connection with a health check (redis-py keeps its
    clock in ``read_response``), a parser not known here or data left in the parser's
    buffer goes through redis-py (returned as is: no coroutine of ours around it)."""
    reader = getattr(conn, "_reader", None)
    if reader is None or conn.health_check_interval:
        return conn.read_response()  # type: ignore[no-any-return]
    parser = conn._parser
    kind = _PARSERS.get(type(parser))
    if kind is None:
        kind = _PARSERS[type(parser)] = _parser_kind(parser)
    if kind == _OTHER or (parser._reader.has_data() if kind == _HIREDIS else parser._buffer):
        return conn.read_response()  # type: ignore[no-any-return]
    return _read(conn, reader, deadlines, kind)


async def _read(conn: Any, reader: asyncio.StreamReader, deadlines: Deadlines, kind: int) -> Any:
    timeout = conn.socket_timeout
    reads = deadlines._reads
    if timeout is not None:  # (this read's deadline, and the timer if none is set)
        loop = asyncio.get_running_loop()
        deadline = reads[reader] = loop.time() + timeout
        if deadlines._timer is None:
            deadlines._timer = loop.call_at(deadline, deadlines._expire, loop)
    try:
        # What has come, at once (one read: one command is in flight on the connection,
        # so it holds this reply or its start, nothing more): a whole short reply is
        # answered here, anything else goes to the parser with what was read.
        direct = _DIRECT.get(type(reader))
        if direct is None:
            direct = _DIRECT[type(reader)] = _waits_directly(reader)
        state: Any = reader  # (its private state, untyped)
        if direct and not (
            state._buffer or state._eof or state._paused or state._waiter or state._exception
        ):
            # (StreamReader.read and its _wait_for_data, written out for a reader with
            # nothing buffered: two coroutines less a call, ~2,300 instructions)
            waiter = state._waiter = state._loop.create_future()
            try:
                await waiter  # (a failed read, or a deadline, raises here)
            finally:
                state._waiter = None
            buffer = state._buffer
            if buffer and not state._paused and len(buffer) <= _READ_SIZE:
                data = bytes(buffer)
                buffer.clear()
            else:  # (end of stream, or more than a read takes)
                data = await reader.read(_READ_SIZE)
        else:
            data = await reader.read(_READ_SIZE)
        if not data:
            raise asyncio.IncompleteReadError(data, None)
    except TimeoutError:
        raise RedisTimeoutError(f"Timeout reading from {conn._host_error()}") from None
    except asyncio.IncompleteReadError:
        raise RedisConnectionError("Connection closed by server.") from None
    except (OSError, asyncio.LimitOverrunError) as exc:
        raise RedisConnectionError(
            f"Error while reading from {conn._host_error()} : {exc.args}"
        ) from exc
    finally:
        if timeout is not None:
            reads.pop(reader, None)
    first, end = data[:1], data.find(b"\r\n")
    if end + 2 == len(data):  # one line
        if first == b":":
            return int(data[1:end])
        if first == b"-" and kind == _RESP:
            raise conn._parser.parse_error(data[1:end].decode("utf-8", errors="replace"))
    elif end > 0 and first == b"$" and int(data[1:end]) + end + 4 == len(data):
        return data[end + 2 : -2]
    # Another kind of reply, or one not all here: redis-py's parser reads on from it.
    if kind == _HIREDIS:
        conn._parser._reader.feed(data)
    else:
        conn._parser._buffer = data  # (read_response parses on from it, then clears it)
    return await conn.read_response()


#: How much one read takes (what redis-py's connections read).
_READ_SIZE = 65536

#: The private state of asyncio's StreamReader that :func:`_read` waits on directly.
_STREAM_STATE = ("_buffer", "_eof", "_paused", "_waiter", "_exception", "_loop")
#: Whether :func:`_read` waits on a reader's state directly, by reader class.
_DIRECT: dict[type, bool] = {}


def _waits_directly(reader: Any) -> bool:
    """Only asyncio's own StreamReader (not a subclass, whose ``read`` may differ) with
    the state it has had since Python 3.8; any other reader is read by ``read()``."""
    return type(reader) is asyncio.StreamReader and all(
        hasattr(reader, name) for name in _STREAM_STATE
    )


_RESP, _HIREDIS, _OTHER = range(3)
#: What each parser class is, as _parser_kind says.
_PARSERS: dict[type, int] = {}


def _parser_kind(parser: Any) -> int:
    """Pure-Python RESP parsers keep what they read ahead in ``_buffer``, the hiredis one
    in its reader (``has_data``); both take a first line back (see :func:`_read`)."""
    if _AsyncRESPBase is not None and isinstance(parser, _AsyncRESPBase):
        return _RESP
    if (
        _AsyncHiredisParser is not None
        and isinstance(parser, _AsyncHiredisParser)
        and hasattr(parser._reader, "has_data")
    ):
        return _HIREDIS
    return _OTHER
