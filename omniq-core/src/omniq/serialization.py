"""Encoding of calls and values, signing, and the rule about when dill may be decoded.

Plain data (None, bool, int, float, str, bytes, aware datetimes, lists, tuples, dicts of
those) travels as msgspec msgpack: fast, and safe to decode from anyone. Anything else
(lambdas, closures, class instances, naive datetimes) travels as dill, which executes
code when decoded; so dill is only decoded when the payload is signed with a configured
key, or comes from a store that never leaves this machine (memory, local files, SQLite),
or the user explicitly allowed unsigned dill (docs/architecture.md, "Serialization and
trust").

Envelope layout::

    b"OQ" | flags (1 byte: 1 = dill, 2 = signed, 4 = bound to a task)
          | [signed: key-id length (1 byte) | key id | HMAC-SHA256 (32 bytes)]
          | body

The HMAC covers flags, key id and body, and is checked before anything is decoded. A
task's call is signed *bound* to its task: the HMAC also covers the task's name, queue
and id (see :func:`binding`), so a signed call copied into a record naming another task
(another function, another queue, another id) is refused. Values (results) are not bound.
The size limit is checked on decode too: a record written into the store behind the
app's back is not trusted to respect it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from itertools import repeat
from typing import Any

import msgspec

from .errors import SerializationError, SignatureError

__all__ = ["Serializer", "binding", "unsigned"]

MAGIC = b"OQ"
FLAG_DILL = 1
FLAG_SIGNED = 2
FLAG_BOUND = 4
#: An unsigned envelope's head (magic and flags byte) by flags, made once.
_UNSIGNED_HEADS = [MAGIC + bytes([flags]) for flags in range(FLAG_SIGNED)]
MAC_SIZE = 32

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
_ATOMS = frozenset({str, float, bool, bytes, type(None)})  # plain whatever their value
_INT_RANGE = range(-(2**63), 2**64)  # what msgpack carries


def _is_plain(obj: Any, depth: int = 0) -> bool:
    """True when msgpack round-trips ``obj`` without losing its meaning (tuples come
    back as lists, as in every JSON-style queue). Exact types only: a subclass (an
    IntEnum, a str subclass) would come back as its base. Called once per enqueued task,
    so the common cases are tested first, without a call each."""
    kind = type(obj)
    if kind in _ATOMS:
        return True
    if kind is int:
        return obj in _INT_RANGE
    if depth > 64:
        return False
    if kind is list or kind is tuple:
        # A plain loop: all() would add a generator per list on this hot path.
        for x in obj:  # noqa: SIM110
            if type(x) not in _ATOMS and not _is_plain(x, depth + 1):
                return False
        return True
    if kind is dict:
        for k, v in obj.items():
            if (type(k) is not str and (type(k) is not int or k not in _INT_RANGE)) or (
                type(v) not in _ATOMS and not _is_plain(v, depth + 1)
            ):
                return False
        return True
    if kind is datetime:
        return obj.tzinfo is not None
    return False


def unsigned(data: bytes) -> bytes:
    """The envelope as an app without keys writes it: the same call, its signature (and
    key id) left out. A schedule's default id is derived from it, so configuring or
    rotating ``secret_key`` does not change the id."""
    if len(data) < 4 or data[:2] != MAGIC or not data[2] & FLAG_SIGNED:
        return data
    body = data[4 + data[3] + MAC_SIZE :]
    return MAGIC + bytes([data[2] & ~(FLAG_SIGNED | FLAG_BOUND)]) + body


def binding(name: str, queue: str, task_id: str) -> bytes:
    """What a task's signature binds its call to (length-prefixed, so no two tasks share
    one)."""
    parts = [p.encode() for p in (name, queue, task_id)]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _type_name(obj: Any) -> str:
    kind = type(obj)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _needs_dill(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The first argument msgpack cannot carry, named for an error message."""
    for i, arg in enumerate(args, 1):
        if not _is_plain(arg):
            return f"argument {i}: {_type_name(arg)}"
    for key, value in kwargs.items():
        if not _is_plain(value):
            return f"keyword {key!r}: {_type_name(value)}"
    return f"the arguments: {_type_name(args)}"


