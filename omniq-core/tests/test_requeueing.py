"""RequeueSelection's checks, which run when one is built (the API and the CLI)."""

from __future__ import annotations

import time

import pytest

from omniq import RequeueSelection
from omniq.errors import ConfigError


@pytest.mark.parametrize(
    ("since", "until"),
    [(time.time() * 1000, time.time()), (time.time(), -1e12), (float("inf"), 5.0)],
    # Named, not by value: pytest-xdist needs every worker to collect the same ids.
    ids=["since-in-milliseconds", "until-before-the-epoch", "since-infinite"],
)
def test_an_empty_window_of_numbers_no_date_holds_is_still_the_config_error(
    since: float, until: float
) -> None:
    """Milliseconds given for seconds made the message's UTC time raise ``ValueError: year
    55840 is out of range`` in place of the error naming the empty window."""
    with pytest.raises(ConfigError, match="requeue window is empty") as caught:
        RequeueSelection(since=since, until=until)
    assert repr(since) in str(caught.value) and repr(until) in str(caught.value)
