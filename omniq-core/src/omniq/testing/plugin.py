"""The pytest plugin for testing an application's own tasks (docs/testing.md).

Installed with omniq-core (entry point ``pytest11``), it adds fixtures only:

- ``omniq_clock``: a :class:`~omniq.testing.inline.JumpClock`, installed for the test.
- ``omniq_store_url``: a fresh ``memory://`` namespace (override it to test on another
  store, e.g. a SQLite file in ``tmp_path``).
- ``omniq_app`` / ``omniq_sync_app``: an :class:`~omniq.AsyncOmniQ` / :class:`~omniq.OmniQ`
  on that store; override one to hand your own app over with
  :func:`~omniq.testing.inline.use_stores`.

Run the queued tasks with ``await run_queued(omniq_app, clock=omniq_clock)`` (or, sync,
``run_queued(omniq_sync_app, clock=omniq_clock)``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..app import AsyncOmniQ, OmniQ
from .inline import JumpClock, memory_url

__all__ = ["omniq_app", "omniq_clock", "omniq_store_url", "omniq_sync_app"]


@pytest.fixture
def omniq_clock() -> Iterator[JumpClock]:
    """A clock that :func:`~omniq.testing.run_queued` jumps over backoffs and delays."""
    with JumpClock() as clock:
        yield clock


@pytest.fixture
def omniq_store_url() -> Iterator[str]:
    """A fresh in-memory store for one test, emptied afterwards."""
    url = memory_url()
    yield url
    try:
        import fsspec
    except ImportError:  # (no memory store was made without it)
        return
    fs = fsspec.filesystem("memory")
    root = url.removeprefix("memory://")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def omniq_app(omniq_store_url: str, omniq_clock: JumpClock) -> AsyncOmniQ:
    """An app on ``omniq_store_url`` for all three stores (it opens on first use; a
    plain fixture, so it serves any async test runner)."""
    return AsyncOmniQ(omniq_store_url)


@pytest.fixture
def omniq_sync_app(omniq_store_url: str, omniq_clock: JumpClock) -> Iterator[OmniQ]:
    """The blocking :class:`~omniq.OmniQ` on ``omniq_store_url``, for sync tests."""
    app = OmniQ(omniq_store_url)
    try:
        yield app
    finally:
        app.close()
