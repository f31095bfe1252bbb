"""Cron schedules in a time zone across daylight-saving transitions, with fixed dates
(Europe/Berlin: summer time starts 2027-03-28 02:00 -> 03:00 and ends 2027-10-31
03:00 -> 02:00)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from omniq.cron import next_firing, validate_timezone
from omniq.errors import ConfigError
from omniq.models import Schedule, Task

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*fields: int, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=BERLIN, fold=fold).timestamp()  # type: ignore[misc]


def firings(expr: str, start: float, count: int, tz: str = "Europe/Berlin") -> list[str]:
    out, at = [], start
    for _ in range(count):
        at = next_firing(expr, at, tz)
        out.append(datetime.fromtimestamp(at, BERLIN).isoformat())
    return out


def test_a_daily_0230_fires_at_0300_on_the_spring_forward_day() -> None:
    assert firings("30 2 * * *", berlin(2027, 3, 27, 12, 0), 3) == [
        "2027-03-28T03:00:00+02:00",  # 02:30 does not exist: the first instant after the gap
        "2027-03-29T02:30:00+02:00",
        "2027-03-30T02:30:00+02:00",
    ]


def test_a_daily_0230_fires_once_on_the_fall_back_day() -> None:
    assert firings("30 2 * * *", berlin(2027, 10, 30, 12, 0), 3) == [
        "2027-10-31T02:30:00+02:00",  # the first 02:30 (summer time) only
        "2027-11-01T02:30:00+01:00",
        "2027-11-02T02:30:00+01:00",
    ]


def test_wall_times_in_the_gap_fire_once_and_the_repeated_hour_does_not_fire_again() -> None:
    assert firings("*/20 * * * *", berlin(2027, 3, 28, 1, 50), 3) == [
        "2027-03-28T03:00:00+02:00",  # 02:00, 02:20, 02:40 are all 03:00: one firing
        "2027-03-28T03:20:00+02:00",
        "2027-03-28T03:40:00+02:00",
    ]
    assert firings("0,30 * * * *", berlin(2027, 10, 31, 1, 45), 4) == [
        "2027-10-31T02:00:00+02:00",
        "2027-10-31T02:30:00+02:00",
        "2027-10-31T03:00:00+01:00",  # 02:00 and 02:30 winter time fired as summer time
        "2027-10-31T03:30:00+01:00",
    ]
    inside_repeat = berlin(2027, 10, 31, 2, 15, fold=1)  # the second 02:15
    assert firings("30 2 * * *", inside_repeat, 1) == ["2027-11-01T02:30:00+01:00"]


def test_without_a_zone_cron_is_utc_and_a_schedule_uses_its_zone() -> None:
    noon_utc = datetime(2027, 7, 1, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert next_firing("0 13 * * *", noon_utc) == noon_utc + 3600
    sched = Schedule(id="s", template=Task(id="t", name="n"), cron="0 13 * * *", tz="Europe/Berlin")
    assert sched.following(noon_utc) == berlin(2027, 7, 2, 13, 0), "13:00 Berlin is 11:00 UTC"


@pytest.mark.parametrize("bad", ["Europe/Berln", "", "../etc/passwd", 3, None])
def test_an_unknown_zone_is_named_with_examples(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"unknown time zone .* 'Europe/Berlin'"):
        validate_timezone(bad)
    assert validate_timezone("America/New_York") == "America/New_York"
