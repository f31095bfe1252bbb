"""The 0.2 renames: the execution pool is a pool (``BasePool``, ``PoolSpec``,
``omniq_register_pools``); the 0.1 names still work for one minor version and warn."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

import omniq
from omniq import interfaces
from omniq import registry as registry_module
from omniq.interfaces import BasePool
from omniq.registry import PluginRegistry, PoolSpec


class EchoPool(BasePool):
    """A pool that runs plain calls inline (enough to be registered and loaded)."""

    name = "echo"

    async def run(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        timeout: float | None,
    ) -> Any:
        return func(*args, **kwargs)


class NewPlugin:
    @omniq.hookimpl
    def omniq_register_pools(self, register: Callable[[PoolSpec], None]) -> None:
        register(PoolSpec("echo-new", f"{__name__}:EchoPool", "inline"))


def test_a_pool_registered_with_the_new_names_loads_without_warning():
    reg = PluginRegistry(entry_points=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.register_plugin(NewPlugin(), "new-names")
        assert "echo-new" in reg.pool_names()
        pool_cls = reg.pool("echo-new")
    assert pool_cls is EchoPool
    assert [p.name for p in reg.plugins()[0].pools] == ["echo-new"]
    assert asyncio.run(pool_cls(1).run(divmod, (7, 2), {}, None)) == (3, 1)


def test_a_plugin_implementing_the_old_hook_warns_naming_itself_and_still_works():
    with pytest.warns(DeprecationWarning, match=r"omniq\.WorkerSpec.*omniq\.PoolSpec"):
        WorkerSpec = omniq.WorkerSpec

    class OldPlugin:
        @omniq.hookimpl
        def omniq_register_workers(self, register: Callable[[Any], None]) -> None:
            register(WorkerSpec("echo-old", worker=f"{__name__}:EchoPool"))

    reg = PluginRegistry(entry_points=False)
    with pytest.warns(DeprecationWarning, match="'old-pool-plugin'") as caught:
        reg.register_plugin(OldPlugin(), "old-pool-plugin")
    messages = [str(w.message) for w in caught]
    assert any(
        "'old-pool-plugin'" in m and "omniq_register_workers" in m and "omniq_register_pools" in m
        for m in messages
    ), messages
    assert reg.pool("echo-old") is EchoPool
    assert reg.plugins()[0].as_dict()["pools"] == ["echo-old"]


def test_a_plugin_implementing_both_hooks_registers_its_pools_once_without_warning():
    """A plugin written for 0.1 and 0.2 alike implements both; 0.2 reads the new one."""

    class BothPlugin(NewPlugin):
        @omniq.hookimpl
        def omniq_register_workers(self, register: Callable[[Any], None]) -> None:
            register(PoolSpec("echo-new", f"{__name__}:EchoPool"))

    reg = PluginRegistry(entry_points=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.register_plugin(BothPlugin(), "both-hooks")
        assert reg.pool("echo-new") is EchoPool  # not claimed twice (ambiguous)
    assert [p.name for p in reg.plugins()[0].pools] == ["echo-new"]


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        (interfaces, "BaseWorker", BasePool),
        (registry_module, "WorkerSpec", None),
        (omniq, "WorkerSpec", None),
    ],
)
def test_old_class_names_warn_and_still_work(module, old, new):
    with pytest.warns(DeprecationWarning, match=rf"{module.__name__}\.{old} is deprecated"):
        value = getattr(module, old)
    if new is not None:
        assert value is new
    else:  # WorkerSpec(name, worker, description) builds the PoolSpec it became
        assert value("p", "m:C", "d") == PoolSpec("p", "m:C", "d")
        assert value("p", worker="m:C") == PoolSpec(name="p", pool="m:C")


def test_old_registry_methods_warn_and_still_work():
    reg = PluginRegistry(entry_points=False)
    with pytest.warns(DeprecationWarning, match=r"pool_names\(\)"):
        assert reg.worker_names() == reg.pool_names()
    with pytest.warns(DeprecationWarning, match=r"use pool\(\)"):
        assert reg.worker("async") is reg.pool("async")


def test_unknown_names_are_still_attribute_errors():
    with pytest.raises(AttributeError, match="BaseWorkr"):
        interfaces.BaseWorkr  # noqa: B018
    with pytest.raises(AttributeError):
        omniq.PoolSpecs  # noqa: B018
