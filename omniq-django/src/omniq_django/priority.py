"""Django priorities (-100..100, higher first, default 0) onto OmniQ's (0..9, higher
first).

The default keeps a band of its own in the middle (4), so a task given any priority
above the default runs before default tasks, and any below it after them: the promise
a user makes with ``priority=1`` or ``priority=-1``. Above, 1..100 fall in five bands of
twenty (5..9); below, -1..-100 in four bands of twenty-five (3..0). Priorities that
share a band run in enqueue order among themselves.
"""

from __future__ import annotations

from omniq.models import PRIORITY_MAX, PRIORITY_MIN

from .compat import DEFAULT_TASK_PRIORITY, TASK_MAX_PRIORITY, TASK_MIN_PRIORITY

__all__ = ["DEFAULT_BAND", "to_omniq_priority"]

#: The OmniQ priority of Django's default priority; bands above and below it fill the
#: rest of OmniQ's 0..9.
DEFAULT_BAND = 4
_BANDS_ABOVE, _BANDS_BELOW = PRIORITY_MAX - DEFAULT_BAND, DEFAULT_BAND - PRIORITY_MIN
_SPAN_ABOVE: int = TASK_MAX_PRIORITY - DEFAULT_TASK_PRIORITY
_SPAN_BELOW: int = DEFAULT_TASK_PRIORITY - TASK_MIN_PRIORITY


def to_omniq_priority(priority: int) -> int:
    """The OmniQ priority of a Django priority (already validated to be in range)."""
    offset: int = priority - DEFAULT_TASK_PRIORITY
    if offset > 0:
        return DEFAULT_BAND + 1 + (offset - 1) * _BANDS_ABOVE // _SPAN_ABOVE
    if offset < 0:
        return DEFAULT_BAND - 1 - (-offset - 1) * _BANDS_BELOW // _SPAN_BELOW
    return DEFAULT_BAND
