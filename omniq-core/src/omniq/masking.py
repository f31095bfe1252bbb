"""Masking secrets in URLs and in messages that quote them: every printed URL goes
through :func:`mask_url` (re-exported by :mod:`omniq.config`, its 0.1 home)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar, overload

__all__ = ["describe_ref", "mask_url"]

_T = TypeVar("_T")

# A URL anywhere in a text, any scheme, even a malformed one: a URL is masked before
# anyone judges it. Its credentials end at the last "@" before the query (a password
# may hold "@" or "/"); a cluster URL ("nats://u:p1@h1,nats://u:p2@h2") is several URLs.
_SCHEME = re.compile(r"[^\s:/?#'\"(\[=,]*://")
_QUERY_SECRET = re.compile(
    r"(?i)(?P<head>[?&;][\w.\-]*(?:password|passwd|pwd|token|secret|key|creds?)=)"
    r"(?P<pw>[^&#\s'\"]*)"
)


def _mask_userinfo(segment: str) -> str:
    """``user:pw@host...`` -> ``user:***@host...``; ``TOKEN@host`` -> ``***@host``."""
    end = len(segment)
    for stop in "?#":
        if stop in segment:
            end = min(end, segment.index(stop))
    at = segment.rfind("@", 0, end)
    if at <= 0 or segment.startswith("/"):  # no credentials, or a path (file:///a@b)
        return segment
    user, colon, _secret = segment[:at].partition(":")
    return (f"{user}:***" if colon else "***") + segment[at:]


@overload
def mask_url(url: str) -> str: ...
@overload
def mask_url(url: _T) -> _T: ...
def mask_url(url: object) -> object:
    """Mask every secret of every URL in ``url`` (a URL or a message quoting URLs):
    passwords, NATS tokens (``nats://TOKEN@host``) and password/token query parameters.
    The one masking function: everything that prints a URL goes through it."""
    if not isinstance(url, str):
        return url
    starts = [m.end() for m in _SCHEME.finditer(url)]
    if starts:
        pieces = [url[: starts[0]]]
        for i, start in enumerate(starts):
            stop = starts[i + 1] if i + 1 < len(starts) else len(url)
            chunk = url[start:stop]
            # Credentials never hold whitespace; a quoted URL ends at its quote.
            cut = re.search(r"[\s'\"]", chunk)
            head, tail = (chunk[: cut.start()], chunk[cut.start() :]) if cut else (chunk, "")
            pieces.append(_mask_userinfo(head) + tail)
        url = "".join(pieces)
    return _QUERY_SECRET.sub(lambda m: m.group("head") + "***", url)


def describe_ref(ref: Any) -> str:
    """A store reference for display, without secrets."""
    if isinstance(ref, str):
        return str(mask_url(ref))
    if isinstance(ref, Mapping):
        name = ref.get("backend") or ""
        url = ref.get("url")
        return f"{name} {mask_url(url)}".strip() if url else f"backend {name}"
    return type(ref).__name__
