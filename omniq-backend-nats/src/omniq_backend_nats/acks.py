"""The replies to batched requests, read straight from the client's receive buffer.

A bulk enqueue gets two acknowledgements per task. Through nats-py each one is matched
by a regular expression, cut from the buffer (moving the rest of it), made a message,
queued to the subscription's task and handed to its callback: more of the client's CPU
than sending the request. Here the header-less ``MSG`` frames of the inbox's
subscription at the head of the buffer are read in one pass and answered at once (one
cut short waits in the buffer for its rest); any other frame (with a reply subject or
headers, of another subscription) and everything after it is left to the client's
parser, in order.

This reads the client's private parser (its buffer, its state and ``parse``) and the
subscription's id: where they are missing or not as expected, nothing is installed and
the replies go the public way, through the subscription's callback.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["deliver_in_place", "read_replies_fast"]

#: The client parser's state between frames (``nats.protocol.parser``).
_AWAITING_CONTROL_LINE = 1


def read_replies_fast(
    nc: Client, sub: Subscription, prefix: str, answer: Callable[[str, Msg], None]
) -> bool:
    """Have the frames of ``sub`` (on ``prefix`` + a key) read here, each handed to
    ``answer(key, msg)``; False, and nothing changed, when the client lacks what that
    needs."""
    parser: Any = getattr(nc, "_ps", None)
    sid = getattr(sub, "_id", None)
    if (
        parser is None
        or not isinstance(sid, int)
        or not isinstance(getattr(parser, "buf", None), bytearray)
        or getattr(parser, "state", None) is None
        or not callable(getattr(parser, "parse", None))
        or not isinstance(getattr(nc, "stats", None), dict)
    ):
        return False
    try:
        Msg(_client=nc, subject=prefix, data=b"", _sid=sid)
    except TypeError:
        return False
    parse = parser.parse
    head = b"MSG " + prefix.encode()
    # MSG <subject> <sid> <size>: the size right after the sid (else a reply subject
    # comes between); nats-server 2.9 puts two spaces where a reply subject would be.
    frame = re.compile(re.escape(head) + rb"([^ \t\r\n]+)[ \t]+%d[ \t]+(\d+)\r\n" % sid)
    match = frame.match
    stats = nc.stats

    async def read(data: bytes = b"") -> None:
        buf: bytearray = parser.buf
        buf.extend(data)
        partial = False
        if parser.state == _AWAITING_CONTROL_LINE:
            at = count = size_in = 0
            while m := match(buf, at):
                start = m.end()
                key, size = m.group(1, 2)
                end = start + int(size)
                if end + 2 > len(buf):
                    partial = True
                    break
                token = key.decode()
                answer(token, Msg(_client=nc, subject=prefix + token, data=bytes(buf[start:end])))
                at = end + 2
                count += 1
                size_in += end - start
            else:
                # A control line of ours not whole yet: wait for its rest too.
                partial = buf.startswith(head, at) and buf.find(b"\r\n", at) < 0
            if at:
                del buf[:at]
                stats["in_msgs"] += count
                stats["in_bytes"] += size_in
        if not partial:  # (a frame of ours cut short waits for its rest, here)
            await parse(b"")

    parser.parse = read
    return True


log = logging.getLogger(__name__)


class _InPlace(asyncio.Queue[Msg]):
    """A subscription's pending queue that hands each message to ``handle`` as the
    client reads it, instead of queueing it for the subscription's task (which took a
    loop turn to pick it up: a hop between a reply and the coroutine it resumes)."""

    def __init__(self, sub: Subscription, handle: Callable[[Msg], None]) -> None:
        super().__init__()
        self._sub, self._handle = sub, handle

    def put_nowait(self, item: Msg) -> None:
        sub: Any = self._sub
        sub._pending_size -= len(item.data)  # (the client counted it as queued)
        try:
            self._handle(item)
        except Exception:  # (never into the client's read loop)
            log.exception("handling a message of subject %s failed", item.subject)


def deliver_in_place(sub: Subscription, handle: Callable[[Msg], None]) -> bool:
    """Have every message of ``sub`` (one with a callback) handed to ``handle`` in the
    client's read loop, not through the subscription's queue and task: for replies
    with headers (a direct get's), which :func:`read_replies_fast` leaves to the
    client. ``handle`` must not block. False, and nothing changed, when the
    subscription lacks what that needs."""
    queue = getattr(sub, "_pending_queue", None)
    if (
        type(queue) is not asyncio.Queue
        or not queue.empty()
        or not isinstance(getattr(sub, "_pending_size", None), int)
    ):
        return False
    sub._pending_queue = _InPlace(sub, handle)
    return True
