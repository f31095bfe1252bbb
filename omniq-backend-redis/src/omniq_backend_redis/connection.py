"""One connection pool per process and server, shared by the stores that point at it.

A task queue, a result storage and an event storage configured with the same URL and
connection options share one pool (and one pub/sub connection for wake-ups) instead of
opening three. The cache is keyed by event loop too, since asyncio connections belong
to the loop that made them; entries are reference-counted by ``open``/``close``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from importlib import resources
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from omniq.config import mask_url

from .errors import RedisUnavailableError
from .notify import Notifier
from .reply import Deadlines, read_reply
from .settings import ConnectionSettings

#: The shared Lua (lua/<lib>.lua) each script runs after, in order: the task-queue
#: scripts share keys, the prelude and lifecycle (and msgpack, for their replies);
#: reserve needs no lifecycle; enqueue also appends its tasks' events, with the same
#: events_lib as events_append and events_cleanup; enqueue_one, the single task of
#: delay(), runs on keys alone (the prelude's set-up costs more than its own work), and
#: so does finish_one, the finish of one task. A script not named here runs after
#: msgpack, keys, the prelude and lifecycle.
_LIBS: dict[str, tuple[str, ...]] = {
    "enqueue": ("batch", "msgpack", "events_lib", "keys", "prelude", "lifecycle"),
    "enqueue_one": ("keys",),
    "finish": ("batch", "msgpack", "events_lib", "keys", "prelude", "lifecycle"),
    "finish_one": ("keys",),
    "reserve": ("msgpack", "keys", "prelude"),
    "events_append": ("batch", "msgpack", "events_lib"),
    "events_cleanup": ("batch", "msgpack", "events_lib"),
    "events_task": (),
    "results_set": (),
    "results_delete": (),
    "wait_check": (),
}


class BoundedRetry(Retry):
    """redis-py's retry (``retries`` times, exponential backoff) that also gives up once
    ``outage_timeout`` has passed, and then raises :class:`RedisUnavailableError`
    naming the masked URL instead of redis-py's ConnectionError or TimeoutError: one
    error, in bounded time, for any call made while the server is away."""

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(ExponentialBackoff(cap=1.0, base=0.05), settings.retries)
        self.settings = settings

    async def call_with_retry(
        self, do: Callable[[], Any], fail: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """redis-py's retry, also given up once ``outage_timeout`` has passed since the
        first failure. The bound is kept in ``fail`` (called after every failure by every
        redis-py release since 5.0), so the extra parameters newer releases take are
        passed on untouched."""
        deadline = 0.0  # set at the first failure: nothing to do on the way of a success

        async def bounded(error: Exception, *rest: Any) -> None:
            nonlocal deadline
            deadline = deadline or time.monotonic() + self.settings.outage_timeout
            await fail(error, *rest)
            if time.monotonic() >= deadline:
                raise error

        try:
            return await super().call_with_retry(do, bounded, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise unavailable(self.settings, exc) from exc


def unavailable(settings: ConnectionSettings, exc: BaseException) -> RedisUnavailableError:
    """The error for a server that cannot be reached: the URL masked, the cause, the bound."""
    return RedisUnavailableError(
        f"Redis at {mask_url(settings.url)} did not answer: {mask_url(str(exc))} (retried for "
        f"up to outage_timeout={settings.outage_timeout:g} s). Check that the server "
        f"runs and the URL is right."
    )


class SharedConnection:
    """A client on the shared pool, its pub/sub notifier and the loaded scripts."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.retry = retry = BoundedRetry(settings)
        self.pool = ConnectionPool.from_url(
            settings.url,
            max_connections=settings.max_connections,
            socket_connect_timeout=settings.socket_connect_timeout,
            socket_keepalive=True,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            decode_responses=False,
        )
        self.client = Redis(connection_pool=self.pool)
        self.notifier = Notifier(self.client)
        self.refs = 0
        self.closed = False
        self._scripts: dict[str, AsyncScript] = {}
        #: one pooled connection held between calls of call_packed (see _call)
        self._kept: Any = None
        #: the deadlines of call_packed's reads (see reply.py)
        self.deadlines = Deadlines()

    def script(self, name: str, settings: str = "") -> AsyncScript:
        """The Lua script ``lua/<name>.lua`` after its libraries (``_LIBS``), run by
        EVALSHA: redis-py loads it once, and again after a restart. ``settings``, Lua
        put between the libraries and the script (constants it takes instead of
        arguments, see enqueue_one.lua), makes a script of its own."""
        key = f"{name}\n{settings}" if settings else name
        found = self._scripts.get(key)
        if found is None:
            lua = resources.files(__package__).joinpath("lua")
            libs = _LIBS.get(name, ("msgpack", "keys", "prelude", "lifecycle"))
            parts = [lua.joinpath(f"{part}.lua").read_text() for part in libs]
            parts += [settings, lua.joinpath(f"{name}.lua").read_text()]
            found = self._scripts[key] = self.client.register_script("\n".join(parts))
        return found

    async def call_packed(self, script: AsyncScript | None, packed: bytes) -> Any:
        """Run one script call already packed as a command (EVALSHA and its arguments,
        see :func:`pack_script`; or, ``script`` None, any command): the hot path of
        ``delay()`` and of a worker's scripts, without redis-py's packing of each
        argument or the pipelined reader. The first try goes straight out; a dropped
        connection is then retried like any command, and a server that lost its scripts
        gets this one again, and the call once more.

        The first try is :meth:`_call` written out (no coroutine of its own, nor of
        ``_send`` or ``_keep``, per call: ~2,000-3,000 instructions of a ``delay()``)."""
        conn, self._kept = self._kept, None
        if conn is None:
            conn = await self.pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            draining = _send(conn, packed)
            if draining is not None:
                await draining
            reply = await read_reply(conn, self.deadlines)
        except ResponseError as exc:
            await self._keep(conn)  # the script's answer: the connection is fine
            if script is None or not isinstance(exc, NoScriptError):
                raise
            await self.client.script_load(script.script)
        except (RedisConnectionError, RedisTimeoutError):
            await conn.disconnect()
            await self.pool.release(conn)
            # (the connection was dropped) retried below, with backoff
        except BaseException:
            await conn.disconnect()
            await self.pool.release(conn)
            raise
        else:
            if self._kept is None and not self.closed:  # (_keep)
                self._kept = conn
            else:
                await self.pool.release(conn)
            return reply
        for attempt in range(2):
            try:
                return await self.retry.call_with_retry(lambda: self._call(packed), _ignore)
            except NoScriptError:
                if attempt or script is None:
                    raise
                await self.client.script_load(script.script)
        raise AssertionError("unreachable")

    async def _call(self, packed: bytes) -> Any:
        """Send and read on the kept connection when it is free (sequential callers, the
        common case, skip the pool's checkout and release), else on a pooled one."""
        conn, self._kept = self._kept, None
        if conn is None:
            conn = await self.pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            draining = _send(conn, packed)
            if draining is not None:
                await draining
            reply = await read_reply(conn, self.deadlines)
        except ResponseError:
            await self._keep(conn)  # the script's answer: the connection is fine
            raise
        except BaseException:
            await conn.disconnect()
            await self.pool.release(conn)
            raise
        await self._keep(conn)
        return reply

    async def _keep(self, conn: Any) -> None:
        """Keep a connection for the next call, or give it back to the pool."""
        if self._kept is None and not self.closed:
            self._kept = conn
        else:
            await self.pool.release(conn)

    async def pipelined(
        self,
        calls: Iterable[tuple[str, list[Any]]],
        on_reply: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """Run scripts ``(name, args)`` back to back on one connection, each sent as soon
        as ``calls`` yields it: one round trip, and a caller that builds its calls lazily
        builds the next while the server runs the last. Each reply is the script's answer
        or its ResponseError; ``on_reply(i, reply)`` sees reply ``i`` as soon as it is
        read, which is while later calls are still being built when the server is ahead,
        so the caller can decode it meanwhile (it may see ``i`` again after a retry: the
        later one counts). (redis-py's Pipeline packs everything first, and costs more
        client time than the round trip it saves.) A dropped connection is retried like
        any command, resending every call; a server that lost its scripts (a restart)
        gets them again and every call once more: a NOSCRIPT reply means that script did
        not run."""
        source = iter(calls)
        sent: list[tuple[AsyncScript, list[Any]]] = []
        for attempt in range(2):
            replies: list[Any] = await self.retry.call_with_retry(
                lambda: self._send(sent, source, on_reply), _ignore
            )
            if attempt or not any(isinstance(r, NoScriptError) for r in replies):
                return replies
            for script in {id(s): s for s, _ in sent}.values():
                await self.client.script_load(script.script)
        raise AssertionError("unreachable")

    async def _send(
        self,
        sent: list[tuple[AsyncScript, list[Any]]],
        source: Iterator[tuple[str, list[Any]]],
        on_reply: Callable[[int, Any], None] | None,
    ) -> list[Any]:
        """Send ``sent`` again (a retry), then what ``source`` still holds, adding it to
        ``sent``. From the second call on, a reader task takes the replies as they come,
        one per call sent; the sender lets it run after each call (a write to a socket
        with room does not yield to the event loop). A single call reads its reply
        itself."""
        conn = await self.pool.get_connection()  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        tokens: asyncio.Queue[bool] = asyncio.Queue()  # True per call sent, then False
        reading: asyncio.Future[None] | None = None

        async def read() -> None:
            while await tokens.get():
                try:
                    reply = await conn.read_response()
                except ResponseError as exc:
                    reply = exc
                if on_reply is not None:
                    on_reply(len(replies), reply)
                replies.append(reply)

        async def send(script: AsyncScript, args: list[Any]) -> None:
            nonlocal reading
            await conn.send_packed_command(conn.pack_command("EVALSHA", script.sha, 0, *args))
            tokens.put_nowait(True)
            if reading is None and tokens.qsize() > 1:
                reading = asyncio.ensure_future(read())

        try:
            for script, args in sent:
                await send(script, args)
            for name, args in source:
                script = self.script(name)
                sent.append((script, args))
                await send(script, args)
                if reading is not None:
                    await asyncio.sleep(0)
                    if reading.done():
                        break  # it failed: its error is raised below
            tokens.put_nowait(False)
            await (reading if reading is not None else read())
            return replies
        except BaseException:
            if reading is not None:
                reading.cancel()
            await conn.disconnect()
            raise
        finally:
            await self.pool.release(conn)


def _send(conn: Any, packed: bytes) -> Awaitable[None] | None:
    """redis-py's ``send_packed_command``, without its per-call task: it drains the write
    under ``asyncio.wait_for`` whenever ``socket_timeout`` is set, which makes a task of
    every send although a socket with room takes the command at once. So the command is
    written straight to the transport, and only a write the socket did not take whole is
    waited for, under that timeout. A connection not yet open, or with a health check
    due (``health_check_interval``), goes through redis-py. Returns what the caller
    must await, or None when the command was written whole (no coroutine for that)."""
    writer = getattr(conn, "_writer", None)
    if writer is None or conn.health_check_interval:
        return conn.send_packed_command(packed)  # type: ignore[no-any-return]
    transport = writer.transport  # (a property: read once)
    if transport.is_closing():
        return conn.send_packed_command(packed)  # type: ignore[no-any-return]
    transport.write(packed)  # (what StreamWriter.write does, without its frame)
    if transport.get_write_buffer_size():
        return _drain(conn, writer)
    return None


async def _drain(conn: Any, writer: asyncio.StreamWriter) -> None:
    """The rest of a write the socket did not take whole, under ``socket_timeout``."""
    try:
        await asyncio.wait_for(writer.drain(), conn.socket_timeout)
    except TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout writing to socket") from None
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc


def arg(value: Any) -> bytes:
    """One script argument as bytes, as redis-py's encoder writes it (numbers by ``str``)."""
    kind = type(value)
    if kind is bytes:
        return value  # type: ignore[no-any-return]
    if kind is str:
        return value.encode()  # type: ignore[no-any-return]
    if kind is int or kind is float:
        return str(value).encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value).encode()
    raise TypeError(f"a script argument must be bytes, str or a number, not {value!r}")


