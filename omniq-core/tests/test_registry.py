"""Registry behaviour with fake entry points (pluggy's own testing approach)."""

import sys
import textwrap
from types import SimpleNamespace

import pytest

from omniq import registry as registry_module
from omniq.errors import (
    AmbiguousBackendError,
    BackendNotInstalledError,
    ConfigError,
    IncompatiblePluginError,
    UnknownBackendError,
)
from omniq.registry import PluginRegistry

GOOD = """
from omniq import BackendSpec, hookimpl

@hookimpl
def omniq_register_backends(register):
    register(BackendSpec(name="{name}", schemes=({schemes}), task_queue="{mod}:Queue",
                         description="fake"))
"""

STORE = """
from omniq.interfaces import BaseTaskQueue

class Queue(BaseTaskQueue):
    def __init__(self, url, **options):
        self.url, self.options = url, options

    @classmethod
    def from_url(cls, url, **options):
        return cls(url, **options)

for _name in BaseTaskQueue.__abstractmethods__:
    if _name != "from_url":
        setattr(Queue, _name, lambda self, *a, **k: None)
Queue.__abstractmethods__ = frozenset()
"""


class FakeEntryPoint:
    def __init__(self, name, value, dist):
        self.name, self.value = name, value
        self.dist = SimpleNamespace(name=dist, version="1.2.3")

    def load(self):
        __import__(self.value)
        return sys.modules[self.value]


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Write plugin modules into tmp_path and expose them as entry points."""
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = []

    def add(name, source, dist=None, module=None, entry_point=True):
        module = module or f"fake_plugin_{name}_{len(eps)}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        if entry_point:
            eps.append(FakeEntryPoint(name, module, dist or f"omniq-fake-{name}"))
        return module

    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", lambda group: list(eps))
    return add


def backend_plugin(plugins, name, schemes, dist=None):
    store_mod = plugins(f"{name}store", STORE, module=f"fake_store_{name}", entry_point=False)
    return plugins(
        name,
        GOOD.format(name=name, schemes=", ".join(repr(s) for s in schemes) + ",", mod=store_mod),
        dist=dist,
    )


def test_a_broken_plugin_is_reported_by_name_and_others_still_load(plugins):
    backend_plugin(plugins, "good", ["good"])
    plugins("broken", "raise RuntimeError('boom at import')", dist="omniq-broken")
    reg = PluginRegistry()
    infos = {i.name: i for i in reg.plugins()}
    assert "boom at import" in infos["broken"].error and "omniq-broken" in infos["broken"].error
    assert infos["good"].error is None and infos["good"].version == "1.2.3"
    assert type(reg.resolve("task_queue", "good://x")).__name__ == "Queue"
    with pytest.raises(UnknownBackendError, match=r"Plugins that failed to load: .*broken"):
        reg.resolve("task_queue", "nope://x")


def test_strict_mode_reraises(plugins, monkeypatch):
    plugins("broken", "raise RuntimeError('boom')")
    monkeypatch.setenv("OMNIQ_STRICT_PLUGINS", "1")
    with pytest.raises(Exception, match="boom"):
        PluginRegistry().plugins()


def test_disable_and_allow_lists(plugins, monkeypatch):
    backend_plugin(plugins, "alpha", ["alpha"], dist="dist-alpha")
    backend_plugin(plugins, "beta", ["beta"], dist="dist-beta")
    monkeypatch.setenv("OMNIQ_DISABLE_PLUGINS", "alpha")
    listed = {i.name: i.disabled for i in PluginRegistry().plugins()}
    assert listed == {"alpha": True, "beta": False}, "a disabled plugin shows as such"
    monkeypatch.delenv("OMNIQ_DISABLE_PLUGINS")
    monkeypatch.setenv("OMNIQ_LOAD_PLUGINS", "dist-alpha")
    assert {i.name for i in PluginRegistry().plugins()} == {"alpha"}


def test_plugin_without_hooks_or_with_unknown_hook_is_rejected(plugins):
    plugins("empty", "X = 1")
    plugins(
        "typo",
        "from omniq import hookimpl\n@hookimpl\ndef omniq_register_backend(register): pass\n",
    )
    infos = {i.name: i for i in PluginRegistry().plugins()}
    assert "implements no omniq hooks" in infos["empty"].error
    assert "unknown hook 'omniq_register_backend'" in infos["typo"].error
    assert "did you mean 'omniq_register_backends'" in infos["typo"].error


def test_two_plugins_claiming_one_scheme_is_an_explicit_error(plugins):
    backend_plugin(plugins, "one", ["shared"], dist="dist-one")
    backend_plugin(plugins, "two", ["shared"], dist="dist-two")
    reg = PluginRegistry()
    with pytest.raises(AmbiguousBackendError, match=r"one \(dist-one\).*two \(dist-two\)"):
        reg.resolve("task_queue", "shared://x")
    # Naming the plugin resolves the conflict.
    assert reg.resolve("task_queue", {"backend": "two", "url": "shared://x"}).url == "shared://x"


def test_resolution_forms(plugins):
    mod = backend_plugin(plugins, "mem", ["mem"])
    reg = PluginRegistry()
    q = reg.resolve("task_queue", {"backend": "mem", "url": "mem://a", "size": 3})
    assert q.url == "mem://a" and q.options == {"size": 3}
    assert reg.resolve("task_queue", q) is q
    assert reg.resolve("task_queue", "mem").url == "mem://"
    assert reg.resolve("task_queue", "mem+variant://b").url == "mem+variant://b"
    assert reg.resolve("task_queue", "fake_store_mem:Queue").url == ""
    assert mod


@pytest.mark.parametrize(
    ("ref", "error", "message"),
    [
        ("reddis://h", UnknownBackendError, "unknown URL scheme 'reddis'. Did you mean 'redis'?"),
        ("nats://h", BackendNotInstalledError, "pip install 'omniq[nats]'"),
        ("memm", UnknownBackendError, "Did you mean 'mem'?"),
        ("://x", ConfigError, "malformed URL"),
        (42, ConfigError, "expected a URL"),
        ({"url": None}, ConfigError, "needs 'backend'"),
        ("no.such.module:Thing", ConfigError, "cannot import 'no.such.module:Thing'"),
    ],
)
def test_resolution_errors_say_what_to_do(plugins, ref, error, message):
    backend_plugin(plugins, "mem", ["mem"])
    with pytest.raises(
        error,
        match=message.replace("[", r"\[")
        .replace("]", r"\]")
        .replace("?", r"\?")
        .replace("(", r"\(")
        .replace(")", r"\)")
        .replace("+", r"\+"),
    ):
        PluginRegistry().resolve("task_queue", ref)


def test_unknown_backend_lists_installed_and_the_extras_that_would_provide_it(plugins):
    backend_plugin(plugins, "mem", ["mem"])
    reg = PluginRegistry()
    reg.load()
    with pytest.raises(UnknownBackendError) as info:
        reg.resolve("task_queue", "reddis://h")
    text = str(info.value)
    assert "Installed: mem." in text, text
    assert "It comes with pip install 'omniq[redis]'" in text, text
    for extra in ("fsspec", "nats", "postgres", "redis", "sqlite"):
        assert f"pip install 'omniq[{extra}]'" in text, text
    with pytest.raises(UnknownBackendError) as info:
        reg.pool("gevnt")
    text = str(info.value)
    assert "pip install 'omniq[gevent]'" in text and "omniq[redis]" not in text, text


def test_missing_kind_and_wrong_class(plugins):
    store = plugins("x", "class NotAStore: pass\n", module="not_a_store", entry_point=False)
    plugins(
        "bad",
        f"""
