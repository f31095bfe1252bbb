"""Names inside NATS: one token encoding for keys, subjects and consumer names.

Task ids, queue names and schedule ids are validated by the app, but they may hold
``.`` (a subject separator), ``:`` (not allowed in KV keys) and, for schedule firings,
``@``. Every such value goes through :func:`token` before it is put in a subject, a KV
key or a consumer name, so a name can never add a subject level or a wildcard.
"""

from __future__ import annotations

import hashlib
import re

from omniq.errors import ConfigError

_SAFE = re.compile(r"[A-Za-z0-9-]")
_ALL_SAFE = re.compile(r"[A-Za-z0-9-]*")
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
#: Consumer names become directory names in the server's file store: keep them short.
_MAX_CONSUMER_NAME = 120


def token(value: str) -> str:
    """Encode ``value`` as one subject token / KV key: ``[A-Za-z0-9-]`` are kept and
    every other UTF-8 byte becomes ``_xx`` (hex), so the encoding is reversible and
    never contains ``.``, ``*``, ``>`` or whitespace."""
    if _ALL_SAFE.fullmatch(value):
        return value
    return "".join(
        ch if _SAFE.match(ch) else "".join(f"_{b:02x}" for b in ch.encode()) for ch in value
    )


def untoken(value: str) -> str:
    """Reverse :func:`token`."""
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "_":
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out += value[i].encode()
            i += 1
    return out.decode()


def consumer_name(queue: str, band: int) -> str:
    """The durable pull consumer for one queue's priority band (readable when short)."""
    name = f"q{band}_{token(queue)}"
    if len(name) > _MAX_CONSUMER_NAME:
        name = f"q{band}_h{hashlib.sha256(queue.encode()).hexdigest()[:32]}"
    return name


def check_prefix(prefix: object) -> str:
    """Stream and bucket names are built from the prefix: allow only what both accept."""
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ConfigError(
            f"invalid NATS prefix {prefix!r}: use 1-32 characters from letters, digits, '_' and "
            f"'-', starting with a letter or digit (it names streams and KV buckets)"
        )
    return prefix
