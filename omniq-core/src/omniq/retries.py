"""Which failures a task retries, and how long it waits before the next attempt.

The decision is made here, in the core, by the worker that ran the attempt: backends only
store the eta they are handed (``BaseTaskQueue.retry``), so the delay a ``retrying``
event records is the delay the task waits. What travels with a task (its ``max_retries``,
``retry_backoff`` base and ``retry_backoff_max`` cap) is set at enqueue; what is code
(which exception types retry, the schedule's shape, jitter) belongs to the task's
registration, :class:`RetryPolicy`, in the worker's app. A task the worker does not have
registered (a function that travelled by dill) uses :data:`DEFAULT_POLICY`.
"""

from __future__ import annotations

import logging
import random
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import lifecycle
from .errors import ConfigError, Retry
from .models import Task
from .options import to_duration

__all__ = ["DEFAULT_POLICY", "RetryDecision", "RetryPolicy", "decide"]

log = logging.getLogger("omniq.worker")

#: A delay schedule: ``"exponential"`` (base doubled per attempt), ``"fixed"`` (the base
#: every time), a sequence of seconds (the n-th retry waits the n-th, the last repeats),
#: or a function of the attempt number (1 for the first failure) returning seconds.
RetrySchedule = str | tuple[float, ...] | Callable[[int], Any]
_SHAPES = ("exponential", "fixed")


def _exception_types(name: str, value: Any) -> tuple[type[BaseException], ...]:
    """``value`` as a flat tuple for ``isinstance``: one exception class, a union of them
    (``A | B``, ``typing.Union[A, B]``) or a tuple, list or set of them (a tuple's
    members may be tuples or unions, as ``isinstance`` takes them); refused naming the
    first bad member."""
    members: Any = None
    if isinstance(value, (type, types.UnionType)) or _is_union(value):
        members = _flat(value)
    elif isinstance(value, (list, set, frozenset, tuple)):
        members = [m for member in value for m in _flat(member)]
    bad = [m for m in members if not _is_exception(m)][:1] if members is not None else []
    if members is None or bad:
        why = f": {bad[0]!r} is not an exception class" if bad else ""
        raise ConfigError(
            f"{name} must be an exception class, a union of them or a tuple, list or set "
            f"of them, e.g. (ConnectionError, TimeoutError); got {value!r}{why}"
        )
    return tuple(members)


def _is_union(value: Any) -> bool:
    return isinstance(value, types.UnionType) or typing.get_origin(value) is typing.Union


def _flat(value: Any) -> list[Any]:
    """A union's or a tuple's members, flattened (as ``isinstance`` reads them)."""
    if _is_union(value):
        return list(typing.get_args(value))
    if isinstance(value, tuple):
        return [m for member in value for m in _flat(member)]
    return [value]


def _is_exception(member: Any) -> bool:
    return isinstance(member, type) and issubclass(member, BaseException)


def _schedule(value: Any) -> RetrySchedule:
    if value in _SHAPES or callable(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        try:
            return tuple(to_duration(v, above=False, strings=False) for v in value)
        except ValueError:
            pass
    raise ConfigError(
        f"retry_schedule must be 'exponential', 'fixed', a non-empty sequence of seconds "
        f"(e.g. [1, 10, 60]) or a function attempt -> seconds, got {value!r}"
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A registered task's rules for failures (``@app.task(retry_on=..., ...)``).

    ``dont_retry_on`` wins over ``retry_on``; an :class:`~omniq.Retry` raised by the task
    skips both filters (the task asked for it). ``jitter`` ("full jitter": a uniform
    draw between 0 and the exponential delay) spreads the retries of tasks that failed
    together so they do not hit a recovering service at the same moment; it applies to
    the exponential schedule only, a fixed or custom schedule is used as given. Every
    computed delay is capped by the task's ``retry_backoff_max`` (``retry_max_delay``).
    """

    retry_on: tuple[type[BaseException], ...] = (Exception,)
    dont_retry_on: tuple[type[BaseException], ...] = ()
    schedule: RetrySchedule = "exponential"
    jitter: bool = True

    @classmethod
    def build(
        cls,
        retry_on: Any = None,
        dont_retry_on: Any = None,
        schedule: Any = None,
        jitter: Any = None,
    ) -> RetryPolicy:
        """A policy from ``@app.task`` options (None: the default), each value checked."""
        if jitter is not None and not isinstance(jitter, bool):
            raise ConfigError(f"retry_jitter must be True or False, got {jitter!r}")
        return cls(
            retry_on=(Exception,) if retry_on is None else _exception_types("retry_on", retry_on),
            dont_retry_on=()
            if dont_retry_on is None
            else _exception_types("dont_retry_on", dont_retry_on),
            schedule="exponential" if schedule is None else _schedule(schedule),
            jitter=True if jitter is None else jitter,
        )

    def retries(self, exc: BaseException) -> bool:
        """Whether the filters let a failure with ``exc`` be retried."""
        return isinstance(exc, self.retry_on) and not isinstance(exc, self.dont_retry_on)

    def delay(self, task: Task) -> float:
        """Seconds before the next attempt of ``task`` (``task.attempts`` failed so far)."""
        cap = task.retry_backoff_max
        shape = self.schedule
        if shape == "exponential":
            ceiling = task.backoff()
            return random.uniform(0.0, ceiling) if self.jitter else ceiling
        if shape == "fixed":
            return min(task.retry_backoff, cap)
        if isinstance(shape, tuple):
            return min(shape[min(max(task.attempts, 1), len(shape)) - 1], cap)
        assert callable(shape)
        try:
            chosen = to_duration(shape(task.attempts), above=False, strings=False)
        except Exception as exc:  # a bug in the user's schedule must not lose the task
            log.warning(
                "task %s %s: retry_schedule %r failed (%s: %s); using exponential backoff",
                task.name,
                task.id,
                shape,
                type(exc).__name__,
                exc,
            )
            return task.backoff()
        return min(chosen, cap)


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What follows a failed attempt: another one at ``eta`` after ``delay`` seconds, or
    (``eta`` None) the end of the task; ``reason`` says why, for events and logs."""

    eta: float | None
    delay: float
    reason: str


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:199] + "…"


def asks_retry(exc: BaseException) -> bool:
    """Whether ``exc`` is the task's own request for another attempt: a Retry, not one
    that ``get_result`` rebuilt from another task's outcome and the task let through."""
    return isinstance(exc, Retry) and exc.raised_by is None


def decide(task: Task, exc: BaseException, at: float, policy: RetryPolicy) -> RetryDecision:
    """The decision for ``task``'s attempt that raised ``exc`` at ``at``.

    An :class:`~omniq.Retry` counts as an attempt like any failure: once the task's
    ``retries`` are used up it fails (with the Retry as its error). Its ``delay`` is used
    as given (not capped); without one the policy's schedule picks it.
    """
    if asks_retry(exc):
        assert isinstance(exc, Retry)
        if not lifecycle.retries_left(task):
            return RetryDecision(None, 0.0, f"retries used up ({task.max_retries})")
        delay = policy.delay(task) if exc.delay is None else exc.delay
        return RetryDecision(at + delay, delay, exc.reason or "the task raised Retry")
    if not policy.retries(exc):
        which = "in dont_retry_on" if isinstance(exc, policy.dont_retry_on) else "not in retry_on"
        return RetryDecision(None, 0.0, f"{type(exc).__name__} is {which}")
    if not lifecycle.retries_left(task):
        return RetryDecision(None, 0.0, f"retries used up ({task.max_retries})")
    delay = policy.delay(task)
    return RetryDecision(at + delay, delay, _describe(exc))
