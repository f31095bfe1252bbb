"""Global rate and concurrency limits, enforced by the task queue's store at reserve time.

A limit is declared in code: ``@app.task(rate_limit="10/s", concurrency_limit=2)`` for a
task name, ``queue_rate_limits={"emails": "100/m"}`` in the config for a queue. The
worker passes the limits its app declares to every reserve
(:meth:`omniq.interfaces.BaseTaskQueue.reserve_limited`); the store keeps the state they
are judged by (when each rate next allows a start, which tasks run), so a limit holds
across every worker process and host that shares the store. A task a limit defers is
left where it is: not leased, no attempt counted.

A rate ``n/period`` is spread evenly: one start every ``period / n`` seconds, never a
burst of ``n`` (so any window of one period holds at most ``n`` starts, and the state is
one number per limit). See docs/limits.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .errors import ConfigError
from .models import Task, validate_name

__all__ = ["SCAN_AHEAD", "Gate", "Limits", "Reservation", "parse_rate"]

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_VALID_RATES = "'<count>/<unit>' with unit s, m, h or d, e.g. '10/s', '100/m', '5/h'"


def parse_rate(value: object, what: str = "rate_limit") -> float:
    """The seconds between two starts that a rate such as ``"100/m"`` allows (0.6).

    Accepts ``<count>/<unit>`` (unit ``s``, ``m``, ``h`` or ``d``, optionally with a
    multiple: ``"3/10s"``); anything else raises :class:`~omniq.errors.ConfigError`
    naming the value and the valid forms."""
    match = _RATE.match(value) if isinstance(value, str) else None
    count = int(match[1]) if match else 0
    multiple = int(match[2] or 1) if match else 0
    if not match or count < 1 or multiple < 1:
        raise ConfigError(f"{what} {value!r} is not a rate: expected {_VALID_RATES}")
    return multiple * _PERIODS[match[3]] / count


def _concurrency(value: object, what: str) -> int:
    if type(value) is not int or value < 1:
        raise ConfigError(f"{what} must be an integer >= 1, got {value!r}")
    return value


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits a worker passes to a reserve, already checked.

    :ivar task_rates: task name -> seconds between two starts of that name.
    :ivar queue_rates: queue name -> seconds between two starts from that queue.
    :ivar task_concurrency: task name -> most tasks of that name running at once.
    """

    task_rates: dict[str, float] = {}
    queue_rates: dict[str, float] = {}
    task_concurrency: dict[str, int] = {}

    @classmethod
    def build(
        cls,
        *,
        task_rates: Mapping[str, Any] | None = None,
        queue_rates: Mapping[str, Any] | None = None,
        task_concurrency: Mapping[str, Any] | None = None,
    ) -> Limits:
        """Limits from declarations: rates as text (``"10/s"``) or seconds between starts."""

        def rates(kind: str, given: Mapping[str, Any] | None) -> dict[str, float]:
            out = {}
            for name, rate in (given or {}).items():
                validate_name(f"{kind} name", name)
                if isinstance(rate, str):
                    out[name] = parse_rate(rate, f"rate limit of {kind} {name!r}")
                elif type(rate) in (int, float) and 0 < rate < math.inf:
                    out[name] = float(rate)
                else:
                    raise ConfigError(
                        f"rate limit of {kind} {name!r} is {rate!r}: expected {_VALID_RATES}"
                    )
            return out

        return cls(
            task_rates=rates("task", task_rates),
            queue_rates=rates("queue", queue_rates),
            task_concurrency={
                validate_name("task name", name): _concurrency(n, f"concurrency_limit of {name!r}")
                for name, n in (task_concurrency or {}).items()
            },
        )

    def __bool__(self) -> bool:
        return bool(self.task_rates or self.queue_rates or self.task_concurrency)

    def keys_of(self, name: str, queue: str) -> tuple[list[tuple[str, float]], int | None]:
        """The rate keys (``("task:<name>" | "queue:<queue>", seconds)``) and the
        concurrency limit that apply to a task of ``name`` in ``queue``: what a backend
        checks per candidate."""
        rates = []
        if (every := self.task_rates.get(name)) is not None:
            rates.append((f"task:{name}", every))
        if (every := self.queue_rates.get(queue)) is not None:
            rates.append((f"queue:{queue}", every))
        return rates, self.task_concurrency.get(name)