#: A bulk string's length line (``$<n>\r\n``) by length, for the lengths most arguments
#: have: a look-up instead of formatting one per argument of every command.
_LENGTH_LINES = [b"$%d\r\n" % n for n in range(1024)]


def pack_script(script: AsyncScript, args: Sequence[Any]) -> bytes:
    """A whole EVALSHA of ``script`` with ``args``, for :meth:`SharedConnection.call_packed`."""
    lines = _LENGTH_LINES
    parts = [pack_evalsha(script, len(args))]
    for value in args:  # (the common kinds inline: this runs for every argument)
        kind = type(value)
        data = value if kind is bytes else value.encode() if kind is str else arg(value)
        n = len(data)
        parts += (lines[n] if n < 1024 else b"$%d\r\n" % n, data, b"\r\n")
    return b"".join(parts)


def resp(args: Iterable[bytes]) -> bytes:
    """Arguments as RESP bulk strings, end to end (a command is ``*<count>`` then these)."""
    lines = _LENGTH_LINES
    parts: list[bytes] = []
    for a in args:
        n = len(a)
        parts += (lines[n] if n < 1024 else b"$%d\r\n" % n, a, b"\r\n")
    return b"".join(parts)


def pack_evalsha(script: AsyncScript, count: int) -> bytes:
    """The start of an EVALSHA of ``script`` (no keys) with ``count`` arguments: what
    :meth:`SharedConnection.call_packed` sends, followed by :func:`resp` of them."""
    head = _HEADS.get(script.sha)
    if head is None:
        head = _HEADS[script.sha] = resp((b"EVALSHA", script.sha.encode(), b"0"))
    return b"*%d\r\n%b" % (count + 3, head)


