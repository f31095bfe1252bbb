"""What the three NATS stores share: settings from a URL, the connection, creating
streams and KV buckets (and refusing incompatible ones), batched requests on the
connection (:mod:`.batch`: among them the non-blocking pull) and a one-pass scan.

NATS has no server clock API, so these stores judge leases, ETAs and expiry by the
host clock (``BaseStore.now``); keep hosts NTP-synchronised.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from omniq.config import mask_url
from omniq.errors import BackendUnavailableError, ConfigError, OmniQError, SerializationError
from omniq.interfaces import BaseStore
from omniq.options import Option, OptionSchema, check_ports

from .batch import Inbox
from .names import check_prefix

__all__ = ["UNREACHABLE", "NatsSettings", "NatsStore", "NatsUnavailableError"]

SCHEMES = ("nats", "tls")
DEFAULT_SERVER = "127.0.0.1:4222"
#: Options every NATS store takes (:mod:`omniq.options`).
OPTIONS = OptionSchema(
    "nats",
    (
        Option(
            "prefix",
            "str",
            "omniq",
            "Names every stream and bucket of one deployment (`[A-Za-z0-9_-]`, at most "
            "32 characters).",
        ),
        Option(
            "replicas",
            "int",
            1,
            "JetStream replicas of each stream, bucket and consumer created.",
            minimum=1,
            maximum=5,
        ),
        Option(
            "user",
            "str",
            None,
            "User for user/password authentication (or in the URL).",
            optional=True,
        ),
        Option(
            "password",
            "str",
            None,
            "Password for user/password authentication (or in the URL).",
            optional=True,
            secret=True,
        ),
        Option(
            "token",
            "str",
            None,
            "Token authentication (or `nats://TOKEN@host`).",
            optional=True,
            secret=True,
        ),
        Option("creds", "str", None, "Path of a `.creds` file (JWT + NKey).", optional=True),
        Option(
            "connect_timeout",
            "duration",
            2.0,
            "How long one connection attempt may take.",
            minimum=0,
            above=True,
        ),
        Option(
            "outage_timeout",
            "duration",
            5.0,
            "Seconds a call keeps retrying a server it cannot reach before it raises "
            "`BackendUnavailableError`.",
            minimum=0,
            above=True,
        ),
    ),
)
_SECRET_OPTIONS = tuple(o.name for o in OPTIONS.options if o.secret)
_API_TIMEOUT = 5.0
#: What a call that cannot reach the server ends with (the client buffers while it
#: reconnects, so mostly a timeout).
UNREACHABLE = (
    TimeoutError,
    OSError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
)
T = TypeVar("T")
#: A scan pulls this many messages at a time, and lets the event loop run between every
#: _SCAN_SLICE of them: a worker's maintenance scan must not stall its tasks' round trips.
#: (25 was tried: a new worker's first latency samples after a 4,000-task run improved,
#: but after 30,000 the scan's 4x pulls ran on through the samples: p50 1.34 -> 1.93 ms,
#: compare.py -n 10000.)
_SCAN_BATCH = 100
_SCAN_SLICE = 25


#: Every subject these stores build is made of :func:`.names.token` parts (never a space,
#: a wildcard or an empty level), so the client's regex check of each subject and reply
#: of every publish is skipped where the client offers it: a bulk enqueue publishes three
#: messages per task. (The other subjects used are the server's own reply subjects, kept
#: in lease entries: whoever can rewrite those can publish anything anyway.)
_SKIP_VALIDATION: dict[str, Any] = (
    {"skip_subject_validation": True}
    if "skip_subject_validation" in inspect.signature(Client.connect).parameters
    else {}
)


class NatsUnavailableError(BackendUnavailableError):
    """The NATS server does not answer, or answers without JetStream."""


@dataclass(frozen=True)
class NatsSettings:
    """A parsed NATS reference. ``url`` is kept for messages only (always masked)."""

    url: str
    servers: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.options[name]

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def __repr__(self) -> str:
        shown = {k: ("***" if k in _SECRET_OPTIONS and v else v) for k, v in self.options.items()}
        return f"NatsSettings(url={self.masked!r}, options={shown!r})"


def parse_settings(url: str, options: Mapping[str, Any], store: Any = None) -> NatsSettings:
    """Settings from ``nats://[user:pass@]host[:port][,host2...][?option=value...]`` and
    keyword options (keywords win over query parameters), by ``store``'s option table."""
    if not isinstance(url, str):
        raise ConfigError(f"NATS URL must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"invalid NATS URL {mask_url(url)!r}: scheme must be one of {', '.join(SCHEMES)}"
        )
    schema = store.option_schema if store is not None else OPTIONS
    values = schema.parse(url, options, store).values
    check_ports(url, schema.label(store), parts.scheme)
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"invalid NATS URL {mask_url(url)!r}: no path is used; set the stream prefix with "
            f"?prefix=NAME or the prefix option"
        )
    check_prefix(values["prefix"])
    netloc = parts.netloc or DEFAULT_SERVER
    userinfo, _, hosts = netloc.rpartition("@")
    auth = f"{userinfo}@" if userinfo else ""
    servers = tuple(f"{parts.scheme}://{auth}{host or DEFAULT_SERVER}" for host in hosts.split(","))
    return NatsSettings(url=url, servers=servers, options=values)