from omniq import BackendSpec, hookimpl
@hookimpl
def omniq_register_backends(register):
    register(BackendSpec(name="bad", schemes=("bad",), task_queue="{store}:NotAStore"))
""",
    )
    reg = PluginRegistry()
    with pytest.raises(
        IncompatiblePluginError, match=r"not a subclass of omniq\.interfaces\.BaseTaskQueue"
    ):
        reg.resolve("task_queue", "bad://x")
    with pytest.raises(UnknownBackendError, match="provides no result_storage"):
        reg.resolve("result_storage", "bad://x")


def test_a_misspelt_class_name_is_a_plugin_error_naming_backend_and_module(plugins):
    """``module:Clas`` fails like a module that does not import, not as an AttributeError."""
    store = plugins("y", STORE, module="fake_store_typo", entry_point=False)
    plugins(
        "typo",
        f"""
from omniq import BackendSpec, hookimpl
@hookimpl
def omniq_register_backends(register):
    register(BackendSpec(name="typo", schemes=("typo",), task_queue="{store}:Queu"))
""",
    )
    with pytest.raises(BackendNotInstalledError) as info:
        PluginRegistry().resolve("task_queue", "typo://x")
    text = str(info.value)
    assert "backend 'typo'" in text and "'fake_store_typo:Queu'" in text, text
    assert "no attribute 'Queu'; did you mean 'Queue'?" in text, text


def test_builtin_pools_register_through_the_same_hook():
    reg = PluginRegistry(entry_points=False)
    assert {"async", "thread", "process"} <= set(reg.pool_names())
    assert reg.pool("thread").name == "thread"
    with pytest.raises(BackendNotInstalledError, match=r"omniq\[gevent\]"):
        reg.pool("gevent")


def test_a_failing_lifecycle_hook_is_logged_and_the_worker_runs(tmp_path, caplog):
    """omniq_worker_started may return an awaitable; one plugin raising is not fatal."""
    from omniq import AsyncOmniQ, hookimpl, register_plugin
    from omniq.registry import registry

    seen = []

    class Good:
        @hookimpl
        async def omniq_worker_started(self, worker):
            seen.append(("started", worker.id))

        @hookimpl
        def omniq_worker_stopping(self, worker, reason):
            seen.append(("stopping", reason))

    class Bad:
        @hookimpl
        def omniq_worker_started(self, worker):
            raise RuntimeError("metrics exporter down")

    register_plugin(Good(), "good-lifecycle")
    register_plugin(Bad(), "bad-lifecycle")
    try:
        import asyncio

        async def main():
            async with AsyncOmniQ(task_queue=f"sqlite:///{tmp_path}/q.db") as app:
                return await app.run_worker(burst=True, worker_id="w1")

        assert asyncio.run(main()) == "burst"
    finally:
        registry.unregister_plugin("good-lifecycle")
        registry.unregister_plugin("bad-lifecycle")
    assert seen == [("started", "w1"), ("stopping", "burst")]
    assert "plugin 'bad-lifecycle' failed in omniq_worker_started" in caplog.text
