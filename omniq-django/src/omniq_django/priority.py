"""Django priorities (-100..100, higher first, default 0) onto OmniQ's (0..9, higher
first).

The range is cut into ten bands of about twenty, in order, so a higher Django priority
never runs after a lower one; priorities inside one band share an OmniQ priority and run
in enqueue order among themselves. The default 0 falls in band 4, so Django tasks left at
the default keep room both above and below them.
"""

from __future__ import annotations

from omniq.models import PRIORITY_MAX, PRIORITY_MIN

from .compat import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY

__all__ = ["to_omniq_priority"]

_DJANGO_SPAN = TASK_MAX_PRIORITY - TASK_MIN_PRIORITY + 1  # 201 values
_OMNIQ_SPAN = PRIORITY_MAX - PRIORITY_MIN + 1  # 10 values


def to_omniq_priority(priority: int) -> int:
    """The OmniQ priority of a Django priority (already validated to be in range)."""
    return PRIORITY_MIN + (priority - TASK_MIN_PRIORITY) * _OMNIQ_SPAN // _DJANGO_SPAN
