"""Many JetStream requests in flight on one connection, answered through one inbox and
awaited with one timer.

The worker's hot path writes several KV entries and stream messages per task. Through
``nc.request`` / ``js.publish`` each of them costs a task, a timer, a random token and a
dataclass of the reply, which on a busy host cost more CPU than the server's own work.
Here a batch is published in one go, each reply resolves a plain future by a counter
token, and the whole batch is awaited once: the same requests and the same replies
(every write still waits for the server's acknowledgement), for a fraction of the
client's CPU. A batch's ``PUB`` / ``HPUB`` commands are written to the connection as one
buffer (:func:`_commands`), in place when nothing else is in flight (:meth:`Inbox.post`),
else through the client's own buffer and flusher; where the client
lacks those internals, or the connection is down (the client's reconnect buffering
applies), each message goes through ``Client.publish``. The replies are read from the
client's receive buffer where it allows (:mod:`.acks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from .acks import deliver_in_place, read_replies_fast

__all__ = [
    "WRONG_REVISION",
    "Inbox",
    "Request",
    "Sent",
    "found",
    "messages_held",
    "publishes",
    "purged",
    "puts",
    "removals",
    "revisions",
    "sequences",
    "stream_info",
]

#: ``(subject, payload, headers)`` of one request.
Request = tuple[str, bytes, "dict[str, str] | None"]
#: Error codes of a compare-and-set that found another revision.
_WRONG_LAST = (10071, 10164)
#: What :meth:`Inbox.write` answers for a compare-and-set that found another revision.
WRONG_REVISION = -1
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
T = TypeVar("T")
#: How many writes one bulk call keeps in flight.
_WINDOW = 256


#: The client internals a batch's one write goes through (nats-py's pending buffer, as
#: ``Client.publish`` fills it, and its flusher's kick).
_INTERNALS = ("_send_command", "_flush_pending", "_flush_queue")
_CRLF = b"\r\n"


def _writes_at_once(nc: Any) -> bool:
    """Whether ``nc`` has the internals a one-buffer batch needs."""
    return all(hasattr(nc, name) for name in _INTERNALS)


#: What :meth:`Inbox.post` also uses: the pending buffer's size, its limit, the flusher.
_POSTS = ("_pending", "_pending_data_size", "_max_pending_size", "_flusher_task", "stats")


def _posts(nc: Any) -> bool:
    """Whether ``nc`` has what :meth:`Inbox.post` needs."""
    return all(hasattr(nc, name) for name in _POSTS)


def _writer(nc: Any) -> asyncio.WriteTransport | None:
    """The socket's transport of ``nc`` when a write to it goes out at once (a TCP
    connection, the transport's buffer empty: the client's flusher would wait for no
    drain), else None."""
    writer = getattr(nc._transport, "_io_writer", None)
    transport = getattr(writer, "transport", None)
    if (
        isinstance(transport, asyncio.WriteTransport)
        and not transport.get_write_buffer_size()
        and not transport.is_closing()
    ):
        return transport
    return None


def _commands(messages: Sequence[tuple[str, str, bytes, dict[str, str] | None]]) -> bytes | None:
    """``(subject, reply, payload, headers)`` as one buffer of ``PUB`` / ``HPUB`` commands
    of the NATS protocol; None when one needs ``Client.publish``'s care (an empty
    subject, a header that is not a plain ``key: value`` line as given)."""
    parts: list[bytes] = []
    add = parts.append
    for subject, reply, payload, headers in messages:
        if not subject:
            return None
        if headers is None:
            add(f"PUB {subject} {reply} {len(payload)}\r\n".encode())
        else:
            lines = ["NATS/1.0\r\n"]
            for key, value in headers.items():
                if not _plain(key, value):
                    return None
                lines.append(f"{key}: {value}\r\n")
            lines.append("\r\n")
            head = "".join(lines).encode()
            size = len(head) + len(payload)
            add(f"HPUB {subject} {reply} {len(head)} {size}\r\n".encode())
            add(head)
        add(payload)
        add(_CRLF)
    return b"".join(parts)


def _plain(key: str, value: str) -> bool:
    """A header ``Client.publish`` would send unchanged (it strips and drops newlines)."""
    return (
        bool(key)
        and ":" not in key
        and key == key.strip()
        and " " not in key
        and "\r" not in value
        and "\n" not in value
        and value == value.strip()
    )


def _status(msg: Msg) -> str | None:
    """The status code of a control reply (404, 408, 503...), else None."""
    return msg.headers.get("Status") if msg.headers else None


def _answer(msg: Msg) -> dict[str, Any]:
    """The JSON reply of a JetStream API call or publish; raises its error."""
    if _status(msg) == "503":
        raise nats.js.errors.NoStreamResponseError
    answer: dict[str, Any] = json.loads(msg.data)
    if "error" in answer:
        raise nats.js.errors.APIError.from_error(answer["error"])
    return answer


class Inbox:
    """Replies to this connection's batched requests: one wildcard subscription, one
    future per request in flight, keyed by a counter."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._sub: Subscription | None = None
        #: Reply token -> the send waiting for it and the request's place in it.
        self._waiting: dict[str, tuple[Sent, int]] = {}
        self._count = 0
        self._opening = asyncio.Lock()
        #: Whether a batch goes out as one buffer (see :meth:`_publish`).
        self.at_once = _writes_at_once(nc)
        #: What :meth:`post` hands the flusher (it sets a kick's future when done: one
        #: already done serves every kick); None when posting in place is not possible.
        self._kick: asyncio.Future[None] | None = None
        #: Whether :meth:`_write_pending` is due on the loop's next turn.
        self._soon = False
        #: Whether to read replies from the client's buffer (:mod:`.acks`), and whether
        #: that is done (set when the inbox opens).
        self.read_fast = True
        self.reads_fast = False
        #: Set inside :meth:`one_write`: posts wait in the client's buffer for its end.
        self._holding = False

    async def _open(self) -> None:
        if self._sub is None:
            async with self._opening:
                if self._sub is None:
                    prefix = self.nc.new_inbox() + "."
                    self._prefix = prefix
                    self._sub = await self.nc.subscribe(prefix + "*", cb=self._on_reply)
                    if self.at_once and _posts(self.nc):
                        kick = asyncio.get_running_loop().create_future()
                        kick.set_result(None)
                        self._kick = kick
                    if self.read_fast:
                        self.reads_fast = read_replies_fast(self.nc, self._sub, prefix, self._reply)
                        deliver_in_place(self._sub, self._in_place)

    async def _on_reply(self, msg: Msg) -> None:
        self._reply(msg.subject[len(self._prefix) :], msg)

    def _in_place(self, msg: Msg) -> None:
        self._reply(msg.subject[len(self._prefix) :], msg)

    def _reply(self, key: str, msg: Msg) -> None:
        found = self._waiting.pop(key, None)
        if found is not None:
            found[0].answer(found[1], msg)

    async def pull(self, stream: str, consumer: str, batch: int) -> list[Msg]:
        """Fetch up to ``batch`` messages that are deliverable now, without waiting for
        more: a ``no_wait`` pull answers at once (the client's own ``fetch`` may leave a
        lingering pull request on the server that captures the next message into a dead
        inbox). Delivered messages carry their stream subject, not the inbox's, so each
        pull has a subscription of its own; its callback collects the batch."""
        out: list[Msg] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def collect(msg: Msg) -> None:
            if done.done():
                return
            if _status(msg) is None:  # a status (404 no messages, 408...) ends the batch
                out.append(msg)
                if len(out) < batch:
                    return
            done.set_result(None)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=collect)
        try:
            request = json.dumps({"batch": batch, "no_wait": True}).encode()
            await self.nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", request, reply=inbox
            )
            try:
                async with asyncio.timeout(self.timeout):
                    await done
            except TimeoutError:
                raise nats.errors.TimeoutError from None
            return out
        finally:
            await sub.unsubscribe()

    async def ask(self, requests: Sequence[Request], *, tell: Sequence[Request] = ()) -> list[Msg]:
        """Send ``requests`` and return their replies in order (one wait for all), after
        publishing ``tell`` with no reply wanted. Raises ``nats.errors.TimeoutError``
        when a reply is missing after the timeout, like ``nc.request``."""
        return await (await self.send(requests, tell=tell)).replies()

    async def send(self, requests: Sequence[Request], *, tell: Sequence[Request] = ()) -> Sent:
        """:meth:`ask` without the wait: the requests are on their way (buffered by the
        client, flushed by its flusher) and :meth:`Sent.replies` waits for the answers,
        so a caller can send the next requests meanwhile (a pipeline)."""
        await self._open()
        # In place where it can be (see post): a send with nothing else in flight, the
        # worker's read, claim, completion and results of a task, reaches the socket
        # now instead of on the flusher's turn, one loop hop later each.
        posted = self.post(requests, tell=tell)
        if posted is not None:
            return posted
        sent = Sent(self, len(requests))
        messages = [(subject, "", payload, headers) for subject, payload, headers in tell]
        prefix, waiting = self._prefix, self._waiting
        for i, (subject, payload, headers) in enumerate(requests):
            self._count += 1
            key = str(self._count)
            waiting[key] = (sent, i)
            sent.keys.append(key)
            messages.append((subject, prefix + key, payload, headers))
        try:
            await self._publish(messages)
        except BaseException:
            sent.forget()
            raise
        return sent

    async def _publish(
        self, messages: Sequence[tuple[str, str, bytes, dict[str, str] | None]]
    ) -> None:
        """Publish ``(subject, reply, payload, headers)`` in order: as one buffer handed
        to the client's pending writes and one kick of its flusher, as
        ``Client.publish`` does for each (the same checks first: the connection's state
        and ``max_payload``), or, without the internals, on a connection that is not up
        or for a message :func:`_commands` leaves to it, one ``Client.publish`` each."""
        nc: Any = self.nc
        if self.at_once and nc.is_connected and not nc.is_draining_pubs:
            limit = nc.max_payload
            if any(len(payload) > limit for _, _, payload, _ in messages):
                raise nats.errors.MaxPayloadError
            buffer = _commands(messages)
            if buffer is not None:
                nc.stats["out_msgs"] += len(messages)
                nc.stats["out_bytes"] += sum(len(payload) for _, _, payload, _ in messages)
                await nc._send_command(buffer)
                if nc._flush_queue is not None and nc._flush_queue.empty():
                    await nc._flush_pending()
                return
        publish = self.nc.publish
        for subject, reply, payload, headers in messages:
            await publish(subject, payload, reply=reply, headers=headers)

    def post(self, requests: Sequence[Request], *, tell: Sequence[Request] = ()) -> Sent | None:
        """:meth:`send` for one call's few requests (a ``delay()``, its wake-up), done in
        place: the same one buffer (:func:`_commands`) appended to the client's pending
        writes and the same kick of its flusher, without the coroutines of
        ``_send_command`` and ``_flush_pending`` (nor their future and queue put). None,
        and nothing sent, when that cannot be done so (the inbox not open yet, the
        client without the internals, the connection not up, a buffer over the
        client's limit): then :meth:`send` does it."""
        nc: Any = self.nc
        kick = self._kick
        if kick is None or self._sub is None or not nc.is_connected or nc.is_draining_pubs:
            return None
        flusher = nc._flusher_task
        if flusher is None or flusher.done():  # (a kick it would never see)
            return None
        limit = nc.max_payload
        messages = [(subject, "", payload, headers) for subject, payload, headers in tell]
        start = self._count
        prefix = self._prefix
        for i, (subject, payload, headers) in enumerate(requests, start + 1):
            if len(payload) > limit:
                return None
            messages.append((subject, f"{prefix}{i}", payload, headers))
        buffer = _commands(messages)
        queue = nc._flush_queue
        if (
            buffer is None
            or queue is None
            or (0 < nc._max_pending_size < nc._pending_data_size + len(buffer))
        ):
            return None
        # Alone (no other request of this inbox awaits a reply, the socket takes it at
        # once): requests are written now, with whatever waits in the client's buffer, as
        # the flusher would write them on the loop's next turn (one turn less per call);
        # a post without requests (a wake-up) waits in the buffer for the next one's
        # write, or the loop's next turn, whichever comes first: never later than the
        # flusher would. Otherwise it joins the flusher's next write, with the others in
        # flight.
        alone = not self._waiting and not self._holding
        writer = _writer(nc) if alone and requests else None
        sent = Sent(self, len(requests))
        waiting, keys = self._waiting, sent.keys
        for i in range(len(requests)):
            key = str(start + 1 + i)
            waiting[key] = (sent, i)
            keys.append(key)
        self._count = start + len(requests)
        nc.stats["out_msgs"] += len(messages)
        nc.stats["out_bytes"] += sum(len(payload) for _, _, payload, _ in messages)
        pending: list[bytes] = nc._pending
        if writer is not None:
            if pending:
                pending.append(buffer)
                writer.writelines(pending)
                nc._pending, nc._pending_data_size = [], 0
            else:
                writer.write(buffer)
            return sent
        pending.append(buffer)
        nc._pending_data_size += len(buffer)
        if self._holding:
            return sent  # (written when the block ends)
        if alone and not requests:
            if not self._soon:
                self._soon = True
                asyncio.get_running_loop().call_soon(self._write_pending)
        elif queue.empty():
            queue.put_nowait(kick)
        return sent

    @contextlib.contextmanager
    def one_write(self) -> Iterator[None]:
        """Hold what :meth:`post` (and so :meth:`send`) is given inside the block in the
        client's buffer, and write it all when the block ends, in order, as one write
        (or kick the flusher, when the socket is backed up): a finish's results and then
        its acks, lease entry removals and dependents check reach the server together,
        before the next task's messages, instead of one or two loop turns later each."""
        if self._holding:  # (nested: the outer block writes)
            yield
            return
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            if getattr(self.nc, "_pending", None):  # (else written already)
                self._write_pending()

    def _write_pending(self) -> None:
        """The loop's turn after a post without requests: write what the client's buffer
        holds, as its flusher would (or kick the flusher, when the socket is backed up)."""
        self._soon = False
        nc: Any = self.nc
        if not nc._pending or not nc.is_connected:
            return  # (written meanwhile; or kept for the reconnect, as the client does)
        writer = _writer(nc)
        if writer is None:
            queue = nc._flush_queue
            if self._kick is not None and queue is not None and queue.empty():
                queue.put_nowait(self._kick)
            return
        writer.writelines(nc._pending)
        nc._pending, nc._pending_data_size = [], 0

    # -- the requests the stores make --------------------------------------------------

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        """Publish to streams and wait for every acknowledgement: stream sequences."""
        return sequences(await self.ask(publishes(messages)))

    async def get(self, bucket: str, keys: Sequence[str]) -> list[tuple[bytes, int] | None]:
        """KV entries ``(value, revision)`` by direct get; None for a missing key."""
        prefix = f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}."
        replies = await self.ask([(prefix + key, b"", None) for key in keys])
        out: list[tuple[bytes, int] | None] = []
        for msg in replies:
            status = _status(msg)
            if status == "404":
                out.append(None)
                continue
            if status is not None:
                raise nats.js.errors.APIError.from_msg(msg)
            headers = msg.headers or {}
            if headers.get(KV_OP) in (KV_DEL, KV_PURGE):
                out.append(None)
                continue
            out.append((msg.data, int(headers["Nats-Sequence"])))
        return out

    async def write(
        self,
        bucket: str,
        entries: Sequence[tuple[str, bytes, int | None]],
        *,
        tell: Sequence[Request] = (),
    ) -> list[int]:
        """Put KV entries ``(key, value, last)``: with ``last`` a compare-and-set on that
        revision. Each answer is the new revision, or :data:`WRONG_REVISION`."""
        return revisions(await self.ask(puts(bucket, entries), tell=tell))

    async def remove(
        self, bucket: str, keys: Sequence[tuple[str, int | None]], *, tell: Sequence[Request] = ()
    ) -> list[bool]:
        """``NatsStore.remove_key`` for many ``(key, revision)``: whether each removed
        something."""
        return purged(await self.ask(removals(bucket, keys), tell=tell))

    async def stream_messages(self, stream: str) -> int:
        """How many messages ``stream`` holds (its info, without the subject list)."""
        (msg,) = await self.ask([stream_info(stream)])
        return messages_held(msg)