class Reservation(msgspec.Struct, frozen=True):
    """What :meth:`~omniq.interfaces.BaseTaskQueue.reserve_limited` answers.

    :ivar tasks: the tasks leased, as :meth:`~omniq.interfaces.BaseTaskQueue.reserve`.
    :ivar retry_in: when ready tasks were deferred by a rate: seconds until the earliest
        such rate allows a start again (by the store's clock), so the worker waits that
        long instead of polling. None when nothing was deferred by a rate (a task held
        back by a concurrency limit waits for a running one to end, which has no time).
    :ivar deferred: whether any ready task was held back by a limit: the worker then
        waits before it reserves again, as ready work it may not take is no reason to
        wake (a store's ``wait_for_work`` returns at once while tasks are ready).
    """

    tasks: list[Task]
    retry_in: float | None = None
    deferred: bool = False


#: How far past ``limit`` a limited reserve looks for tasks no limit holds back: a
#: backend scans at most ``limit + SCAN_AHEAD`` ready tasks per call.
SCAN_AHEAD = 200


class Gate:
    """The decisions of one limited reserve, for backends that make them in Python
    inside their atomic step (SQLite and PostgreSQL in a transaction holding the
    limits' rows, NATS under compare-and-set): feed it the candidates in reserve order,
    lease those :meth:`admit` lets through, then store :attr:`next_at`.

    ``next_at``: rate key -> the store's time it next allows a start (keys missing have
    never started). ``running``: task name -> tasks of it running under an unexpired
    lease (only names with a concurrency limit matter)."""

    __slots__ = ("_deferred_until", "changed", "deferred", "limits", "next_at", "now", "running")

    def __init__(
        self, limits: Limits, now: float, next_at: Mapping[str, float], running: Mapping[str, int]
    ) -> None:
        self.limits, self.now = limits, now
        self.next_at = dict(next_at)
        self.running = dict(running)
        self.changed: set[str] = set()  # rate keys whose next_at this reserve moved
        self._deferred_until: float | None = None
        self.deferred = False

    def admit(self, name: str, queue: str) -> bool:
        """Whether a task of ``name`` in ``queue`` may start now; when it may, its rates
        and its slot are taken."""
        rates, cap = self.limits.keys_of(name, queue)
        if not rates and cap is None:
            return True
        wait = max((self.next_at.get(key, -math.inf) for key, _ in rates), default=-math.inf)
        if wait > self.now:
            self.deferred = True
            if self._deferred_until is None or wait < self._deferred_until:
                self._deferred_until = wait
            return False
        if cap is not None and self.running.get(name, 0) >= cap:
            self.deferred = True
            return False
        for key, every in rates:
            self.next_at[key] = self.now + every
            self.changed.add(key)
        if cap is not None:
            self.running[name] = self.running.get(name, 0) + 1
        return True

    @property
    def retry_in(self) -> float | None:
        """Seconds until the earliest rate that held a task back allows one, or None."""
        return None if self._deferred_until is None else self._deferred_until - self.now

    @staticmethod
    def rate_keys(limits: Limits, candidates: Iterable[tuple[str, str]]) -> list[str]:
        """The rate keys ``(name, queue)`` candidates touch, sorted (the order to lock
        them in, so two reservers never wait on each other crosswise)."""
        return sorted({key for n, q in candidates for key, _ in limits.keys_of(n, q)[0]})

    @staticmethod
    def capped_names(limits: Limits, candidates: Iterable[tuple[str, str]]) -> list[str]:
        """The task names among ``(name, queue)`` candidates that have a concurrency
        limit, sorted."""
        return sorted({n for n, _ in candidates if n in limits.task_concurrency})
