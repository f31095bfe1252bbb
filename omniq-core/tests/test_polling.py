"""The blocking poll helper's failure message: it names what never came true and, when
asked, the state the probe left at the deadline (the clue a flaky crash test needs)."""

from __future__ import annotations

import pytest

from omniq.testing import until


def test_until_shows_the_state_read_when_the_deadline_passed() -> None:
    tries: list[int] = []

    def probe() -> None:
        tries.append(len(tries))

    with pytest.raises(pytest.fail.Exception) as failed:
        until(probe, "the thing", deadline=0.05, interval=0.01, show=lambda: f"{len(tries)} tries")
    message = str(failed.value)
    assert message == f"the thing: still not true after 0.05 s of polling\n{len(tries)} tries"
    assert len(tries) > 1, "the probe is polled, not called once"


def test_until_returns_the_probe_s_first_truthy_answer() -> None:
    answers = iter([None, 0, "", ["found"]])
    assert until(lambda: next(answers), "an answer", interval=0.001) == ["found"]
