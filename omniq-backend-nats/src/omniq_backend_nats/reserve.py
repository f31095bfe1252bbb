"""Reserve: pull delivery messages band by band, check each against its record and lease
the ready tasks with a compare-and-set; and wait for work between polls, with a waiting
pull open on every band (:mod:`.pulls`), whose messages the next reserve claims first.

A pulled batch is leased in at most two batched steps (read the records the messages do
not carry, then compare-and-set them to ``RUNNING`` with one lease entry for the batch);
anything unusual goes the one-by-one way, :meth:`Reserve._claim`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from omniq import lifecycle
from omniq.models import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    READY_STATES,
    TERMINAL_STATES,
    Task,
    TaskState,
    encoder,
    task_decoder,
)

from .batch import WRONG_REVISION, puts, revisions
from .connection import confirm, nak_delay
from .delivery import _ACK, _carried, _message_task_id
from .leases import _Held, _Lease, _lease_decoder, _Listed
from .names import consumer_name, token
from .pulls import WaitingPulls, pending
from .records import _stand_in
from .repair import ConsumerRepair

#: Reserve reads bands from the highest priority down.
BANDS = range(PRIORITY_MAX, PRIORITY_MIN - 1, -1)
#: A redelivered message of a running task comes back no sooner than this.
_MIN_RECHECK = 1.0


class Screen(Protocol):
    """What a limited reserve puts between pulling and claiming (see ``limits.py``)."""

    budget: int
    #: Leases of admitted tasks start no earlier (see ``limits._Screen``).
    not_before: float

    async def admit(self, msgs: Sequence[Msg], at: float) -> list[Msg]: ...


class Reserve(ConsumerRepair):
    """Leasing ready tasks from their delivery messages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake_subs: dict[str, Subscription] = {}
        self._work = asyncio.Event()
        self._waiting: WaitingPulls | None = None
        self._last_lease: float | None = None  # the consumers' AckWait follows it
        self._waits = 0  # wait_for_work calls under way
        #: The last wait ended by its timeout: nothing was delivered or announced.
        self._quiet = False
        #: The bands of the queues a wait last asked for: (subject, consumer) each.
        self._bands: tuple[tuple[tuple[str, ...], float], list[tuple[str, str]]] | None = None

    async def close(self) -> None:
        self._wake_subs.clear()
        self._bands = None
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            with contextlib.suppress(nats.errors.Error):
                await waiting.close()
        await super().close()

    @property
    def _pulls(self) -> WaitingPulls:
        """This connection's waiting pulls (a reopened store starts afresh)."""
        if self._waiting is None or self._waiting.nc is not self.nc:
            self._waiting = WaitingPulls(self.nc, self.stream, self._work.set)
        return self._waiting

    def _band_subject(self, queue: str, band: int) -> str:
        return f"{self.prefix}.q.{token(queue)}.{band}"

    async def _backlog(self, queues: Sequence[str]) -> dict[tuple[str, int], int]:
        """Messages stored per (queue, band) — one call instead of a pull per band."""
        by_token = {token(q): q for q in queues}
        pattern = (
            f"{self.prefix}.q.{next(iter(by_token))}.*"
            if len(by_token) == 1
            else f"{self.prefix}.q.>"
        )
        info = await self.js.stream_info(self.stream, subjects_filter=pattern)
        out: dict[tuple[str, int], int] = {}
        for subject, count in (info.state.subjects or {}).items():
            _, _, queue_token, band = subject.split(".")
            if queue_token in by_token:
                out[(by_token[queue_token], int(band))] = count
        return out

    async def _reserve(
        self, queues: list[str], worker_id: str, lease: float, limit: int
    ) -> list[Task]:
        return await self._pull_and_claim(queues, worker_id, lease, limit, await self.now())

    async def _pull_and_claim(
        self,
        queues: list[str],
        worker_id: str,
        lease: float,
        limit: int,
        at: float,
        screen: Screen | None = None,
    ) -> list[Task]:
        """Lease what is ready, up to ``limit``: first what the waiting pulls delivered
        (enough when it tells the bands are drained, see :meth:`_drained`, or when
        nothing came during a wait that timed out while every band had a pull open:
        whatever is stored would have been handed to one), then band by band, then what
        they delivered meanwhile. A ``screen`` (a limited reserve's)
        sees each pulled batch first and answers the messages that may be claimed,
        having put the others back itself; it also bounds how many messages one call
        pulls (``screen.budget``)."""
        self._last_lease = lease
        pulls = self._pulls
        pulls.accepting = True  # what arrives meanwhile is claimed below
        quiet, self._quiet = self._quiet, False
        try:
            held = pulls.take()
            out = await self._claim_held(held, queues, worker_id, lease, limit, at, screen)
            if len(out) >= limit or ((held or quiet) and self._drained(queues, held)):
                return out
            try:
                out += await self._pull_bands(
                    queues, worker_id, lease, limit - len(out), at, screen
                )
            except Exception:
                if out:
                    return out  # hand out what is leased; the rest comes back after AckWait
                raise
            late = pulls.take()
            room = limit - len(out)
            return out + await self._claim_held(late, queues, worker_id, lease, room, at, screen)
        finally:
            pulls.accepting = self._waits > 0  # else busy: what arrives now goes back

    def _drained(self, queues: list[str], held: Sequence[Msg]) -> bool:
        """Whether the held messages tell that no other ready message is stored: each
        was its band's last one when delivered, and every other band has a pull open,
        which is handed whatever is stored there (a band whose pull delivered is
        pulled again by the next wait, which so finds what came after). Not while a
        consumer's pulls go unanswered (:mod:`.repair`): its open pull is no sign that
        its band is drained, and only the reserve's own pulls lead to its repair."""
        if self._unanswered or any(pending(m) for m in held):
            return False
        spent = {m.subject for m in held}
        return self._pulls.armed(
            [s for q in queues for b in BANDS if (s := self._band_subject(q, b)) not in spent]
        )

    async def _claim_held(
        self,
        held: list[Msg],
        queues: list[str],
        worker_id: str,
        lease: float,
        limit: int,
        at: float,
        screen: Screen | None,
    ) -> list[Task]:
        """Claim messages a waiting pull delivered, higher bands first; those past
        ``limit`` (or a screen's budget), or of queues not asked for now, go back at
        once for another worker."""
        if not held:
            return []
        tokens = {token(q) for q in queues}
        ours = [m for m in held if m.subject.split(".")[-2] in tokens]
        ours.sort(key=lambda m: -int(m.subject.rpartition(".")[2]))
        room = max(min(limit, screen.budget) if screen is not None else limit, 0)
        msgs = ours[:room]
        surplus = [*ours[room:], *(m for m in held if m.subject.split(".")[-2] not in tokens)]
        for msg in surplus:
            await confirm(self.nc, msg.reply, nak_delay(0))
        out, failed = await self._admit_and_claim(msgs, worker_id, lease, at, screen)
        if failed is not None and not out:
            raise failed
        return out  # what failed comes back after AckWait

    async def _admit_and_claim(
        self, msgs: list[Msg], worker_id: str, lease: float, at: float, screen: Screen | None
    ) -> tuple[list[Task], BaseException | None]:
        """Claim delivered messages, those a screen's limits admit: the leased tasks and
        the first failure, if any (what failed comes back after AckWait)."""
        if screen is not None and msgs:
            msgs = await screen.admit(msgs, at)
            at = max(at, screen.not_before)
        try:
            claimed = await self._claim_many(msgs, worker_id, lease, at) if msgs else []
        except Exception as exc:
            claimed = [exc]
        failed = next((e for e in claimed if isinstance(e, BaseException)), None)
        return [t for t in claimed if isinstance(t, Task)], failed

    async def _pull_bands(
        self,
        queues: list[str],
        worker_id: str,
        lease: float,
        limit: int,
        at: float,
        screen: Screen | None,
    ) -> list[Task]:
        """The plain reserve: the bands that hold messages, pulled high to low."""
        if limit <= 0:
            return []
        backlog = await self._backlog(queues)
        if self._unanswered:  # (rare) an emptied band's count no longer stands
            self._forget_unanswered(
                consumer_name(q, b) for q in queues for b in BANDS if not backlog.get((q, b))
            )
        out: list[Task] = []
        for band in BANDS:
            for queue in queues:
                if not backlog.get((queue, band)):
                    continue
                consumer = await self._consumer(queue, band, lease)
                while len(out) < limit:
                    wanted = limit - len(out)
                    if screen is not None:
                        wanted = min(wanted, screen.budget)
                        if wanted <= 0:
                            return out
                    msgs = await self._pull(queue, band, lease, consumer, wanted)
                    pulled = len(msgs)
                    tasks, failed = await self._admit_and_claim(msgs, worker_id, lease, at, screen)
                    out += tasks
                    if failed is not None:
                        if out:
                            return out  # hand out what is leased; the rest comes back after AckWait
                        raise failed
                    if pulled < wanted:
                        break
                if len(out) >= limit:
                    return out
        return out

    async def _claim_many(
        self, msgs: Sequence[Msg], worker_id: str, lease: float, at: float
    ) -> list[Task | BaseException | None]:
        """:meth:`_claim` for a pulled batch in at most two batched steps, each one wait:
        read the records the messages do not carry, then compare-and-set the ready ones
        to ``RUNNING`` together with the batch's lease entry. Any other message (and a
        lost compare-and-set) goes through :meth:`_claim`."""
        carried = [_carried(m) for m in msgs]
        ids = [c[0] for c in carried]
        unread = [i for i, (tid, found) in enumerate(carried) if tid and found is None]
        read = set()
        for i, entry in zip(
            unread,
            await self.inbox.get(self._tasks_bucket, [token(ids[i]) for i in unread]),
            strict=True,
        ):
            if entry is not None:
                try:
                    carried[i] = (ids[i], (task_decoder.decode(entry[0]), entry[1]))
                except Exception as exc:
                    carried[i] = (ids[i], (_stand_in(ids[i], exc), entry[1]))
                read.add(i)
        claims: list[tuple[int, Task, Task, int]] = []  # (index, record, running, revision)
        slow: dict[int, tuple[Task, int] | None] = {}
        claiming: set[str] = set()  # a second message for a task in the batch goes the slow way
        for i, (_, found) in enumerate(carried):
            record = found[0] if found is not None else None
            if (
                found is not None
                and record is not None
                and record.id not in claiming
                and record.state in READY_STATES
                and (record.expires_at is None or record.expires_at > at)
                and (record.eta is None or record.eta <= at)
            ):
                claims.append((i, record, self._running(record, worker_id, lease, at), found[1]))
                claiming.add(record.id)
            else:
                slow[i] = found if i in read else None  # a carried copy may be stale: read
        # The lease entry goes with the compare-and-sets, listing every attempt: one that
        # loses never holds its lease, and a sweep drops such a listing (see _lapse_batch).
        out: list[Task | BaseException | None] = [None] * len(msgs)
        listed = {
            ids[i]: _Listed(ids[i], running.lease_token or "", at + lease, msgs[i].reply)
            for i, _, running, _ in claims
        }
        key = self._batch_key() if claims else ""  # (a spare one is overwritten: _retire)
        replies = (
            await self.inbox.ask(
                [
                    *puts(
                        self._tasks_bucket,
                        [
                            (token(ids[i]), encoder.encode(running), rev)
                            for i, _, running, rev in claims
                        ],
                    ),
                    *puts(
                        f"{self.prefix}_leases",
                        [(key, encoder.encode(list(listed.values())), None)],
                    ),
                ]
            )
            if claims
            else []
        )
        revs = revisions(replies)
        won: list[tuple[int, Task, int]] = []
        # One revision per claim, then the lease entry's (revs[-1], used below).
        for (i, _, running, _), rev in zip(claims, revs[:-1], strict=True):
            if rev == WRONG_REVISION:
                slow[i] = None  # changed since the read: read again
                listed.pop(ids[i], None)
            else:
                won.append((i, running, rev))
        if claims and not won:
            with contextlib.suppress(nats.errors.Error):  # best effort: a sweep drops it later
                await self._remove_entries([(key, revs[-1])])
        if won:
            self._batches[key] = (listed, revs[-1])
            if len(claims) == 1:  # (the entry lists one lease: see _retire)
                self._singles.add(key)
            stale = [
                self._forget(ids[i]) for i, _, _ in won if ids[i] in self._held
            ]  # an older lease of ours
            for i, running, rev in won:
                self._held[ids[i]] = _Held(listed[ids[i]].lease(), 0, running, rev, key)
                out[i] = running
            if stale:
                with contextlib.suppress(nats.errors.Error):  # best effort: a sweep drops it later
                    await self._remove_entries(stale)
        others = list(slow)
        claimed = await asyncio.gather(
            *(self._claim(msgs[i], worker_id, lease, at, slow[i]) for i in others),
            return_exceptions=True,
        )
        for i, task in zip(others, claimed, strict=True):
            out[i] = task
        return out

    def _running(self, task: Task, worker_id: str, lease: float, at: float) -> Task:
        return lifecycle.leased(task, worker_id, uuid.uuid4().hex, lease, at)

    async def _claim(
        self,
        msg: Msg,
        worker_id: str,
        lease: float,
        at: float,
        found: tuple[Task, int] | None = None,
    ) -> Task | None:
        """Check one delivered message against its record (``found``: as just read) and
        lease the task, or put the message back (nak with a delay) or away (ack) as the
        record says."""
        task_id = _message_task_id(msg)
        if not task_id:  # not one of ours: never let it block the queue
            await confirm(self.nc, msg.reply, _ACK)
            return None
        while True:
            if found is None:
                found = await self._read(task_id)
            if found is None and (delay := await self._early(msg)) is not None:
                await confirm(self.nc, msg.reply, nak_delay(delay))  # its record may come
                return None
            if found is None or found[0].state in TERMINAL_STATES:
                await confirm(self.nc, msg.reply, _ACK)  # purged or finished: a stale message
                return None
            task, rev = found
            if task.state is TaskState.WAITING:
                settled = await self._settle(task_id)
                if settled is not None and settled.state in READY_STATES:
                    found = None
                    continue
                await confirm(self.nc, msg.reply, _ACK)  # its real message comes when it settles
                return None
            if task.state is TaskState.RUNNING:
                await self._recheck_running(task, msg, at)
                return None
            if task.expires_at is not None and task.expires_at <= at:
                await confirm(self.nc, msg.reply, _ACK)  # cleanup() marks it expired
                return None
            if task.eta is not None and task.eta > at:
                await confirm(self.nc, msg.reply, nak_delay(task.eta - at))
                return None
            found = None  # a retry reads again
            running = self._running(task, worker_id, lease, at)
            try:
                rev = await self._tasks.update(token(task_id), encoder.encode(running), last=rev)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            await self._put_lease(
                task_id, _Lease(running.lease_token or "", at + lease, msg.reply), (running, rev)
            )
            return running

    async def _recheck_running(self, task: Task, msg: Msg, at: float) -> None:
        """A message for a running task: its own, redelivered after AckWait, or a
        duplicate. Keep it until the lease may end; recreate a missing lease entry
        (a reserve that died between record and entry) so the lease can lapse."""
        deadline = task.lease_deadline or at
        if deadline <= at:
            key = token(task.id)
            try:
                entry = await self._leases.get(key)
                assert entry.value is not None
                missing = _lease_decoder.decode(entry.value).token != task.lease_token
            except nats.js.errors.KeyNotFoundError:
                missing = True
            if missing:
                await self._leases.put(
                    key, encoder.encode(_Lease(task.lease_token or "", deadline, msg.reply))
                )
        await confirm(self.nc, msg.reply, nak_delay(max(deadline - at, _MIN_RECHECK)))

    async def _wait_for_work(self, queues: list[str], timeout: float) -> None:
        """Wakes on enqueue, release, retry, lapse and dependency release (core NATS
        messages on ``<prefix>.wake.<queue>``) and on a message a waiting pull delivers,
        which includes a delayed task come due."""
        for queue in queues:
            if queue not in self._wake_subs:
                self._wake_subs[queue] = await self.nc.subscribe(
                    f"{self.prefix}.wake.{token(queue)}", cb=self._on_wake
                )
        self._waits += 1
        self._quiet = False
        try:
            await self._arm(queues, timeout)
            if not self._pulls.held:
                async with asyncio.timeout(timeout):  # (no task per wait, unlike wait_for:
                    await self._work.wait()  # one loop hop less from a delivery to the claim)
        except TimeoutError:
            # The next reserve asks the server nothing while every band keeps a pull
            # open (see _pull_and_claim): an idle worker's timed-out waits cost no
            # STREAM.INFO and pull each, which went out just as a task's message came.
            self._quiet = not self._pulls.held
        finally:
            self._waits -= 1
        self._work.clear()

    async def _arm(self, queues: list[str], timeout: float) -> None:
        """Open the waiting pulls on every band of ``queues``, once a reserve told the
        lease their consumers' AckWait follows (before that, wake-ups alone wake)."""
        lease = self._last_lease
        if lease is None:
            self._pulls.accepting = True
            return
        key = (tuple(queues), lease)
        if self._bands is None or self._bands[0] != key:
            wanted = [(q, b) for q in queues for b in BANDS]
            names = await asyncio.gather(*(self._consumer(q, b, lease) for q, b in wanted))
            subjects = [self._band_subject(q, b) for q, b in wanted]
            self._bands = (key, list(zip(subjects, names, strict=True)))
        await self._pulls.arm(self._bands[1], timeout)

    async def _on_wake(self, msg: Msg) -> None:
        """A wake-up names the task it is for (an empty one, from an older writer, names
        none): one a waiting pull already delivered here brings nothing new."""
        if not msg.data or msg.data.decode(errors="replace") not in self._pulls.seen:
            self._work.set()
