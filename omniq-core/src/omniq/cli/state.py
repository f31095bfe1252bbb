"""What the global options decide, and how a command gets its app.

The app is ``--app module:attr`` when given (an :class:`~omniq.app.OmniQ` or
:class:`~omniq.app.AsyncOmniQ` instance), else one built from the configuration, the
environment and the ``--task-queue/--result-storage/--event-storage`` overrides.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import load_config
from ..errors import ConfigError
from ..masking import describe_ref, mask_url

if TYPE_CHECKING:
    from ..app import AsyncOmniQ

__all__ = ["CliState", "describe_ref", "import_app", "scrub"]

T = TypeVar("T")

#: The command-line flags that name stores, and the config keys they override.
STORE_FLAGS = {
    "task_queue": "--task-queue",
    "result_storage": "--result-storage",
    "event_storage": "--event-storage",
}


def scrub(text: str) -> str:
    """Mask every URL's secrets inside ``text``: the last guard before a message is
    printed (the messages quote URLs, and not every backend masks them)."""
    return mask_url(text)


@dataclass
class CliState:
    """Global options, stored on the click context's ``obj``."""

    config: str | None = None
    stores: dict[str, str] = field(default_factory=dict)
    app_ref: str | None = None
    debug: bool = False
    #: The arguments the process was started with (for re-executing a recycled worker);
    #: None when the command line runs in-process (tests).
    argv: list[str] | None = None

    def build_app(self, app_ref: str | None = None, *, create: bool = False) -> AsyncOmniQ:
        """The app for a command: ``--app`` of the command, else the global one, else
        one built from configuration. Only ``create=True`` (the worker) may create a
        store that does not exist yet: for the others a mistyped path must be an error,
        not a new empty store (stores that can tell take the ``create`` option)."""
        ref = app_ref or self.app_ref
        if ref:
            return import_app(ref, self.config, self.stores)
        from ..app import AsyncOmniQ

        if create:
            return AsyncOmniQ(config=self.config, **self.stores)
        explicit: dict[str, Any] = dict(self.stores)
        cfg = load_config(self.config, **explicit)
        queue_ref = cfg.store_ref("task_queue")
        return AsyncOmniQ(
            config=self.config,
            **{
                kind: _without_create(kind, getattr(cfg, kind) or queue_ref) for kind in STORE_FLAGS
            },
        )

    def run(self, app: AsyncOmniQ, action: Callable[[AsyncOmniQ], Awaitable[T]]) -> T:
        """Open the app, run ``action(app)`` on a fresh event loop, close the app."""

        async def main() -> T:
            try:
                await app.open()
                return await action(app)
            finally:
                await app.close()

        return asyncio.run(main())


def _without_create(kind: str, ref: Any) -> Any:
    """``ref`` with ``create=False`` when its store declares that option."""
    from ..registry import registry

    if (isinstance(ref, str) and "://" not in ref) or not isinstance(ref, (str, Mapping)):
        return ref  # a plugin name or an instance: as it is
    store = registry.resolve(kind, ref)  # type: ignore[arg-type]
    if "create" not in type(store).option_schema.names():
        return ref
    return {**(ref if isinstance(ref, Mapping) else {"url": ref}), "create": False}


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (the app module builds
    its app at import, reading configuration through :func:`omniq.load_config`)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def import_app(
    ref: str, config: str | None = None, stores: Mapping[str, str] | None = None
) -> AsyncOmniQ:
    """Import ``module:attr`` and return its async app.

    ``--config`` and the store flags reach the module's app through the environment
    (``OMNIQ_CONFIG``, ``OMNIQ_TASK_QUEUE``, ...), which :func:`omniq.load_config`
    reads; an app that names its stores explicitly wins, so a flag it ignores is an error
    rather than a silent surprise.
    """
    from ..app import AsyncOmniQ, OmniQ

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--app {ref!r}: expected 'module:attribute', e.g. 'myproject.tasks:app'")
    if os.getcwd() not in sys.path:  # like `python -m`: modules of the working directory
        sys.path.insert(0, os.getcwd())
    env = {f"OMNIQ_{k.upper()}": v for k, v in (stores or {}).items()}
    if config:
        env["OMNIQ_CONFIG"] = config
    with _environment(env):
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"--app {ref!r}: cannot import {module_name!r}: {exc}") from exc
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ConfigError(
                    f"--app {ref!r}: module {module_name!r} has no attribute {attr!r}"
                ) from None
    if isinstance(obj, OmniQ):
        obj = obj.aio
    if not isinstance(obj, AsyncOmniQ):
        raise ConfigError(
            f"--app {ref!r} is a {type(obj).__name__}; expected an OmniQ or AsyncOmniQ instance"
        )
    for key, value in (stores or {}).items():
        if getattr(obj.config, key) != value:
            raise ConfigError(
                f"{STORE_FLAGS[key]} {mask_url(value)!r} was given, but app {ref!r} sets {key} to "
                f"{describe_ref(getattr(obj.config, key))!r} in code; drop the flag or the argument"
            )
    return obj
