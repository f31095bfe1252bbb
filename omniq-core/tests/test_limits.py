"""Declaring global limits: rate parsing, task options, the config key, the decisions
of :class:`omniq.limits.Gate`, and a worker that refuses a store that cannot enforce them.
(What a store does with them is the conformance suite's: omniq.testing.queue_limits.)"""

from __future__ import annotations

import math

import pytest

from omniq import AsyncOmniQ
from omniq.errors import ConfigError
from omniq.limits import Gate, Limits, parse_rate
from omniq.testing.queue_limits import max_in_window, max_overlap


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10/s", 0.1), ("100/m", 0.6), ("5/h", 720.0), ("2/d", 43200.0), ("3/10s", 10 / 3)],
)
def test_rates_parse_to_seconds_between_starts(text: str, seconds: float) -> None:
    assert math.isclose(parse_rate(text), seconds)


@pytest.mark.parametrize("bad", ["10", "10/x", "0/s", "-1/s", "ten/s", "10/0s", "", 10, None])
def test_a_bad_rate_names_the_value_and_the_valid_forms(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rate(bad)
    assert repr(bad) in str(info.value) and "'10/s', '100/m', '5/h'" in str(info.value)


def test_task_options_are_checked_when_the_task_is_declared(tmp_path) -> None:
    app = AsyncOmniQ(task_queue=f"sqlite:///{tmp_path}/q.db")
    with pytest.raises(ConfigError, match="'10 per second' is not a rate"):
        app.task(rate_limit="10 per second")(lambda: None)
    with pytest.raises(ConfigError, match="concurrency_limit"):
        app.task(concurrency_limit=0)(lambda: None)

    @app.task(name="rated", rate_limit="10/s", concurrency_limit=2)
    def rated() -> None: ...

    @app.task(name="plain")
    def plain() -> None: ...

    limits = app.limits()
    assert limits.task_rates == {"rated": 0.1} and limits.task_concurrency == {"rated": 2}
    assert not AsyncOmniQ(task_queue=f"sqlite:///{tmp_path}/q.db").limits(), "none declared"


def test_queue_rate_limits_come_from_the_config(tmp_path) -> None:
    app = AsyncOmniQ(task_queue=f"sqlite:///{tmp_path}/q.db", queue_rate_limits={"mail": "1/m"})
    assert app.limits().queue_rates == {"mail": 60.0}
    with pytest.raises(ConfigError, match=r"queue_rate_limits\.mail"):
        AsyncOmniQ(task_queue=f"sqlite:///{tmp_path}/q.db", queue_rate_limits={"mail": "1/w"})


def test_the_gate_spaces_starts_and_counts_slots() -> None:
    limits = Limits.build(task_rates={"a": 1.0}, queue_rates={"q": 0.5}, task_concurrency={"c": 1})
    gate = Gate(limits, 100.0, {"task:a": 99.0}, {"c": 0})
    assert gate.admit("a", "other") and not gate.admit("a", "other")
    assert gate.retry_in == pytest.approx(1.0) and gate.next_at["task:a"] == 101.0
    assert gate.admit("x", "q") and not gate.admit("y", "q"), "a queue rate holds any name"
    assert gate.admit("c", "other") and not gate.admit("c", "other")
    assert gate.admit("free", "other"), "no limit applies"
    assert gate.changed == {"task:a", "queue:q"} and gate.deferred


def test_the_window_checks_count_what_they_should() -> None:
    assert max_in_window([0.0, 0.1, 0.999, 1.0, 1.05], 1.0) == 4  # 0.1 .. 1.05
    assert max_in_window([0.0, 1.0, 2.0], 1.0) == 1, "exactly a window apart"
    assert max_in_window([i * 0.1 for i in range(50)], 1.0) == 10
    assert max_overlap([(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]) == 2


def test_a_worker_with_limits_refuses_a_store_that_cannot_enforce_them(tmp_path) -> None:
    from omniq import OmniQ

    with OmniQ(task_queue=f"file://{tmp_path}/store") as app:

        @app.task(rate_limit="1/s")
        def rated() -> None: ...

        with pytest.raises(ConfigError, match="cannot enforce"):
            app.run_worker(burst=True)
