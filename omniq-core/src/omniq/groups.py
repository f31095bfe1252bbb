"""Fan-in over the dependency graph: a group is tasks enqueued together, a chord is a
callback that depends on all of them and is given their results.

Nothing here is a new kind of record. A group is its tasks' ids (:class:`GroupRef`,
rebuilt from them at any time), and a chord's callback is an ordinary dependent task
whose record says ``pass_results``: the stores release it by the dependency rules of
:mod:`omniq.lifecycle` (all parents succeeded, or, with ``on_failure="run"``, all
parents ended) in the same atomic step that ends its last parent, and the worker reads
the parents' results when it runs it (:meth:`omniq.AsyncOmniQ.gather_results`). So a
chord is exactly as crash-safe as a dependency: a worker killed after the last parent
finished leaves a ready callback for the next worker, and a callback runs once per
delivery, like any task.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from .errors import ConfigError
from .lifecycle import PARENT_FAILURE_POLICIES
from .models import validate_name

__all__ = ["PARENT_RESULT_WAIT", "GroupRef", "check_on_failure", "dependency_ids"]

#: Seconds a worker waits for a parent's result that is not stored yet when it runs a
#: ``pass_results`` task (a result store apart from the task queue writes it just after
#: the parent's completion released the task).
PARENT_RESULT_WAIT = 10.0


class GroupRef(msgspec.Struct, frozen=True, gc=False):
    """What :meth:`~omniq.AsyncOmniQ.group` returns: its tasks' ids, in the order of its
    calls. It holds nothing else, so it can be stored (``list(ref.ids)``) and rebuilt
    with :meth:`~omniq.AsyncOmniQ.group_ref`; pass it as ``depends_on`` or to
    :meth:`~omniq.AsyncOmniQ.chord`, and to ``get_result`` for the list of values."""

    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __repr__(self) -> str:
        shown = ", ".join(repr(i) for i in self.ids[:3])
        more = f", ... {len(self.ids) - 3} more" if len(self.ids) > 3 else ""
        return f"GroupRef(ids=({shown}{more}))"


def dependency_ids(value: Any) -> tuple[str, ...]:
    """The task ids a ``depends_on`` option names, in order: task ids, refs with an
    ``id`` (a :class:`~omniq.TaskRef` or a :class:`~omniq.Task`) and groups (their ids,
    flattened), alone or in any iterable. Each id is checked once."""
    if value is None:
        return ()
    items: Iterable[Any] = [value] if isinstance(value, str) or hasattr(value, "id") else value
    out: list[str] = []
    for item in items:
        if isinstance(item, GroupRef):
            out.extend(item.ids)
        else:
            out.append(item if isinstance(item, str) else getattr(item, "id", item))
    return tuple(validate_name("dependency id", d) for d in out)


def check_on_failure(value: Any) -> str:
    """``on_failure`` of a dependent, checked: ``"cancel"`` or ``"run"``."""
    if value not in PARENT_FAILURE_POLICIES:
        raise ConfigError(
            f"on_failure={value!r}: expected 'cancel' (a parent that does not succeed "
            f"cancels the task, the default) or 'run' (the task runs once every parent "
            f"ended, and a failed parent's entry in its results is the exception)"
        )
    return str(value)