class Sent:
    """The replies to one :meth:`Inbox.send`: one future for the whole batch, set when
    the last reply arrives (no future, task or timer per request)."""

    def __init__(self, inbox: Inbox, count: int) -> None:
        self.inbox = inbox
        #: Set by a caller that read the replies and found no error.
        self.checked = False
        self.keys: list[str] = []
        self._msgs: list[Msg | None] = [None] * count
        self._left = count
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not count:
            self._done.set_result(None)

    def answer(self, i: int, msg: Msg) -> None:
        if self._msgs[i] is None:
            self._msgs[i] = msg
            self._left -= 1
            if not self._left and not self._done.done():
                self._done.set_result(None)

    def _expire(self) -> None:
        """The wait's timeout: end it with replies missing."""
        if not self._done.done():
            self._done.set_result(None)

    def forget(self) -> None:
        """Stop routing replies here (an abandoned or finished send)."""
        waiting = self.inbox._waiting
        for key in self.keys:
            waiting.pop(key, None)

    async def replies(self) -> list[Msg]:
        """The replies in the order of the requests; ``nats.errors.TimeoutError`` when
        one is missing after the inbox's timeout (again on a second call)."""
        done = self._done
        try:
            if self._left and not done.done():
                # (A timer handle, not asyncio.timeout(): the same wait for less work, as
                # a delay() waits once per call.)
                timer = done.get_loop().call_later(self.inbox.timeout, self._expire)
                try:
                    await done
                finally:
                    timer.cancel()
        finally:
            if self._left:
                self.forget()
        if self._left:
            raise nats.errors.TimeoutError
        return cast("list[Msg]", self._msgs)