_HEADS: dict[str, bytes] = {}  # EVALSHA <sha> 0, packed, by sha


async def _ignore(error: Exception) -> None:
    """Retry's failure hook: the connection was already dropped by ``_send``."""


_SHARED: dict[tuple[int, ConnectionSettings], SharedConnection] = {}


async def acquire(settings: ConnectionSettings) -> SharedConnection:
    """Take a reference on the shared connection for ``settings``, checking the server
    answers; raise :class:`RedisUnavailableError` naming the (masked) URL if not."""
    key = (id(asyncio.get_running_loop()), settings)
    shared = _SHARED.get(key)
    if shared is None:
        shared = _SHARED[key] = SharedConnection(settings)
    shared.refs += 1
    try:
        await shared.client.ping()
    except RedisUnavailableError:
        await release(shared)
        raise
    except (RedisError, OSError) as exc:
        await release(shared)
        raise unavailable(settings, exc) from exc
    return shared


async def release(shared: SharedConnection) -> None:
    """Drop a reference; the last one closes the pool and the pub/sub listener."""
    shared.refs -= 1
    if shared.refs > 0:
        return
    for key, value in list(_SHARED.items()):
        if value is shared:
            del _SHARED[key]
    shared.closed = True
    shared.deadlines.close()
    kept, shared._kept = shared._kept, None
    if kept is not None:
        await shared.pool.release(kept)
    await shared.notifier.close()
    await shared.client.aclose()
    await shared.pool.aclose()
