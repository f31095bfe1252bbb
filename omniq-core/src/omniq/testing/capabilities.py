"""Skipping the tests a store does not sign up for.

Capabilities are data (:class:`omniq.interfaces.Capability`): a store class declares
what it supports beyond the required core, and the suite skips exactly the tests that
need something it does not declare. A declared capability is checked as strictly as
the core: declaring ``PRIORITY`` and ignoring it fails.
"""

from __future__ import annotations

import pytest

from ..interfaces import BaseStore, Capability

__all__ = ["requires"]


def requires(store: BaseStore | type[BaseStore], *needed: Capability) -> None:
    """Skip the running test unless ``store``'s class declares every one of ``needed``."""
    cls = store if isinstance(store, type) else type(store)
    missing = [c for c in needed if c not in cls.capabilities]
    if missing:
        names = ", ".join(f"Capability.{c.name}" for c in missing)
        pytest.skip(f"{cls.__qualname__} does not declare {names}")
