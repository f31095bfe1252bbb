"""Which ended tasks an operator's ``requeue`` takes: a selection by queue, name, state and
the time the task ended, walked by pages so a selection of a million tasks is never held
at once (``omniq requeue`` and :meth:`omniq.AsyncOmniQ.requeue_selected` use it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from .errors import ConfigError
from .interfaces import MAX_PAGE, REQUEUE_STATES
from .models import EventType, Task, TaskState, validate_name

if TYPE_CHECKING:
    from .app import AsyncOmniQ

__all__ = ["RequeueSelection", "requeued_to", "select"]


def _utc(ts: float) -> str:
    """Epoch seconds as a UTC time a person reads in a message; a number no date holds
    (milliseconds given for seconds) says so, rather than fail in place of the message."""
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return "(no date)"


class RequeueSelection(msgspec.Struct, frozen=True, kw_only=True):
    """Ended tasks to requeue: every filter given must match.

    ``since`` (inclusive) and ``until`` (exclusive) bound when the task ended
    (``finished_at``), not when it was enqueued: "what died in the last hour".
    ``include_requeued`` False leaves out tasks that a ``requeued`` event says were
    requeued already, so running the same command twice does not run them twice.
    """

    queue: str | None = None
    name: str | None = None
    states: tuple[TaskState, ...] = (TaskState.DEAD,)
    since: float | None = None
    until: float | None = None
    include_requeued: bool = False

    def __post_init__(self) -> None:
        if self.queue is not None:
            validate_name("queue name", self.queue)
        if self.name is not None:
            validate_name("task name", self.name)
        bad = [s for s in self.states if TaskState(s) not in REQUEUE_STATES]
        if bad or not self.states:
            raise ConfigError(
                f"requeue states {[getattr(s, 'value', s) for s in bad or self.states]} are "
                f"not requeueable; valid: {sorted(s.value for s in REQUEUE_STATES)}"
            )
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ConfigError(
                f"requeue window is empty: until {_utc(self.until)} ({self.until!r}) must be "
                f"after since {_utc(self.since)} ({self.since!r})"
            )

    def matches(self, task: Task) -> bool:
        """Whether ``task`` (already of the queue, name and states asked for) ended
        inside the window."""
        ended = task.finished_at if task.finished_at is not None else task.created_at
        return (self.since is None or ended >= self.since) and (
            self.until is None or ended < self.until
        )


async def requeued_to(app: AsyncOmniQ, tasks: Iterable[Task]) -> dict[str, str]:
    """Which of ``tasks`` were requeued already, and as which task, from their
    ``requeued`` events (none when events are off). One query from the earliest end."""
    by_id = {t.id: t for t in tasks}
    if not by_id or not app.config.events:
        return {}
    first = min((t.finished_at or t.created_at) for t in by_id.values())
    events = await app.event_storage.query(
        types=[EventType.REQUEUED.value], since=first, limit=None
    )
    return {e.task_id: str(e.detail.get("to")) for e in events if e.task_id in by_id}


async def select(
    app: AsyncOmniQ, selection: RequeueSelection, page: int = MAX_PAGE
) -> AsyncIterator[list[Task]]:
    """The tasks ``selection`` takes, a page at a time (newest first), read through
    ``list_page`` so each call of the store is bounded."""
    cursor: str | None = None
    while True:
        found = await app.task_queue.list_page(
            queue=selection.queue,
            states=selection.states,
            name=selection.name,
            cursor=cursor,
            limit=page,
        )
        picked = [t for t in found.tasks if selection.matches(t)]
        if picked and not selection.include_requeued:
            done = await requeued_to(app, picked)
            picked = [t for t in picked if t.id not in done]
        if picked:
            yield picked
        if found.cursor is None:
            return
        cursor = found.cursor