class Serializer:
    """Encodes calls and values; signs and verifies when keys are configured.

    :param keys: key id -> secret. With keys, every payload is signed with
        ``signing_key`` and unsigned or badly signed payloads are refused.
    :param allow_unsigned_dill: accept unsigned dill from network stores (unsafe unless
        every peer that can write to the store is trusted).
    :param payload_limit: largest envelope in bytes.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes] | None = None,
        signing_key: str | None = None,
        *,
        allow_unsigned_dill: bool = False,
        payload_limit: int = 1 << 20,
    ) -> None:
        self.keys = dict(keys or {})
        if self.keys and signing_key is None:
            signing_key = next(iter(self.keys))
        if signing_key is not None and signing_key not in self.keys:
            raise SerializationError(
                f"signing key id {signing_key!r} is not among the configured keys "
                f"{sorted(self.keys)}"
            )
        for kid in self.keys:
            if not 0 < len(kid.encode()) < 256:
                raise SerializationError(f"key id {kid!r} must be 1-255 bytes")
        self.signing_key = signing_key
        self.allow_unsigned_dill = allow_unsigned_dill
        self.payload_limit = payload_limit

    # -- envelopes ---------------------------------------------------------------------

    def _wrap(self, flags: int, body: bytes, bind: bytes | None = None) -> bytes:
        if self.signing_key is None:
            data = _UNSIGNED_HEADS[flags] + body
        else:
            flags |= FLAG_SIGNED if bind is None else FLAG_SIGNED | FLAG_BOUND
            kid = self.signing_key.encode()
            head = MAGIC + bytes([flags, len(kid)]) + kid
            signed = head + body if bind is None else head + bind + body
            mac = hmac.new(self.keys[self.signing_key], signed, hashlib.sha256).digest()
            data = head + mac + body
        if len(data) > self.payload_limit:
            raise SerializationError(
                f"payload of {len(data)} bytes exceeds the limit of {self.payload_limit} bytes "
                f"(config key payload_limit); pass a reference (a path, an id) instead of the data"
            )
        return data

    def _unwrap(
        self, data: bytes, *, local_only: bool, origin: str, bind: bytes | None = None
    ) -> tuple[int, bytes]:
        if len(data) < 3 or data[:2] != MAGIC:
            raise SerializationError(f"payload from {origin} is not an OmniQ envelope")
        if len(data) > self.payload_limit:
            raise SerializationError(
                f"payload from {origin} is {len(data)} bytes, over the limit of "
                f"{self.payload_limit} bytes (config key payload_limit); refused unread"
            )
        flags = data[2]
        if flags & FLAG_SIGNED:
            kid_len = data[3]
            kid = data[4 : 4 + kid_len].decode(errors="replace")
            mac = data[4 + kid_len : 4 + kid_len + MAC_SIZE]
            body = data[4 + kid_len + MAC_SIZE :]
            key = self.keys.get(kid)
            if key is None:
                raise SignatureError(
                    f"payload from {origin} is signed with key id {kid!r}, which is not "
                    f"configured (configured: {sorted(self.keys) or 'none'}); add it to secret_keys"
                )
            head = data[: 4 + kid_len]
            if (bind is None) == bool(flags & FLAG_BOUND):
                raise SignatureError(
                    f"payload from {origin} is signed "
                    + (
                        "without the task it belongs to (a value, or signed before calls were "
                        "bound to their task); refused"
                        if bind is not None
                        else "for a task, where a value was expected; refused"
                    )
                )
            signed = head + body if bind is None else head + bind + body
            expected = hmac.new(key, signed, hashlib.sha256).digest()
            if not hmac.compare_digest(mac, expected):
                raise SignatureError(
                    f"payload from {origin} has a bad signature (key id {kid!r})"
                    + ("" if bind is None else ", or was signed for another task name, queue or id")
                    + "; refused"
                )
            return flags, body
        if self.keys:
            raise SignatureError(
                f"unsigned payload from {origin} refused: secret keys are configured, so every "
                f"payload must be signed"
            )
        if flags & FLAG_DILL and not (local_only or self.allow_unsigned_dill):
            raise SerializationError(
                f"refusing to decode an unsigned dill payload from {origin}: dill runs code "
                f"when decoded. Configure secret_key (OMNIQ_SECRET_KEY) on producers and "
                f"workers, or set allow_unsigned_dill if every writer to this store is trusted"
            )
        return flags, data[3:]

    def rebind(self, data: bytes, old: bytes, new: bytes, origin: str = "the store") -> bytes:
        """The envelope re-signed for another task (a schedule's template for a firing):
        checked against ``old`` first, so only what was signed for ``old`` moves."""
        if self.signing_key is None or len(data) < 3 or not data[2] & FLAG_SIGNED:
            return data
        flags, body = self._unwrap(data, local_only=True, origin=origin, bind=old)
        return self._wrap(flags & FLAG_DILL, body, new)

    def dill_allowed(self, local_only: bool) -> bool:
        return bool(self.signing_key) or local_only or self.allow_unsigned_dill

    def dumps(
        self, obj: Any, *, local_only: bool = True, what: str = "value", bind: bytes | None = None
    ) -> bytes:
        if _is_plain(obj):
            return self._wrap(0, _encode(obj), bind)
        if not self.dill_allowed(local_only):
            raise SerializationError(
                f"{what} of type {_type_name(obj)} needs dill, and unsigned dill is refused "
                f"on a store that leaves this machine. Pass plain data (str, int, float, bool, "
                f"bytes, list, dict, aware datetime), or configure secret_key"
            )
        return self._dill(obj, what, bind)

    def _dill(self, obj: Any, what: str, bind: bytes | None) -> bytes:
        import dill

        try:
            body = dill.dumps(obj, recurse=True)
        except Exception as exc:
            raise SerializationError(
                f"{what} cannot be serialized: {type(exc).__name__}: {exc}. msgpack carries plain "
                f"data; dill could not carry {type(obj).__name__} either"
            ) from exc
        return self._wrap(FLAG_DILL, body, bind)

    def loads(
        self, data: bytes, *, local_only: bool, origin: str = "the store", bind: bytes | None = None
    ) -> Any:
        """Verify and decode; ``bind`` (see :func:`binding`) for a task's call."""
        flags, body = self._unwrap(data, local_only=local_only, origin=origin, bind=bind)
        try:
            if flags & FLAG_DILL:
                import dill

                return dill.loads(body)
            return _decode(body)
        except Exception as exc:
            raise SerializationError(f"payload from {origin} cannot be decoded: {exc}") from exc

    # -- calls -------------------------------------------------------------------------

    def dumps_call(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        func: Callable[..., Any] | None = None,
        *,
        local_only: bool = True,
        bind: bytes | None = None,
    ) -> bytes:
        """The call's envelope; ``bind`` (see :func:`binding`) ties a signature to its task."""
        # msgpack writes a tuple as the list it reads back: the call's own tuple and dict
        # are checked and encoded without copies (~500 instructions a task); dill keeps
        # a tuple a tuple, so its call gets a list.
        if type(args) is not tuple or type(kwargs) is not dict:
            args, kwargs = tuple(args), dict(kwargs)
        if func is None:
            # _is_plain(call), without a call for each empty part (a no-argument delay())
            if (not args or _is_plain(args, 1)) and (not kwargs or _is_plain(kwargs, 1)):
                body = _encode((args, kwargs))
                if self.signing_key is None:  # (_wrap's unsigned envelope, written out)
                    data = _UNSIGNED_HEADS[0] + body
                    if len(data) <= self.payload_limit:
                        return data
                return self._wrap(0, body, bind)  # (signed, or too big: _wrap raises)
            if not self.dill_allowed(local_only):
                raise SerializationError(
                    f"task {_needs_dill(args, kwargs)} needs dill, and unsigned dill is refused "
                    f"on a store that leaves this machine. Pass plain data (str, int, float, "
                    f"bool, bytes, aware datetime, and lists and dicts of those), or configure "
                    f"secret_key"
                )
            return self._dill([list(args), kwargs], "task arguments", bind)
        if not self.dill_allowed(local_only):
            name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
            raise SerializationError(
                f"task function {name} is not registered, so it would travel by dill, and "
                f"unsigned dill is refused on a store that leaves this machine. Register it "
                f"with @app.task (and import it in the worker), or configure secret_key"
            )
        return self._dill([list(args), kwargs, func], "task function", bind)

    def dumps_calls(
        self,
        calls: Sequence[Sequence[Any] | Mapping[str, Any]],
        func: Callable[..., Any] | None = None,
        *,
        local_only: bool = True,
        binds: Sequence[bytes] | None = None,
    ) -> list[bytes]:
        """:meth:`dumps_call` of each call (a tuple of args, or a dict of kwargs), each
        bound to its item of ``binds``: an enqueue_many's batch. An unsigned call of plain
        data is written out here (what :meth:`dumps_call` and :meth:`_wrap` do for it:
        two Python frames and a keyword call less a task, ~1,400 instructions of a bulk
        task's ~27,000); the rest go through :meth:`dumps_call`."""
        if binds is not None and len(binds) != len(calls):  # (zip below would drop calls)
            raise ValueError(f"dumps_calls: {len(binds)} binds for {len(calls)} calls")
        dumps_call = self.dumps_call
        fast = func is None and self.signing_key is None
        head, limit = _UNSIGNED_HEADS[0], self.payload_limit
        out = []
        args: Sequence[Any]
        kwargs: Mapping[str, Any]
        binding_of = repeat(None) if binds is None else binds  # (one a call, or none)
        for call, bind in zip(calls, binding_of, strict=False):
            if type(call) is tuple:  # no ABC check
                args, kwargs = call, {}
            elif isinstance(call, Mapping):
                args, kwargs = (), call
            else:
                args, kwargs = tuple(call), {}
            if (
                fast
                and type(kwargs) is dict
                and (not args or _is_plain(args, 1))
                and (not kwargs or _is_plain(kwargs, 1))
            ):
                data = head + _encode((args, kwargs))
                if len(data) <= limit:  # (over it, dumps_call refuses it)
                    out.append(data)
                    continue
            out.append(dumps_call(args, kwargs, func, local_only=local_only, bind=bind))
        return out

    def loads_call(
        self, data: bytes, *, local_only: bool, origin: str = "the store", bind: bytes | None = None
    ) -> tuple[list[Any], dict[str, Any], Callable[..., Any] | None]:
        """Verify and decode a call; ``bind`` is the task's (see :func:`binding`) when the
        payload is to run as that task."""
        call = self.loads(data, local_only=local_only, origin=origin, bind=bind)
        if not isinstance(call, list) or len(call) not in (2, 3):
            raise SerializationError(f"payload from {origin} is not a task call")
        args, kwargs = call[0], call[1]
        func = call[2] if len(call) == 3 else None
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise SerializationError(f"payload from {origin} is not a task call")
        return args, kwargs, func
