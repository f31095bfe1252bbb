"""Django's priorities keep their order on OmniQ's ten."""

from __future__ import annotations

from omniq.models import PRIORITY_MAX, PRIORITY_MIN
from omniq_django.priority import to_omniq_priority


def test_order_is_kept_and_the_range_is_used() -> None:
    mapped = [to_omniq_priority(p) for p in range(-100, 101)]
    assert mapped == sorted(mapped)
    assert (mapped[0], mapped[-1]) == (PRIORITY_MIN, PRIORITY_MAX)
    assert set(mapped) == set(range(PRIORITY_MIN, PRIORITY_MAX + 1))


def test_any_priority_off_the_default_is_ordered_against_it() -> None:
    default = to_omniq_priority(0)
    assert to_omniq_priority(1) > default > to_omniq_priority(-1)
