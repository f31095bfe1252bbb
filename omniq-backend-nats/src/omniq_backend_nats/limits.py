"""Reserve under global limits (:mod:`omniq.limits`): a KV bucket ``<prefix>_limits``
holds one entry per limit key, changed only by compare-and-set.

Entry ``task:<name>`` or ``queue:<queue>``: when its rate next allows a start and, for a
task name with a concurrency limit, the ids of its tasks that took a slot and when each
took it. A member counts while its record says ``RUNNING`` under a lease that has not
lapsed, and is dropped once it does not (whatever ends a lease gives the slot back),
except that one not claimed yet counts for :data:`CLAIM_GRACE` after it took its slot:
its reserver claims it only after judging the rest of its pulled batch. Pulled messages
are judged before they are claimed; a task a limit holds back has its message put back
with a delay (a nak: no lease, no attempt), until its rate allows it, or briefly for a
concurrency limit. Judged by this host's clock, as leases are here.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from omniq.limits import SCAN_AHEAD, Limits, Reservation
from omniq.models import READY_STATES, Task, TaskState, encoder

from .connection import confirm, nak_delay
from .delivery import _carried
from .names import token
from .reserve import Reserve

__all__ = ["LimitedReserve"]

#: Seconds a task held back by a concurrency limit waits before it is offered again.
CONCURRENCY_RECHECK = 0.2
#: Seconds a member not claimed yet (its record not ``RUNNING``, not started since it took
#: its slot) keeps the slot: its reserver claims it after judging the rest of its batch
#: (up to ``limit + SCAN_AHEAD`` messages, a few round trips each), which takes well under
#: a second unless the server or the host is badly loaded. Longer would cover a slower
#: reserver; shorter frees sooner the slot of one that died between taking a slot and
#: claiming its task (it holds the slot this long, where a worker that dies after the
#: claim holds it for its whole lease).
CLAIM_GRACE = 10.0
#: Compare-and-set attempts on one task's limit entries before it is held back.
_CAS_TRIES = 10


class _Entry(msgspec.Struct, array_like=True):
    next_at: float = -1.0
    running: list[str] = []
    #: When each member of ``running`` took its slot, by its reserver's clock. An entry
    #: older versions wrote has none: its members count as having taken it long ago.
    taken: list[float] = []

    def members(self) -> list[tuple[str, float]]:
        """The ids in ``running``, each with when it took its slot."""
        return [
            (i, self.taken[n] if n < len(self.taken) else float("-inf"))
            for n, i in enumerate(self.running)
        ]


_decoder = msgspec.msgpack.Decoder(_Entry)


class _Screen:
    """One limited reserve's judge of pulled messages (see :class:`Reserve`'s screen)."""

    def __init__(self, store: LimitedReserve, limits: Limits, budget: int) -> None:
        self.store, self.limits, self.budget = store, limits, budget
        self.deferred = False
        self.soonest: float | None = None
        self.admitted: set[str] = set()  # took a slot here; claimed after the batch
        #: The latest end of a task whose slot was taken over here: the tasks admitted
        #: start (are leased) no earlier, though judged from a time before it.
        self.not_before = float("-inf")

    async def admit(self, msgs: Sequence[Msg], at: float) -> list[Msg]:
        self.budget -= len(msgs)
        out = []
        for msg in msgs:
            task = await self._record(msg)
            if task is None or not task.is_ready(at):
                out.append(msg)  # the claim deals with it as a plain reserve does
                continue
            wait = await self.store._take(task, self.limits, at, self)
            if wait is None:
                self.admitted.add(task.id)
                out.append(msg)
                continue
            self.deferred = True
            if wait > at:
                self.soonest = wait if self.soonest is None else min(self.soonest, wait)
            await confirm(
                self.store.nc, msg.reply, nak_delay(max(wait - at, 0) or CONCURRENCY_RECHECK)
            )
        return out

    async def _record(self, msg: Msg) -> Task | None:
        task_id, found = _carried(msg)
        if found is None and task_id:
            found = await self.store._read(task_id)
        return found[0] if found is not None else None


class LimitedReserve(Reserve):
    """``reserve_limited`` of the NATS task queue."""

    _limits_kv: tuple[object, KeyValue] | None = None
    _rate_until = float("-inf")  # when this instance's last rate deferral ends
    _slot_until = float("-inf")  # when its last concurrency deferral is offered again

    async def _limits_bucket(self) -> KeyValue:
        """Made on first use: a store whose workers declare no limits never has it."""
        if self._limits_kv is None or self._limits_kv[0] is not self.js:
            self._limits_kv = (self.js, await self.ensure_bucket(f"{self.prefix}_limits"))
        return self._limits_kv[1]

    async def _reserve_limited(
        self, queues: list[str], worker_id: str, lease: float, limit: int, limits: Limits
    ) -> Reservation:
        at = await self.now()
        screen = _Screen(self, limits, limit + SCAN_AHEAD)
        tasks = await self._pull_and_claim(queues, worker_id, lease, limit, at, screen)
        if screen.soonest is not None:
            self._rate_until = screen.soonest
        elif screen.deferred:
            self._slot_until = at + CONCURRENCY_RECHECK
        # A message put back is out of sight until its delay passes, so a reserve made
        # meanwhile does not see the tasks it holds back: it answers from this
        # instance's last deferrals, so that its worker waits instead of polling.
        if at < self._rate_until:
            return Reservation(tasks, self._rate_until - at, True)
        return Reservation(tasks, None, at < self._slot_until)

    async def _take(self, task: Task, limits: Limits, at: float, screen: _Screen) -> float | None:
        """Take ``task``'s rates and slot: None when they allow it now (and are taken);
        else when its rate next allows a start (``at`` or before for a concurrency limit
        or a lost race). ``screen.admitted``: ids this reserve let through, which hold their
        slot though their claim comes after."""
        rates, cap = limits.keys_of(task.name, task.queue)
        if not rates and cap is None:
            return None
        every = dict(rates)
        slot_key = f"task:{task.name}"
        keys = sorted({*every, *([slot_key] if cap is not None else [])})
        kv = await self._limits_bucket()
        for _ in range(_CAS_TRIES):
            entries = {k: await self._entry(kv, k) for k in keys}
            wait = max((entries[k][0].next_at for k in every), default=-1.0)
            if wait > at:
                return wait
            live: list[tuple[str, float]] = []
            if cap is not None:
                live = [
                    (i, since)
                    for i, since in entries[slot_key][0].members()
                    # (its own id: a stale take, or a duplicate message's, whose claim
                    # loses to this one's or wins over it: one slot for either)
                    if i != task.id
                    and (i in screen.admitted or await self._holds_slot(i, since, at, screen))
                ]
                if len(live) >= cap:
                    return at
            try:
                for k in keys:
                    old, rev = entries[k]
                    new = _Entry(
                        at + every[k] if k in every else old.next_at, old.running, old.taken
                    )
                    if k == slot_key and cap is not None:
                        new.running = [*(i for i, _ in live), task.id]
                        new.taken = [*(since for _, since in live), at]
                    if rev is None:
                        await kv.create(token(k), encoder.encode(new))
                    else:
                        await kv.update(token(k), encoder.encode(new), last=rev)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                continue  # another reserver changed an entry: judge again
            return None
        return at

    async def _entry(self, kv: KeyValue, key: str) -> tuple[_Entry, int | None]:
        try:
            found = await kv.get(token(key))
        except nats.js.errors.KeyNotFoundError:
            return _Entry(), None
        if found.value is None:
            return _Entry(), found.revision
        return _decoder.decode(found.value), found.revision

    async def _holds_slot(self, task_id: str, taken: float, at: float, screen: _Screen) -> bool:
        """Whether a member (whose slot was taken at ``taken``) still holds it: running
        under a live lease, or not claimed yet within :data:`CLAIM_GRACE`. One that
        ended after ``at`` (while this reserve judged) moves the start of what the screen
        admits after its end."""
        found = await self._read(task_id)
        if found is None:
            return False
        task = found[0]
        if task.state is TaskState.RUNNING and (task.lease_deadline or 0.0) > at:
            return True
        if task.finished_at is not None:
            screen.not_before = max(screen.not_before, task.finished_at)
        # Ready and not started since its slot was taken: its reserver has not claimed it
        # yet (a claim stamps ``started_at`` no earlier than ``taken``, by the same clock).
        return (
            task.state in READY_STATES
            and (task.started_at is None or task.started_at < taken)
            and at < taken + CLAIM_GRACE
        )
