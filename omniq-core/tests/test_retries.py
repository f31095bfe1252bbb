"""The retry policy: which failures retry and the delay chosen (no store, no worker)."""

from __future__ import annotations

import pickle
import random
from datetime import timedelta

import pytest

from omniq import Retry
from omniq.errors import ConfigError
from omniq.models import Task
from omniq.retries import DEFAULT_POLICY, RetryPolicy, decide

AT = 1_000.0


def failed(attempts: int, **fields: object) -> Task:
    """A task whose ``attempts``-th attempt just failed."""
    base: dict[str, object] = {"max_retries": 5, "retry_backoff": 2.0, "retry_backoff_max": 20.0}
    return Task(id="t", name="job", attempts=attempts, **{**base, **fields})  # type: ignore[arg-type]


def test_full_jitter_draws_between_zero_and_the_capped_exponential() -> None:
    random.seed(7)
    for attempts, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (5, 20.0), (9, 20.0)):
        delays = {DEFAULT_POLICY.delay(failed(attempts)) for _ in range(50)}
        assert all(0.0 <= d <= ceiling for d in delays), (attempts, delays)
        assert len(delays) > 40, "jitter spreads the delays"
        assert max(delays) > ceiling / 2


def test_without_jitter_the_delay_is_the_capped_exponential() -> None:
    policy = RetryPolicy.build(jitter=False)
    assert [policy.delay(failed(n)) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 20.0]


def test_fixed_list_and_custom_schedules_are_capped_and_not_jittered() -> None:
    assert {RetryPolicy.build(schedule="fixed").delay(failed(n)) for n in (1, 4)} == {2.0}
    listed = RetryPolicy.build(schedule=[1, timedelta(seconds=30), 5])
    assert [listed.delay(failed(n)) for n in (1, 2, 3, 4)] == [1.0, 20.0, 5.0, 5.0]
    custom = RetryPolicy.build(schedule=lambda attempt: attempt * 3)
    assert [custom.delay(failed(n)) for n in (1, 2, 10)] == [3.0, 6.0, 20.0]


def test_a_broken_custom_schedule_falls_back_to_the_exponential(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = RetryPolicy.build(schedule=lambda attempt: "soon")
    assert policy.delay(failed(2)) == 4.0
    assert "retry_schedule" in caplog.text and "using exponential backoff" in caplog.text


def test_dont_retry_on_wins_over_retry_on_and_others_are_not_retried() -> None:
    policy = RetryPolicy.build(
        retry_on=(ConnectionError, ValueError), dont_retry_on=UnicodeError, jitter=False
    )
    retried = decide(failed(1), ConnectionResetError("reset"), AT, policy)
    assert (retried.eta, retried.delay) == (AT + 2.0, 2.0)
    assert retried.reason == "ConnectionResetError: reset"
    assert decide(failed(1), UnicodeError("x"), AT, policy).eta is None
    assert decide(failed(1), UnicodeError("x"), AT, policy).reason == (
        "UnicodeError is in dont_retry_on"
    )
    other = decide(failed(1), KeyError("k"), AT, policy)
    assert (other.eta, other.reason) == (None, "KeyError is not in retry_on")


def test_retries_end_after_max_retries() -> None:
    policy = RetryPolicy.build(jitter=False)
    assert decide(failed(3, max_retries=3), OSError(), AT, policy).eta == AT + 8.0
    last = decide(failed(4, max_retries=3), OSError(), AT, policy)
    assert (last.eta, last.reason) == (None, "retries used up (3)")


def test_retry_raised_by_the_task_skips_filters_counts_and_keeps_its_delay() -> None:
    policy = RetryPolicy.build(retry_on=ConnectionError, jitter=False)
    asked = decide(failed(1), Retry(delay=timedelta(minutes=5), reason="rate limited"), AT, policy)
    assert (asked.eta, asked.delay, asked.reason) == (AT + 300.0, 300.0, "rate limited"), (
        "an explicit delay is used as given, above the cap"
    )
    chosen = decide(failed(2), Retry(), AT, policy)
    assert (chosen.delay, chosen.reason) == (4.0, "the task raised Retry")
    assert decide(failed(6), Retry(delay=1), AT, policy).eta is None, "a Retry uses a retry"


def test_retry_survives_pickling_and_refuses_a_bad_delay() -> None:
    again = pickle.loads(pickle.dumps(Retry(delay=1.5, reason="later")))
    assert (again.delay, again.reason, str(again)) == (1.5, "later", "later")
    for bad in (-1, float("nan"), "5s", True):
        with pytest.raises(ConfigError, match=r"Retry\(delay=...\) must be seconds >= 0"):
            Retry(delay=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry_on": "ValueError"}, "retry_on must be an exception class, a union"),
        ({"dont_retry_on": (ValueError, 3)}, "dont_retry_on must be an exception class"),
        ({"schedule": "linear"}, "retry_schedule must be 'exponential', 'fixed'"),
        ({"schedule": []}, "retry_schedule must be"),
        ({"schedule": [1, -2]}, "retry_schedule must be"),
        ({"jitter": "yes"}, "retry_jitter must be True or False"),
    ],
)
def test_bad_options_name_the_value_and_what_is_valid(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        RetryPolicy.build(**options)