# -- requests to combine in one ask -------------------------------------------------------


def publishes(messages: Sequence[tuple[str, bytes]]) -> list[Request]:
    """Stream publishes ``(subject, data)``; :func:`sequences` reads their replies."""
    return [(subject, data, None) for subject, data in messages]


def _sequence(msg: Msg) -> int:
    """The stream sequence of a publish's acknowledgement, ``{"stream":..,"seq":N,..}``,
    read without a JSON parse when it plainly is one (a bulk enqueue reads thousands);
    anything else goes through :func:`_answer`, which raises its error."""
    data = msg.data
    at = data.find(b'"seq":')
    if at > 0 and not msg.headers and b'"error"' not in data:
        end = data.find(b",", at)
        try:
            return int(data[at + 6 : end if end > 0 else data.find(b"}", at)])
        except ValueError:
            pass
    return int(_answer(msg)["seq"])


def sequences(replies: Sequence[Msg]) -> list[int]:
    """The stream sequences of acknowledged publishes; raises the first error."""
    return [_sequence(msg) for msg in replies]


def removals(bucket: str, keys: Sequence[tuple[str, int | None]]) -> list[Request]:
    """Purges of KV keys ``(key, revision)`` (see :meth:`Inbox.remove`); :func:`purged`
    reads their replies."""
    requests: list[Request] = []
    for key, revision in keys:
        request: dict[str, Any] = {"filter": f"$KV.{bucket}.{key}"}
        if revision is not None:
            request["seq"] = revision + 1
        requests.append((f"$JS.API.STREAM.PURGE.KV_{bucket}", json.dumps(request).encode(), None))
    return requests


