"""Errors this backend raises (subclasses of the core categories)."""

from __future__ import annotations

import re

from omniq.errors import BackendUnavailableError, QueueError

_FOREIGN = re.compile(r"OMNIQ_FOREIGN (\S+) (.*?)(?: script: |$)")


class RedisUnavailableError(BackendUnavailableError, QueueError):
    """Redis did not answer when a store opened (the URL is named with its password masked)."""


class ForeignKeyError(QueueError):
    """A key under the OmniQ prefix holds a value OmniQ did not write; nothing was changed."""

    def __init__(self, key: str, found: str) -> None:
        self.key = key
        super().__init__(
            f"Redis key {key!r} {found}, not a value OmniQ wrote; nothing was changed. "
            f"Delete the key or configure another key_prefix."
        )


def foreign_from_reply(message: str) -> ForeignKeyError | None:
    """The ForeignKeyError a script reported with ``OMNIQ_FOREIGN <key> <what>``, if any."""
    m = _FOREIGN.search(message)
    return ForeignKeyError(m.group(1), m.group(2)) if m else None
