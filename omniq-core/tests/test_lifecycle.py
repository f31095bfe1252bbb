"""The lifecycle rules as pure functions (the conformance suite pins their outcomes on
every backend; these check the rules themselves, with no store)."""

from __future__ import annotations

import msgspec
import pytest

from omniq.errors import ConfigError, DependencyFailedError
from omniq.lifecycle import (
    attempts_allowed,
    check_completable,
    dependency_failure,
    initial_state,
    lapsed,
    leased,
    released,
    retry_eta,
    settled,
)
from omniq.models import Task, TaskState

AT = 1_000.0


def task(**fields: object) -> Task:
    return Task(id="t", name="job", **fields)  # type: ignore[arg-type]


def test_initial_state_names_the_first_failed_parent_in_depends_on_order() -> None:
    child = task(depends_on=("ok", "gone", "dead"))
    parents = {"ok": TaskState.SUCCEEDED, "gone": TaskState.EXPIRED, "dead": TaskState.DEAD}
    state, error = initial_state(child, parents, AT)
    assert state is TaskState.CANCELLED
    assert error == dependency_failure("gone", TaskState.EXPIRED)
    assert (error.type, error.module) == (DependencyFailedError.__name__, "omniq.errors")
    assert error.message == "parent task 'gone' ended expired"


@pytest.mark.parametrize(
    ("parents", "eta", "expected"),
    [
        ({"p": TaskState.RUNNING}, None, TaskState.WAITING),
        ({"p": TaskState.SUCCEEDED}, AT + 1, TaskState.SCHEDULED),
        ({"p": TaskState.SUCCEEDED}, AT, TaskState.PENDING),
        ({}, None, TaskState.PENDING),
    ],
)
def test_initial_state_without_a_failed_parent(
    parents: dict[str, TaskState], eta: float | None, expected: TaskState
) -> None:
    assert initial_state(task(depends_on=tuple(parents), eta=eta), parents, AT) == (expected, None)


def test_attempts_allowed_covers_every_retry_and_the_deliveries() -> None:
    assert attempts_allowed(task(max_deliveries=5, max_retries=0)) == 5
    assert attempts_allowed(task(max_deliveries=1, max_retries=3)) == 4


def test_lapse_returns_the_task_until_the_last_attempt_allowed() -> None:
    held = leased(task(max_deliveries=2), "w", "tok", 30.0, AT)
    assert (held.state, held.attempts, held.lease_deadline) == (TaskState.RUNNING, 1, AT + 30.0)
    back = lapsed(held, AT + 31)
    assert (back.state, back.attempts, back.lease_token) == (TaskState.PENDING, 1, None)
    dead = lapsed(leased(back, "w", "tok2", 30.0, AT + 40), AT + 71)
    assert (dead.state, dead.attempts, dead.finished_at) == (TaskState.DEAD, 2, AT + 71)
    assert dead.error is not None
    assert dead.error.message.startswith("lease lapsed on attempt 2 of 2")


def test_release_does_not_count_the_attempt_and_retry_eta_ends_with_the_retries() -> None:
    held = leased(task(max_retries=1, retry_backoff=2.0), "w", "tok", 30.0, AT)
    assert released(held).attempts == 0
    assert retry_eta(held, AT) == AT + 2.0
    assert retry_eta(msgspec.structs.replace(held, attempts=2), AT) is None, "retries used up"


@pytest.mark.parametrize("state", ["failed", TaskState.DEAD, "running", "bogus"])
def test_check_completable_names_the_state_and_the_valid_ones(state: object) -> None:
    with pytest.raises(ConfigError) as info:
        check_completable(state, "t1")  # type: ignore[arg-type]
    said = str(info.value)
    assert "'t1'" in said and "'succeeded' or 'cancelled'" in said
    assert repr(getattr(state, "value", state)) in said


def test_check_completable_accepts_values_and_members() -> None:
    assert check_completable("succeeded") is TaskState.SUCCEEDED
    assert check_completable(TaskState.CANCELLED) is TaskState.CANCELLED


@pytest.mark.parametrize(
    ("parents", "expected"),
    [
        ({"a": TaskState.DEAD, "b": TaskState.RUNNING}, TaskState.WAITING),
        ({"a": TaskState.DEAD, "b": TaskState.SUCCEEDED}, TaskState.PENDING),
        ({"a": TaskState.CANCELLED, "b": TaskState.EXPIRED}, TaskState.PENDING),
    ],
)
def test_initial_state_of_a_task_that_runs_on_failure(
    parents: dict[str, TaskState], expected: TaskState
) -> None:
    child = task(depends_on=tuple(parents), on_parent_failure="run")
    assert initial_state(child, parents, AT) == (expected, None)


def test_settled_cancels_by_default_and_waits_for_every_parent_on_run() -> None:
    dead = Task(id="a", name="job", state=TaskState.DEAD)
    waiting = {"state": TaskState.WAITING, "depends_on": ("a", "b")}
    cancelled = settled(task(**waiting), dead, {"b": TaskState.RUNNING}, AT)
    assert cancelled is not None and cancelled.state is TaskState.CANCELLED
    assert cancelled.error == dependency_failure("a", TaskState.DEAD)
    runner = task(**waiting, on_parent_failure="run")
    assert settled(runner, dead, {"b": TaskState.RUNNING}, AT) is None
    ready = settled(runner, dead, {"b": TaskState.SUCCEEDED}, AT)
    assert ready is not None and ready.state is TaskState.PENDING and ready.error is None