def purged(replies: Sequence[Msg]) -> list[bool]:
    """Whether each purge removed something; raises the first error."""
    return [bool(_answer(msg).get("purged")) for msg in replies]


def found(reply: Msg) -> bool:
    """Whether a direct get found a message (404: none); raises any other error."""
    status = _status(reply)
    if status == "404":
        return False
    if status is not None:
        raise nats.js.errors.APIError.from_msg(reply)
    return True


def stream_info(stream: str) -> Request:
    """The info request of ``stream`` (without its subject list); :func:`messages_held`
    reads its reply."""
    return (f"$JS.API.STREAM.INFO.{stream}", b"", None)


def messages_held(reply: Msg) -> int:
    """How many messages a stream holds, from its info; raises an error reply."""
    return int(_answer(reply)["state"]["messages"])


def puts(bucket: str, entries: Sequence[tuple[str, bytes, int | None]]) -> list[Request]:
    """KV puts ``(key, value, last)`` (with ``last``, a compare-and-set on that
    revision); :func:`revisions` reads their replies."""
    return [
        (f"$KV.{bucket}.{key}", value, None if last is None else {_EXPECTED_LAST: str(last)})
        for key, value, last in entries
    ]


def revisions(replies: Sequence[Msg]) -> list[int]:
    """The new revision of each put, or :data:`WRONG_REVISION` for a compare-and-set
    that found another revision; raises any other error."""
    out = []
    for msg in replies:
        try:
            out.append(_sequence(msg))
        except nats.js.errors.APIError as exc:
            if exc.err_code not in _WRONG_LAST:
                raise
            out.append(WRONG_REVISION)
    return out


async def _windowed(items: Sequence[T], call: Callable[[T], Awaitable[Any]]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(items), _WINDOW):
        out += await asyncio.gather(*(call(i) for i in items[start : start + _WINDOW]))
    return out
