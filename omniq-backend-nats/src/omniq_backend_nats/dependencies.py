"""Dependencies: ``<prefix>_children`` lists each task's dependents, and a task that ends
releases or cancels them.

A dependent registers with its parents before its record exists, and a parent that ends
reads its list after its own record changed, so one of the two always sees the other.
"""

from __future__ import annotations

import asyncio

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from omniq import lifecycle
from omniq.lifecycle import finished
from omniq.models import TERMINAL_STATES, ErrorInfo, Task, TaskState, encoder

from .batch import Request
from .delivery import Delivery
from .names import token
from .records import _replace, _unleased

_children_decoder = msgspec.msgpack.Decoder(list[str])


class Dependencies(Delivery):
    """Settling waiting dependents when their parents end."""

    _children: KeyValue

    async def _add_child(self, parent_id: str, child_id: str) -> None:
        key = token(parent_id)
        while True:
            try:
                entry = await self._children.get(key)
            except nats.js.errors.KeyNotFoundError:
                try:
                    await self._children.create(key, encoder.encode([child_id]))
                    return
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
            assert entry.value is not None
            children = _children_decoder.decode(entry.value)
            if child_id in children:
                return
            try:
                await self._children.update(
                    key, encoder.encode([*children, child_id]), last=entry.revision
                )
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue

    async def _children_of(self, task_id: str) -> list[str]:
        try:
            entry = await self._children.get(token(task_id))
        except nats.js.errors.KeyNotFoundError:
            return []
        return _children_decoder.decode(entry.value or b"\x90")

    async def _dependents(self, task_id: str) -> list[Task]:
        """From the parent's list of children (it keeps every child, also after the
        parent ended); children deleted since are left out."""
        found = await asyncio.gather(*(self._read(c) for c in await self._children_of(task_id)))
        return sorted((f[0] for f in found if f is not None), key=lambda t: t.id)

    async def _settle(self, task_id: str) -> Task | None:
        """Decide a ``WAITING`` task from its parents (:func:`omniq.lifecycle.initial_state`):
        ready when all succeeded (all ended, for one that runs on failure), cancelled when
        one failed, else unchanged. Returns the task as it now is."""
        found = await self._read(task_id)
        if found is None or found[0].state is not TaskState.WAITING:
            return found[0] if found else None
        task = found[0]
        parents = [
            p[0] for p in await asyncio.gather(*(self._read(d) for d in task.depends_on)) if p
        ]
        failed = next((p for p in parents if p.state in lifecycle.PARENT_FAILED_STATES), None)
        at = await self.now()
        state = TaskState.WAITING
        if len(parents) == len(task.depends_on):
            state, _ = lifecycle.initial_state(task, {p.id: p.state for p in parents}, at)
        if failed is not None and not lifecycle.runs_on_failure(task):
            await self._cancel_waiting(task_id, failed)
        elif state is not TaskState.WAITING:
            # Message first: if we die before the CAS, its delivery settles the task again.
            await self._hint(task)
            changed = await self._mutate(
                task_id,
                lambda t: _replace(t, state=state) if t.state is TaskState.WAITING else None,
            )
            if changed:
                await self._wake([task])
        found = await self._read(task_id)
        return found[0] if found else None

    async def _cancel_waiting(
        self, task_id: str, parent: Task, error: ErrorInfo | None = None
    ) -> None:
        """Cancel a waiting dependent of ``parent``, and its own dependents in turn;
        each error names the task's own parent (``error``, if given, is this one's). One
        that runs on failure is settled instead: ready once every parent ended."""
        found = await self._read(task_id)
        if found is not None and lifecycle.runs_on_failure(found[0]):
            await self._settle(task_id)
            return
        at = await self.now()
        if error is None:
            error = lifecycle.dependency_failure(parent.id, parent.state)
        changed = await self._mutate(
            task_id,
            lambda t: (
                finished(t, TaskState.CANCELLED, error, at)
                if t.state is TaskState.WAITING
                else None
            ),
        )
        if changed:
            cancelled = changed[1]
            children = await self._children_of(task_id)
            await asyncio.gather(*(self._cancel_waiting(c, cancelled) for c in children))

    async def _settle_purged(self, task: Task) -> None:
        """Before ``purge()`` deletes ``task``, which had not succeeded: its record is
        marked cancelled (a parent that ended otherwise keeps its state) and its waiting
        dependents end as a cancelled parent's do, the direct ones naming the purge
        (:func:`omniq.lifecycle.purge_failure`). Once the record is gone nothing could
        settle them (a missing parent keeps a dependent waiting). Killed in between, the
        parent stays cancelled, its dependents settled or left to the cleanup sweep."""
        if task.state is TaskState.SUCCEEDED:
            return
        children = await self._children_of(task.id)
        if not children:
            return
        at = await self.now()
        changed = await self._mutate(
            task.id,
            lambda t: (
                None
                if t.state in TERMINAL_STATES
                else _unleased(t, state=TaskState.CANCELLED, finished_at=at)
            ),
        )
        if changed is None:
            found = await self._read(task.id)
            if found is None or found[0].state is TaskState.SUCCEEDED:
                return
        error = lifecycle.purge_failure(task.id)
        gone = _replace(task, state=TaskState.CANCELLED)
        await asyncio.gather(*(self._cancel_waiting(c, gone, error) for c in children))

    async def _after_end(self, task: Task) -> None:
        """A task became terminal: release or cancel its dependents."""
        children = await self._children_of(task.id)
        if task.state is TaskState.SUCCEEDED:
            await asyncio.gather(*(self._settle(c) for c in children))
        else:
            await asyncio.gather(*(self._cancel_waiting(c, task) for c in children))

    def _any_dependents(self) -> Request:
        """The question whether any task has dependents (one call instead of a lookup
        per task; :func:`.batch.found` of its reply): a direct get of the first message
        of the children bucket's stream, whatever its key, which costs the server
        about two thirds of the stream's info (and answers 404, no JSON, when there is
        none). Asked after the records changed, so a dependent registering later reads
        the parent's new state itself (see :meth:`_store`)."""
        bucket = f"{self.prefix}_children"
        first = b'{"seq": 1, "next_by_subj": "$KV.%s.>"}' % bucket.encode()
        return (f"$JS.API.DIRECT.GET.KV_{bucket}", first, None)
