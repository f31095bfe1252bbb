"""How values read in a page: times in UTC, durations, and the time filters' parsing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from omniq.errors import ConfigError

#: The form of ``<input type="datetime-local">`` values; the dashboard reads them as UTC.
LOCAL_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def timestamp(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def parse_time(name: str, text: str | None) -> float | None:
    """A filter's time (``2026-01-31T12:30``, UTC) as epoch seconds; None when empty."""
    if not text:
        return None
    for fmt in LOCAL_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ConfigError(f"{name} {text!r} is not a time; use YYYY-MM-DDTHH:MM (UTC)")


def input_time(value: float | None) -> str:
    """Epoch seconds as a ``datetime-local`` input value (UTC)."""
    if value is None:
        return ""
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%dT%H:%M")


FILTERS: dict[str, Callable[..., Any]] = {
    "ts": timestamp,
    "dur": duration,
    "input_time": input_time,
}
