"""What the three Redis stores share: settings, the shared connection, key checks."""

from __future__ import annotations

from typing import Any, ClassVar, Self, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from omniq.config import mask_url
from omniq.interfaces import BaseStore
from omniq.options import OptionSchema

from .connection import SharedConnection, acquire, release
from .errors import ForeignKeyError, foreign_from_reply
from .settings import OPTIONS, ConnectionSettings, parse


class RedisStore(BaseStore):
    """Base of the Redis stores. Subclasses extend :data:`.settings.OPTIONS` with their
    own options in ``option_schema``."""

    option_schema: ClassVar[OptionSchema] = OPTIONS
    #: Keys (after the prefix) this store owns, with the Redis type each must have.
    GLOBAL_KEYS: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: ConnectionSettings, prefix: str, **options: Any) -> None:
        self.settings = settings
        self.prefix = prefix
        self.options = options
        self._shared: SharedConnection | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        settings, prefix, extra = parse(url, options, cls)
        return cls(settings, prefix, **extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({mask_url(self.settings.url)!r}, key_prefix={self.prefix!r})"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def shared(self) -> SharedConnection:
        if self._shared is None:
            raise RuntimeError(
                f"{self!r} is not open: call 'await store.open()' or use 'async with'"
            )
        return self._shared

    @property
    def redis(self) -> Redis:
        return self.shared.client

    async def open(self) -> None:
        if self._shared is not None:
            return
        shared = await acquire(self.settings)
        try:
            await self.check_types(
                {self.key(k): t for k, t in self.GLOBAL_KEYS.items()}, shared.client
            )
        except BaseException:
            await release(shared)
            raise
        self._shared = shared

    async def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            await release(shared)

    async def check_types(self, keys: dict[str, str], client: Redis | None = None) -> None:
        """Raise :class:`ForeignKeyError` for a key that exists with another type."""
        if not keys:
            return
        client = client or self.redis
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            found = await pipe.execute()
        for (key, want), have in zip(keys.items(), found, strict=True):
            have = have.decode()
            if have not in ("none", want):
                raise ForeignKeyError(key, f"holds a {have} where OmniQ keeps a {want}")

    async def foreign(self, key: str, exc: ResponseError) -> ForeignKeyError | None:
        """The ForeignKeyError behind a Redis error on ``key`` (WRONGTYPE), if it is one."""
        if "WRONGTYPE" not in str(exc):
            return foreign_from_reply(str(exc))
        have = cast(bytes, await self.redis.type(key)).decode()
        return ForeignKeyError(key, f"holds a {have}")

    async def now(self) -> float:
        seconds, micros = await self.redis.time()
        return seconds + micros / 1_000_000
