"""Hook specifications: the plugin API's extension points.

A plugin is a module (named by an entry point in the ``omniq.plugins`` group) holding
functions marked ``@omniq.hookimpl`` whose names match the specs below. Hooks are called
with keyword arguments only, and a hook only ever gains arguments: an implementation may
accept any subset of them, so plugins written today keep working.

Two kinds of hooks exist. *Discovery* hooks run once per process, when the registry
first needs what they provide. *Lifecycle* hooks run rarely (configuration, worker start
and stop). Nothing per task goes through pluggy: the hot path is the async store
interfaces in :mod:`omniq.interfaces`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from .config import OmniQConfig
    from .registry import BackendSpec, PoolSpec
    from .worker.runtime import Worker

hookspec = pluggy.HookspecMarker("omniq")
hookimpl = pluggy.HookimplMarker("omniq")


# -- discovery hooks -------------------------------------------------------------------


@hookspec
def omniq_register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Declare the backends this plugin provides.

    Call ``register(BackendSpec(...))`` once per backend. A spec names its classes as
    ``"module:Class"`` strings, so discovery imports nothing heavy; the class is
    imported the first time a config asks for it.

    :param register: takes one :class:`omniq.BackendSpec`.

    Backend authors: keep the plugin module free of imports other than ``omniq`` and
    the standard library, so discovery stays cheap (first-party plugins are checked by
    ``tests/test_plugins.py``).
    """


@hookspec
def omniq_register_pools(register: Callable[[PoolSpec], None]) -> None:
    """Declare execution pools (``--pool NAME``).

    Call ``register(PoolSpec(name=..., pool="module:Class"))``; the class must
    subclass :class:`omniq.interfaces.BasePool`.
    """


@hookspec
def omniq_register_workers(register: Callable[[PoolSpec], None]) -> None:
    """Deprecated since 0.2 (removed in 0.3): the old name of :func:`omniq_register_pools`.

    Still honoured, with a ``DeprecationWarning`` naming the plugin when it is registered.
    """


@hookspec
def omniq_register_cli_commands(cli: click.Group) -> None:
    """Add commands to the ``omniq`` command line: ``@cli.command()`` as usual.

    A plugin may also add an option to a built-in command by appending a
    ``click.Option(..., expose_value=False, callback=...)`` to
    ``cli.commands[name].params`` (``omniq-django`` adds ``omniq worker --django``);
    replacing a built-in command is refused.
    """


# -- lifecycle hooks -------------------------------------------------------------------


@hookspec
def omniq_configure(config: OmniQConfig) -> None:
    """Called once when an app is created with its final configuration.

    Use it to validate plugin-specific settings early; raise
    :class:`omniq.errors.ConfigError` to refuse the configuration.
    """


@hookspec
def omniq_worker_started(worker: Worker) -> Any:
    """A worker has opened its stores and is about to reserve tasks.

    May return an awaitable, which the worker awaits (metrics exporters, health files).
    """


@hookspec
def omniq_worker_stopping(worker: Worker, reason: str) -> Any:
    """A worker stopped reserving and is draining. May return an awaitable.

    :param reason: why it stops (``"signal"``, ``"burst"``, ``"max-tasks"``,
        ``"max-memory"``, ``"error: ..."``).
    """
