"""Cron firing times in a time zone, with daylight-saving transitions made explicit.

croniter walks wall-clock times; this module turns each into one instant of the zone
(:mod:`zoneinfo`), so that a schedule fires at most once per wall-clock time:

- **Spring forward** (a wall time that does not exist, e.g. 02:30 in Europe/Berlin on
  the last Sunday of March): the firing happens at the first instant after the gap
  (03:00 local), not skipped; several wall times in the gap fire once there.
- **Fall back** (a wall time that happens twice, e.g. 02:30 on the last Sunday of
  October): the firing happens at its first occurrence only (summer time); the repeated
  hour does not fire again.

Without a zone, cron expressions are read in UTC (no transitions).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

__all__ = ["next_firing", "validate_timezone"]


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def validate_timezone(name: object) -> str:
    """``name`` when it is an IANA time zone this machine knows; else a ConfigError."""
    if isinstance(name, str) and name:
        try:
            _zone(name)
            return name
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ConfigError(
        f"unknown time zone {name!r}: expected an IANA name such as 'Europe/Berlin', "
        f"'America/New_York' or 'UTC' (where the system has no zone database, "
        f"pip install tzdata)"
    )


def _instant(wall: datetime, zone: ZoneInfo) -> float:
    """The instant a naive wall time names in ``zone``: its first occurrence in a fold,
    the end of the gap for a time skipped by a transition."""
    first = wall.replace(tzinfo=zone).timestamp()  # fold=0: the earlier offset
    if datetime.fromtimestamp(first, zone).replace(tzinfo=None) == wall:
        return first
    # In a gap: fold=1 reads the wall time with the later offset, landing before the
    # transition; the transition instant lies between the two readings (whole seconds).
    low, high = int(wall.replace(tzinfo=zone, fold=1).timestamp()), int(first)
    after = datetime.fromtimestamp(high, zone).utcoffset()
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == after:
            high = mid
        else:
            low = mid
    return float(high)


def next_firing(expr: str, after: float, tz: str | None = None) -> float:
    """The first firing of cron ``expr`` strictly after the instant ``after``, reading
    the expression in ``tz`` (UTC when None); see the module doc for DST transitions."""
    from croniter import croniter

    if tz is None:
        return float(croniter(expr, datetime.fromtimestamp(after, tz=UTC)).get_next(float))
    zone = _zone(tz)
    walls = croniter(expr, datetime.fromtimestamp(after, zone).replace(tzinfo=None))
    while True:
        at = _instant(walls.get_next(datetime), zone)
        if at > after:  # (a wall time of a repeated hour, fired on its first pass)
            return at