async def confirm(nc: Client, msg_reply: str, verb: bytes) -> None:
    """Ack, nak or in-progress a JetStream message by its reply subject, waiting for the
    server's confirmation so the next pull already sees the change. Works from any
    connection: the lease index stores the reply subject of each held message."""
    try:
        await nc.request(msg_reply, verb, timeout=_API_TIMEOUT)
    except nats.errors.TimeoutError:
        # The consumer or message is gone; JetStream redelivers after AckWait if not.
        pass


def nak_delay(seconds: float) -> bytes:
    if seconds <= 0:
        return b"-NAK"
    return b'-NAK {"delay": %d}' % int(seconds * 1e9)


class NatsStore(BaseStore):
    """Base of the three NATS stores: construction, connection, stream set-up."""

    local_only: ClassVar[bool] = False
    #: :data:`OPTIONS`, extended by each store kind with its own.
    option_schema: ClassVar[OptionSchema] = OPTIONS

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self.prefix: str = settings["prefix"]
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._inbox: Inbox | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        return cls(parse_settings(url, options, cls))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings.masked!r}, prefix={self.prefix!r})"

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise OmniQError(f"{self!r} is not open: use 'async with' or await open() first")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise OmniQError(f"{self!r} is not open: use 'async with' or await open() first")
        return self._js

    def shares_server(self, other: NatsStore) -> bool:
        """Whether ``other`` reaches the same servers as the same user, so that this
        store's connection can carry its writes."""
        names = ("user", "password", "token", "creds")
        return self.settings.servers == other.settings.servers and all(
            self.settings[n] == other.settings[n] for n in names
        )

    def too_large(self, what: str, size: int) -> SerializationError:
        """The error for a message over the server's ``max_payload`` (the client's own is
        a bare "nats: maximum payload exceeded")."""
        return SerializationError(
            f"{what} is {size} bytes, over the max_payload of {self.nc.max_payload} bytes of "
            f"the NATS server at {self.settings.masked}; raise max_payload in the server's "
            f"configuration (e.g. 'max_payload: 8MB' in nats-server.conf), or keep OmniQ's "
            f"payload_limit well below it and pass a reference (a path, an id) instead of the data"
        )

    @property
    def inbox(self) -> Inbox:
        """Batched requests on this store's connection (see :mod:`.batch`)."""
        if self._inbox is None:
            self._inbox = Inbox(self.nc, self.settings["outage_timeout"])
        return self._inbox

    async def open(self) -> None:
        if self._nc is not None:
            return
        s = self.settings
        try:
            nc = await nats.connect(
                servers=list(s.servers),
                name=f"omniq-{self.prefix}",
                connect_timeout=s["connect_timeout"],
                allow_reconnect=True,
                max_reconnect_attempts=1,  # the first connect fails fast...
                reconnect_time_wait=0.5,
                user=s["user"],
                password=s["password"],
                token=s["token"],
                user_credentials=s["creds"],
                error_cb=_ignore,
                disconnected_cb=_ignore_event,
                reconnected_cb=_ignore_event,
                closed_cb=_ignore_event,
                **_SKIP_VALIDATION,
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            raise NatsUnavailableError(
                f"cannot connect to NATS at {s.masked}: "
                f"{type(exc).__name__}: {mask_url(str(exc))}. "
                f"Is nats-server running (with -js) and are the credentials right?"
            ) from None
        # ...but once connected, ride out server restarts however long they take.
        nc.options["max_reconnect_attempts"] = -1
        js = nc.jetstream(timeout=s["outage_timeout"])
        try:
            await js.account_info()
        except (
            nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError,
            nats.errors.TimeoutError,
        ) as exc:
            await nc.close()
            raise NatsUnavailableError(
                f"JetStream is not enabled on the NATS server at {s.masked} "
                f"({type(exc).__name__}); start nats-server with -js or enable 'jetstream' in "
                f"its configuration"
            ) from None
        self._nc, self._js = nc, js
        try:
            await self._setup()
        except BaseException:
            await self.close()
            raise

    async def _setup(self) -> None:
        """Create the streams and buckets this store needs (idempotent)."""

    async def reaching(self, call: Awaitable[T]) -> T:
        """``await call``, raising :class:`NatsUnavailableError` naming the (masked) URL
        when the server does not answer: the client keeps reconnecting in the
        background, and a call made meanwhile waits for its reply at most
        ``outage_timeout`` seconds (the JetStream API timeout)."""
        try:
            return await call
        except BackendUnavailableError:
            raise
        except UNREACHABLE as exc:
            raise self.unreachable(exc) from exc

    def unreachable(self, exc: BaseException) -> NatsUnavailableError:
        """What :meth:`reaching` raises for ``exc``, one of :data:`UNREACHABLE` (for a
        hot path that catches them itself, without the extra coroutine)."""
        state = "connected" if self._nc is not None and self._nc.is_connected else "disconnected"
        return NatsUnavailableError(
            f"NATS at {self.settings.masked} did not answer within outage_timeout="
            f"{self.settings['outage_timeout']:g} s ({state}): {type(exc).__name__}: "
            f"{mask_url(str(exc))}. Check that nats-server runs (with -js)."
        )

    async def close(self) -> None:
        nc, self._nc, self._js, self._inbox = self._nc, None, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    # -- streams and buckets -------------------------------------------------------------

    async def ensure_stream(self, config: api.StreamConfig) -> None:
        """Create ``config.name`` or check that the existing stream is usable; never
        change or delete an existing stream."""
        assert config.name is not None
        try:
            info = await self.js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(config)
                return
            except nats.js.errors.BadRequestError:
                info = await self.js.stream_info(config.name)  # created meanwhile
        have = info.config
        problems = []
        if have.retention != config.retention:
            problems.append(
                f"retention {_value(have.retention)} (needs {_value(config.retention)})"
            )
        missing = set(config.subjects or ()) - set(have.subjects or ())
        if missing:
            problems.append(f"subjects {have.subjects} (needs {sorted(missing)})")
        if config.max_msgs_per_subject and have.max_msgs_per_subject != config.max_msgs_per_subject:
            problems.append(
                f"max_msgs_per_subject {have.max_msgs_per_subject} "
                f"(needs {config.max_msgs_per_subject})"
            )
        if problems:
            raise ConfigError(
                f"NATS stream {config.name!r} at {self.settings.masked} exists with incompatible "
                f"settings: {'; '.join(problems)}. Nothing was changed: remove it yourself "
                f"(nats stream rm {config.name}) or use another prefix"
            )

    async def ensure_bucket(self, bucket: str, ttl: float | None = None) -> KeyValue:
        """Open KV bucket ``bucket`` (history 1), creating it when missing."""
        await self.ensure_stream(
            api.StreamConfig(
                name=f"KV_{bucket}",
                subjects=[f"$KV.{bucket}.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_msgs_per_subject=1,
                max_age=ttl,
                num_replicas=self.settings["replicas"],
                storage=api.StorageType.FILE,
                allow_rollup_hdrs=True,
                allow_direct=True,
                deny_delete=True,
                discard=api.DiscardPolicy.NEW,
                duplicate_window=min(ttl, 120.0) if ttl else 120.0,
            )
        )
        return await self.js.key_value(bucket)

    async def remove_key(self, bucket: str, key: str, revision: int | None = None) -> bool:
        """Remove a KV key without leaving a delete marker (a marker per finished task
        would grow the bucket forever): purge the key's subject in the bucket's stream.
        With ``revision``, only messages up to it go, so a newer write survives — a
        compare-and-delete. True when something was removed."""
        request: dict[str, Any] = {"filter": f"$KV.{bucket}.{key}"}
        if revision is not None:
            request["seq"] = revision + 1
        reply = await self.nc.request(
            f"$JS.API.STREAM.PURGE.KV_{bucket}", json.dumps(request).encode(), timeout=_API_TIMEOUT
        )
        answer = json.loads(reply.data)
        if "error" in answer:
            raise nats.js.errors.APIError.from_error(answer["error"])
        return bool(answer.get("purged"))

    # -- reading -------------------------------------------------------------------------

    async def scan(
        self,
        stream: str,
        subject: str,
        *,
        last_per_subject: bool = False,
        start_time: float | None = None,
    ) -> AsyncIterator[Msg]:
        """Every message of ``stream`` matching ``subject`` (the latest per subject with
        ``last_per_subject``), read in batches through a short-lived ephemeral consumer."""
        start: datetime | None = None
        if last_per_subject:
            policy = api.DeliverPolicy.LAST_PER_SUBJECT
        elif start_time is not None:
            policy = api.DeliverPolicy.BY_START_TIME
            start = datetime.fromtimestamp(max(start_time, 0.0), tz=UTC)
        else:
            policy = api.DeliverPolicy.ALL
        config = api.ConsumerConfig(
            filter_subject=subject,
            deliver_policy=policy,
            opt_start_time=start,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
            num_replicas=1,
        )
        info = await self.js.add_consumer(stream, config)
        try:
            while True:
                batch = await self.inbox.pull(stream, info.name, _SCAN_BATCH)
                for n, msg in enumerate(batch, 1):
                    yield msg
                    if n % _SCAN_SLICE == 0:
                        await asyncio.sleep(0)
                if len(batch) < _SCAN_BATCH or batch[-1].metadata.num_pending == 0:
                    return
        finally:
            try:
                await self.js.delete_consumer(stream, info.name)
            except (nats.errors.Error, TimeoutError):
                pass  # it expires by itself after inactive_threshold

    async def scan_bucket(self, bucket: str) -> AsyncIterator[tuple[str, bytes, int]]:
        """``(key, value, revision)`` of every live key of a KV bucket."""
        async for msg in self.scan(f"KV_{bucket}", f"$KV.{bucket}.>", last_per_subject=True):
            if msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE):
                continue
            yield msg.subject[len(bucket) + 5 :], msg.data, stream_sequence(msg)


#: Fields of a delivered message's ack subject, by their place in its short form,
#: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>``; the long
#: form has the domain and account hash before the stream (two places later).
ACK_DELIVERED, ACK_STREAM_SEQ, ACK_PENDING = 4, 5, 8


def ack_field(msg: Msg, field: int) -> int | None:
    """A number of ``msg``'s ack subject (:data:`ACK_DELIVERED` and the others), read
    straight from it (``Msg.metadata`` parses every field into dataclasses: most of a
    scan's time); None when the subject has neither form."""
    parts = (msg.reply or "").split(".")
    if len(parts) == 9:
        return int(parts[field])
    if len(parts) >= 11:
        return int(parts[field + 2])
    return None


def stream_sequence(msg: Msg) -> int:
    """The stream sequence of a delivered message."""
    seq = ack_field(msg, ACK_STREAM_SEQ)
    return msg.metadata.sequence.stream if seq is None else seq


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


async def _ignore(exc: Exception) -> None:
    """Connection errors surface as failed calls; the client reconnects by itself."""


async def _ignore_event() -> None:
    pass
