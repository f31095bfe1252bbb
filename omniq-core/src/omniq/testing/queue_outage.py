"""The rule for a server that cannot be reached: a call raises
:class:`~omniq.errors.BackendUnavailableError` naming the store's URL with its password
masked, once the backend's ``outage_timeout`` option (seconds) has passed; never a
client library's own error, and never a wait without end.

A backend whose stores talk to a server over TCP overrides ``task_queue_server_ref``
with a ref like ``task_queue_ref`` whose URL names one ``host:port``. The suite points
that URL at a closed port, and at a proxy process of its own that it kills with
``kill -9`` while the store is open; the shared server is never touched.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import pytest

from ..config import mask_url
from ..errors import BackendUnavailableError
from ..interfaces import BaseTaskQueue
from ..lifecycle import applied
from ..models import TaskState
from ..registry import registry
from .actions import reserved
from .factories import make_task
from .proxies import Proxy, forwarding

__all__ = ["OUTAGE_TIMEOUT", "OutageTests"]

#: The ``outage_timeout`` the suite configures, and the slack it allows on top (one
#: connection attempt, process start-up on a busy machine).
OUTAGE_TIMEOUT = 1.0
SLACK = 4.0
#: Stands in for a password in the URLs the suite builds; it must never be printed.
SECRET = "conformance-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redirect(ref: Any, port: int, password: str | None = None) -> dict[str, Any]:
    """``ref`` as a mapping whose URL points at 127.0.0.1:``port``, with
    ``outage_timeout`` set and, given ``password``, that password in the URL."""
    data = dict(ref) if isinstance(ref, Mapping) else {"url": ref}
    parts = urlsplit(data["url"])
    userinfo = parts.netloc.rpartition("@")[0]
    if password is not None:
        userinfo = f"{parts.username or 'omniq'}:{password}"
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    data["url"] = urlunsplit(parts._replace(netloc=netloc))
    data["outage_timeout"] = OUTAGE_TIMEOUT
    return data


@asynccontextmanager
async def _through_proxy(
    server_ref: Any,
) -> AsyncIterator[tuple[Proxy, dict[str, Any], BaseTaskQueue]]:
    """A task queue open on ``server_ref``'s server through a proxy of its own: the
    proxy, the store's ref and the store (closed on exit, then the proxy killed)."""
    url = server_ref["url"] if isinstance(server_ref, Mapping) else server_ref
    with forwarding(url) as proxy:
        ref = _redirect(server_ref, proxy.port)
        store = cast(BaseTaskQueue, registry.resolve("task_queue", ref))
        await store.open()
        try:
            yield proxy, ref, store
        finally:
            await store.close()


class OutageTests:
    """Mixed into :class:`~omniq.testing.TaskQueueContract`."""

    @pytest.fixture
    def task_queue_server_ref(self) -> Any:
        """Override for a store with a TCP server: ``task_queue_ref`` is usually right.
        None (the default) skips these tests."""
        return None

    @pytest.fixture
    def server_ref(self, task_queue_server_ref: Any) -> Any:
        if task_queue_server_ref is None:
            pytest.skip("no task_queue_server_ref: the store has no server to lose")
        return task_queue_server_ref

    def _check(
        self, error: BackendUnavailableError, ref: Mapping[str, Any], started: float
    ) -> None:
        took = time.monotonic() - started
        assert took < OUTAGE_TIMEOUT + SLACK, (
            f"BackendUnavailableError came after {took:.1f} s with outage_timeout={OUTAGE_TIMEOUT}"
        )
        text = str(error)
        assert mask_url(ref["url"]) in text, f"the error should name {mask_url(ref['url'])}: {text}"
        assert SECRET not in text, f"the error prints the password: {text}"

    async def test_an_unreachable_server_raises_backend_unavailable(self, server_ref: Any) -> None:
        """Opening, then enqueueing, against a closed port."""
        ref = _redirect(server_ref, _free_port(), password=SECRET)
        store = cast(BaseTaskQueue, registry.resolve("task_queue", ref))

        async def open_and_enqueue() -> None:
            await store.open()
            try:
                await store.enqueue(make_task())
            finally:
                await store.close()

        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as info:
            await open_and_enqueue()
        self._check(info.value, ref, started)

    @pytest.mark.slow
    async def test_an_enqueue_during_an_outage_raises_backend_unavailable(
        self, server_ref: Any
    ) -> None:
        """The server goes away (kill -9 of the process the store talks to) while the
        store is open: the next enqueue raises within the bound."""
        async with _through_proxy(server_ref) as (proxy, ref, store):
            await store.enqueue(make_task())
            proxy.kill()
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                await store.enqueue(make_task())
            self._check(info.value, ref, started)

    @pytest.mark.slow
    async def test_a_completion_whose_answer_was_lost_reads_as_its_own(
        self, task_queue: BaseTaskQueue, server_ref: Any
    ) -> None:
        """The server applies a completion and the connection drops before its answer
        (the proxy resets it): the call raises, or returns False once a repeat on a new
        connection is refused (its token spent), never True; and the record reads as that
        attempt's own change (``lifecycle.applied``), which is how the worker tells it from
        a lease lost and writes the result it would otherwise drop."""
        task = await reserved(task_queue)
        async with _through_proxy(server_ref) as (proxy, _, store):
            # A completion first, so that whatever a store loads on its first one (a
            # script the server answers "unknown" to) is loaded: the cut must lose the
            # answer of a completion the server ran, not of one it refused to run.
            first = await reserved(store)
            assert await store.complete(first.id, first.lease_token or "", TaskState.SUCCEEDED)
            proxy.lose_next_answer(TaskState.SUCCEEDED.value)
            try:
                done = await store.complete(task.id, task.lease_token or "", TaskState.SUCCEEDED)
            except Exception:
                done = None
            proxy.cut()  # (the completion went through it, naming its new state)
            assert done is not True, "the answer was lost: the call cannot know it succeeded"
        record = await task_queue.get(task.id)
        assert applied(record, task, TaskState.SUCCEEDED), (
            f"the server applied the completion, and the record should read as this attempt's: "
            f"{record}"
        )
