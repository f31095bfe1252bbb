"""One connection pool per process and server, shared by the stores that point at it.

A task queue, a result storage and an event storage configured with the same URL and
connection options share one pool (and one pub/sub connection for wake-ups) instead of
opening three. The cache is keyed by event loop too, since asyncio connections belong
to the loop that made them; entries are reference-counted by ``open``/``close``.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from omniq.config import mask_url
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import RedisUnavailableError
from .notify import Notifier
from .settings import ConnectionSettings

_PRELUDE = resources.files(__package__).joinpath("lua", "prelude.lua").read_text()


class SharedConnection:
    """A client on the shared pool, its pub/sub notifier and the loaded scripts."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.retry = retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), settings.retries)
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
        self._scripts: dict[str, AsyncScript] = {}

    def script(self, name: str, prelude: bool = True) -> AsyncScript:
        """The Lua script ``lua/<name>.lua`` (after the task-queue prelude unless told
        otherwise), run by EVALSHA: redis-py loads it once, and again after a restart."""
        found = self._scripts.get(name)
        if found is None:
            body = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()
            text = _PRELUDE + body if prelude else body
            found = self._scripts[name] = self.client.register_script(text)
        return found

    async def pipelined(self, calls: list[tuple[str, bool, list[Any]]]) -> list[Any]:
        """Run scripts ``(name, with prelude, args)`` back to back on one connection: one
        round trip. Each reply is the script's answer or its ResponseError. (redis-py's
        Pipeline costs more client time than the round trip it saves, for two commands.)
        A dropped connection is retried like any command; a server that lost its scripts
        (a restart) gets them again and the whole call once more: a NOSCRIPT reply means
        that script did not run."""
        scripts = [(self.script(name, prelude), args) for name, prelude, args in calls]
        for attempt in range(2):
            replies = await self.retry.call_with_retry(lambda: self._send(scripts), _ignore)
            if attempt or not any(isinstance(r, NoScriptError) for r in replies):
                return replies
            for script, _ in scripts:
                await self.client.script_load(script.script)
        raise AssertionError("unreachable")

    async def _send(self, scripts: list[tuple[AsyncScript, list[Any]]]) -> list[Any]:
        conn = await self.pool.get_connection()
        try:
            await conn.send_packed_command(
                conn.pack_commands([("EVALSHA", s.sha, 0, *args) for s, args in scripts]))
            replies: list[Any] = []
            for _ in scripts:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await self.pool.release(conn)


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
    except (RedisError, OSError) as exc:
        await release(shared)
        raise RedisUnavailableError(
            f"Redis at {mask_url(settings.url)} did not answer: {mask_url(str(exc))}. "
            f"Check that the server runs and the URL is right."
        ) from exc
    return shared


async def release(shared: SharedConnection) -> None:
    """Drop a reference; the last one closes the pool and the pub/sub listener."""
    shared.refs -= 1
    if shared.refs > 0:
        return
    for key, value in list(_SHARED.items()):
        if value is shared:
            del _SHARED[key]
    await shared.notifier.close()
    await shared.client.aclose()
    await shared.pool.aclose()
