"""Queue names and task ids as single path segments that cannot leave the base directory.

Every character outside ``[A-Za-z0-9_-]`` is percent-encoded (so ``.``, ``..``, ``/``,
``\\``, NUL and glob characters never reach a path), and a name whose encoding would be too
long for a file name is replaced by its SHA-256. The app validates names already; this is
the second wall, for stores used directly.
"""

from __future__ import annotations

import hashlib
import re

from omniq.errors import ConfigError

__all__ = ["encode"]

_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
#: File systems allow 255 bytes per name; entries add up to 40 characters of sort key.
MAX_SEGMENT = 200


def _escape(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", "surrogatepass"))


def encode(kind: str, name: str) -> str:
    """``name`` as one safe, collision-free path segment (raises ConfigError if not a str)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"invalid {kind} {name!r}: expected a non-empty string")
    if _SAFE.fullmatch(name) and len(name) <= MAX_SEGMENT:
        return name
    out = _UNSAFE.sub(_escape, name)
    if len(out) > MAX_SEGMENT:
        return "%h" + hashlib.sha256(name.encode()).hexdigest()
    return out
