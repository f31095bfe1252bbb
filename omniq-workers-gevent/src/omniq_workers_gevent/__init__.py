"""OmniQ's gevent execution pool (``--pool gevent``).

Importing this package imports nothing from gevent; the pool lives in
:mod:`omniq_workers_gevent.pool` and monkey-patching in :mod:`omniq_workers_gevent.patching`.
"""

from __future__ import annotations

__all__ = ["GeventPool", "patch_process"]


def __getattr__(name: str) -> object:
    # Lazy, so that `import omniq_workers_gevent` (the plugin's parent) does not load gevent.
    if name == "GeventPool":
        from .pool import GeventPool

        return GeventPool
    if name == "patch_process":
        from .patching import patch_process

        return patch_process
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
