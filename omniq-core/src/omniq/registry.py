"""Plugin discovery and backend resolution.

Entry points in the ``omniq.plugins`` group are loaded lazily, on first use, each inside
its own ``try``: one broken plugin is recorded (and shown by ``omniq plugins``) while
the others load. pluggy's ``load_setuptools_entrypoints`` is not used because it lets one
failure crash the host (simonw/llm#1280).

Environment switches: ``OMNIQ_DISABLE_PLUGINS`` (comma-separated entry-point names to
skip), ``OMNIQ_LOAD_PLUGINS`` (comma-separated distribution names; when set, only those
load), ``OMNIQ_STRICT_PLUGINS=1`` (re-raise the first load error).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, TypeVar

import pluggy

from . import hookspecs
from ._deprecated import DEPRECATED_IN, REMOVED_IN, renamed, warn_renamed
from .errors import (
    AmbiguousBackendError,
    BackendNotInstalledError,
    ConfigError,
    IncompatiblePluginError,
    PluginLoadError,
    UnknownBackendError,
)
from .interfaces import BaseEventStorage, BasePool, BaseResultStorage, BaseStore, BaseTaskQueue
from .masking import mask_url
from .options import options_table

__all__ = [
    "ENTRY_POINT_GROUP",
    "FIRST_PARTY",
    "BackendSpec",
    "PluginInfo",
    "PluginRegistry",
    "PoolSpec",
    "StoreKind",
    "registry",
]

# What a registration table holds (a BackendSpec or a PoolSpec).
_Spec = TypeVar("_Spec")

ENTRY_POINT_GROUP = "omniq.plugins"

StoreKind = Literal["task_queue", "result_storage", "event_storage"]
STORE_KINDS: tuple[StoreKind, ...] = ("task_queue", "result_storage", "event_storage")
STORE_BASES: dict[StoreKind, type[Any]] = {
    "task_queue": BaseTaskQueue,
    "result_storage": BaseResultStorage,
    "event_storage": BaseEventStorage,
}

#: First-party plugins, known even when not installed, so errors can say what to install
#: (fsspec's ``known_implementations`` idea). name -> (distribution, extra, schemes)
FIRST_PARTY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "fsspec": (
        "omniq-backend-fsspec",
        "fsspec",
        ("file", "memory", "s3", "gs", "gcs", "az", "abfs"),
    ),
    "gevent": ("omniq-workers-gevent", "gevent", ()),
    "nats": ("omniq-backend-nats", "nats", ("nats", "tls")),
    "postgres": ("omniq-backend-postgres", "postgres", ("postgresql", "postgres")),
    "redis": ("omniq-backend-redis", "redis", ("redis", "rediss", "unix")),
    "sqlite": ("omniq-backend-sqlite", "sqlite", ("sqlite",)),
}
assert list(FIRST_PARTY) == sorted(FIRST_PARTY)


def install_hint(name: str) -> str:
    dist, extra, _ = FIRST_PARTY[name]
    return (
        f"install it with: pip install 'omniq[{extra}]' (from this repository or its "
        f"wheelhouse), or pip install ./{dist}"
    )


def _import_object(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"invalid import path {path!r}: expected 'package.module:Name'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            # A misspelt class name is a path that does not import, like a misspelt module.
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ImportError(f"module {module_name!r} has no attribute {part!r}{hint}") from None
    return obj


@dataclass(frozen=True)
class BackendSpec:
    """What a backend plugin provides. Class paths are ``"module:Class"`` strings."""

    name: str
    schemes: tuple[str, ...] = ()
    task_queue: str | None = None
    result_storage: str | None = None
    event_storage: str | None = None
    description: str = ""

    def kinds(self) -> list[StoreKind]:
        return [k for k in STORE_KINDS if getattr(self, k)]

    def load(self, kind: StoreKind) -> type[BaseStore]:
        path = getattr(self, kind)
        if path is None:
            raise UnknownBackendError(
                f"backend {self.name!r} provides no {kind}; it provides: {', '.join(self.kinds())}"
            )
        try:
            cls = _import_object(path)
        except ImportError as exc:
            raise BackendNotInstalledError(
                f"backend {self.name!r} could not import {path!r}: {exc}"
                + (f"; {install_hint(self.name)}" if self.name in FIRST_PARTY else "")
            ) from exc
        base = STORE_BASES[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise IncompatiblePluginError(
                f"backend {self.name!r} names {path!r} as its {kind}, which is not a "
                f"subclass of omniq.interfaces.{base.__name__}"
            )
        return cls


@dataclass(frozen=True)
class PoolSpec:
    """An execution pool a plugin provides (``pool`` is a ``"module:Class"`` path)."""

    name: str
    pool: str
    description: str = ""

    def load(self) -> type[BasePool]:
        try:
            cls = _import_object(self.pool)
        except ImportError as exc:
            hint = f"; {install_hint(self.name)}" if self.name in FIRST_PARTY else ""
            raise BackendNotInstalledError(
                f"worker pool {self.name!r} could not import {self.pool!r}: {exc}{hint}"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, BasePool)):
            raise IncompatiblePluginError(
                f"worker pool {self.name!r} names {self.pool!r}, which is not a subclass "
                f"of omniq.interfaces.BasePool"
            )
        return cls


def _worker_spec(name: str, worker: str, description: str = "") -> PoolSpec:
    """The 0.1 ``WorkerSpec(name, worker=..., description)``, deprecated: a :class:`PoolSpec`."""
    return PoolSpec(name, worker, description)


#: The 0.1 hook, still honoured for one minor version (with a warning naming the plugin),
#: unless the plugin also implements the new one (a plugin written for both versions).
OLD_POOL_HOOK = "omniq_register_workers"
POOL_HOOK = "omniq_register_pools"


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    hooks: list[str] = field(default_factory=list)
    backends: list[BackendSpec] = field(default_factory=list)
    pools: list[PoolSpec] = field(default_factory=list)
    error: str | None = None
    builtin: bool = False
    #: Installed but skipped: named by ``OMNIQ_DISABLE_PLUGINS`` (not loaded, no hooks).
    disabled: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "backends": [
                {"name": b.name, "schemes": list(b.schemes), "provides": b.kinds()}
                for b in self.backends
            ],
            "pools": [p.name for p in self.pools],
            "workers": [p.name for p in self.pools],  # the 0.1 key, deprecated
            "error": self.error,
            "builtin": self.builtin,
            "disabled": self.disabled,
        }


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


class PluginRegistry:
    """The host side of the plugin API: one pluggy manager plus OmniQ's own indexes."""

    DEFAULT_PLUGINS = ("omniq._builtin",)

    def __init__(self, *, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager("omniq")
        self.pm.add_hookspecs(hookspecs)
        self._entry_points = entry_points
        self._lock = threading.RLock()
        self._loaded = False
        self._collected = False
        self._infos: dict[str, PluginInfo] = {}
        self._disabled: dict[str, PluginInfo] = {}  # skipped by OMNIQ_DISABLE_PLUGINS
        self._backends: dict[str, list[tuple[BackendSpec, PluginInfo]]] = {}
        self._schemes: dict[str, list[tuple[BackendSpec, PluginInfo]]] = {}
        self._pools: dict[str, list[tuple[PoolSpec, PluginInfo]]] = {}

    # -- loading -----------------------------------------------------------------------

    def load(self) -> None:
        """Load entry points and default plugins once (idempotent, thread-safe)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for modname in self.DEFAULT_PLUGINS:
                self._register(
                    importlib.import_module(modname), modname.rpartition(".")[2], builtin=True
                )
            if self._entry_points:
                self._load_entry_points()

    def _load_entry_points(self) -> None:
        disabled = set(_env_list("OMNIQ_DISABLE_PLUGINS") or [])
        allowed = _env_list("OMNIQ_LOAD_PLUGINS")
        strict = os.environ.get("OMNIQ_STRICT_PLUGINS", "") not in ("", "0", "false")
        seen: set[tuple[str | None, str]] = set()
        installed = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        for ep in installed:
            dist = ep.dist.name if ep.dist is not None else None
            key = (dist, ep.name)
            if key in seen:
                continue
            if ep.name in disabled:  # listed as such, so an operator sees the switch took
                seen.add(key)
                self._disabled.setdefault(
                    ep.name,
                    PluginInfo(
                        name=ep.name,
                        distribution=dist,
                        version=ep.dist.version if ep.dist is not None else None,
                        module=ep.value,
                        disabled=True,
                    ),
                )
                continue
            if allowed is not None and dist not in allowed:
                continue
            seen.add(key)
            version = ep.dist.version if ep.dist is not None else None
            info = PluginInfo(name=ep.name, distribution=dist, version=version, module=ep.value)
            try:
                module = ep.load()
                self._register(module, ep.name, info=info)
            except Exception as exc:
                err = PluginLoadError(ep.name, dist, exc)
                info.error = str(err)
                self._infos.setdefault(ep.name, info)
                if strict:
                    raise err from exc
        names = sorted({ep.name for ep in installed})
        for name in sorted(disabled - set(names)):
            close = difflib.get_close_matches(name, names, n=1)
            # Logged, not warnings.warn: a line an operator reads in the worker's log,
            # without a source location in front.
            logging.getLogger("omniq").warning(
                "OMNIQ_DISABLE_PLUGINS names %r, which is no installed plugin, so it disabled "
                "nothing%s Installed: %s.",
                name,
                f"; did you mean {close[0]!r}?" if close else ".",
                ", ".join(names) or "none",
            )

    def _register(
        self, plugin: object, name: str, *, builtin: bool = False, info: PluginInfo | None = None
    ) -> PluginInfo:
        if info is None:
            module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
            info = PluginInfo(name=name, module=module, builtin=builtin)
        if name in self._infos or self.pm.has_plugin(name):
            other = self._infos.get(name)
            raise PluginLoadError(
                name,
                info.distribution,
                ValueError(
                    f"a plugin named {name!r} is already registered"
                    + (f" by {other.distribution}" if other and other.distribution else "")
                ),
            )
        unknown = [
            attr
            for attr in dir(plugin)
            if attr.startswith("omniq_")
            and callable(getattr(plugin, attr, None))
            and not hasattr(self.pm.hook, attr)
        ]
        if unknown:
            known = [h for h in dir(hookspecs) if h.startswith("omniq_")]
            close = difflib.get_close_matches(unknown[0], known, n=1)
            raise IncompatiblePluginError(
                f"plugin {name!r} implements unknown hook {unknown[0]!r}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f" Known hooks: {', '.join(known)}"
            )
        self.pm.register(plugin, name=name)
        info.hooks = sorted(
            hc.name for hc in self.pm.get_hookcallers(plugin) or [] if hc.name.startswith("omniq_")
        )
        if not info.hooks:
            self.pm.unregister(plugin)
            raise IncompatiblePluginError(
                f"plugin {name!r} implements no omniq hooks: mark functions such as "
                f"omniq_register_backends(register) with @omniq.hookimpl"
            )
        if OLD_POOL_HOOK in info.hooks and POOL_HOOK not in info.hooks:
            warnings.warn(
                f"plugin {name!r} implements {OLD_POOL_HOOK}, deprecated since omniq "
                f"{DEPRECATED_IN} and removed in {REMOVED_IN}: rename it omniq_register_pools "
                f"(register PoolSpec(name, pool='module:Class'))",
                DeprecationWarning,
                stacklevel=2,
            )
        self._infos[name] = info
        self._collected = False
        return info

    def register_plugin(self, plugin: object, name: str | None = None) -> PluginInfo:
        """Register a plugin object or module in code (tests, applications)."""
        self.load()
        with self._lock:
            return self._register(plugin, name or getattr(plugin, "__name__", None) or repr(plugin))

    def unregister_plugin(self, name: str) -> None:
        with self._lock:
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                self.pm.unregister(plugin)
            self._infos.pop(name, None)
            self._collected = False

    # -- collection of what plugins provide ---------------------------------------------

    def _collect(self) -> None:
        self.load()
        with self._lock:
            if self._collected:
                return
            self._backends.clear()
            self._schemes.clear()
            self._pools.clear()
            for info in self._infos.values():
                info.backends.clear()
                info.pools.clear()
            for hook_name, sink in (
                ("omniq_register_backends", self._add_backend),
                (POOL_HOOK, self._add_pool),
                (OLD_POOL_HOOK, self._add_pool),
            ):
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    info = self._infos[impl.plugin_name]
                    if hook_name == OLD_POOL_HOOK and POOL_HOOK in info.hooks:
                        continue  # the plugin says the same through the new hook
                    try:
                        impl.function(
                            **{a: (lambda s, i=info, f=sink: f(s, i)) for a in impl.argnames}
                        )
                    except Exception as exc:
                        info.error = f"{hook_name} raised {type(exc).__name__}: {exc}"
            self._collected = True

    def _add_backend(self, spec: BackendSpec, info: PluginInfo) -> None:
        if not isinstance(spec, BackendSpec):
            raise IncompatiblePluginError(f"register() takes a BackendSpec, got {spec!r}")
        info.backends.append(spec)
        self._backends.setdefault(spec.name, []).append((spec, info))
        for scheme in spec.schemes:
            self._schemes.setdefault(scheme.lower(), []).append((spec, info))

    def _add_pool(self, spec: PoolSpec, info: PluginInfo) -> None:
        if not isinstance(spec, PoolSpec):
            raise IncompatiblePluginError(f"register() takes a PoolSpec, got {spec!r}")
        info.pools.append(spec)
        self._pools.setdefault(spec.name, []).append((spec, info))

    def plugins(self, include_builtin: bool = False) -> list[PluginInfo]:
        """The plugins loaded or failed, and those installed but disabled."""
        self._collect()
        found = [i for i in self._infos.values() if include_builtin or not i.builtin]
        return found + [i for n, i in self._disabled.items() if n not in self._infos]

    def backends(self) -> dict[str, BackendSpec]:
        self._collect()
        return {name: entries[0][0] for name, entries in sorted(self._backends.items())}

    def contested(self) -> dict[str, list[PluginInfo]]:
        """URL schemes and backend names claimed by more than one loaded plugin (resolving
        them raises AmbiguousBackendError): ``"URL scheme 'memory'"`` -> those plugins."""
        self._collect()
        found: dict[str, list[PluginInfo]] = {}
        for kind, index in (("URL scheme", self._schemes), ("backend", self._backends)):
            for key, entries in sorted(index.items()):
                owners = list({id(i): i for _, i in entries}.values())
                if len(owners) > 1:
                    found[f"{kind} {key!r}"] = owners
        return found

    def pool_names(self) -> list[str]:
        self._collect()
        return sorted(self._pools)

    def worker_names(self) -> list[str]:
        """Deprecated since 0.2: :meth:`pool_names`."""
        warn_renamed("PluginRegistry.worker_names()", "pool_names()")
        return self.pool_names()

    def call_hook(self, name: str, **kwargs: Any) -> list[Any]:
        """Call a lifecycle hook with keyword arguments (results may be awaitables)."""
        self.load()
        results: list[Any] = getattr(self.pm.hook, name)(**kwargs)
        return results

    def call_hook_each(self, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call each plugin's implementation on its own: ``(plugin name, result or the
        exception it raised)``, so one failing plugin cannot hide the others."""
        self.load()
        out: list[tuple[str, Any]] = []
        for impl in getattr(self.pm.hook, name).get_hookimpls():
            try:
                out.append(
                    (impl.plugin_name, impl.function(**{a: kwargs[a] for a in impl.argnames}))
                )
            except Exception as exc:
                out.append((impl.plugin_name, exc))
        return out

    # -- lookup ------------------------------------------------------------------------

    @staticmethod
    def _one(kind: str, key: str, entries: list[tuple[_Spec, PluginInfo]]) -> _Spec:
        if len(entries) > 1:
            owners = ", ".join(
                f"{i.name} ({i.distribution or 'registered in code'})" for _, i in entries
            )
            raise AmbiguousBackendError(
                f"{kind} {key!r} is claimed by several plugins: {owners}. Choose one explicitly, "
                f"e.g. {{'backend': '<plugin name>', 'url': ...}}, or disable the other with "
                f"OMNIQ_DISABLE_PLUGINS"
            )
        return entries[0][0]

    def _unknown(self, what: str, key: str, known: list[str]) -> UnknownBackendError:
        for name, (dist, _extra, schemes) in FIRST_PARTY.items():
            if key == name or key in schemes:
                return BackendNotInstalledError(
                    f"{what} {key!r} is provided by {dist}, which is not installed; "
                    f"{install_hint(name)}"
                )
        failed = [i for i in self._infos.values() if i.error]
        pools = what == "worker pool"
        # First-party plugins of this sort that are not installed: name -> its extra.
        missing = {
            name: extra
            for name, (_dist, extra, schemes) in FIRST_PARTY.items()
            if (not schemes) == pools and name not in self._backends and name not in self._pools
        }
        by_key = {n: n for n in missing} | {
            s: n for n in missing for s in FIRST_PARTY[n][2] if s not in self._schemes
        }
        close = difflib.get_close_matches(key, sorted(set(known) | set(by_key)), n=1)
        msg = f"unknown {what} {key!r}."
        if close:
            msg += f" Did you mean {close[0]!r}?"
            if close[0] in by_key:
                msg += f" It comes with pip install 'omniq[{missing[by_key[close[0]]]}]'."
        msg += f" Installed: {', '.join(known) or 'none'}."
        if missing:
            msg += (
                " Not installed, from OmniQ's extras: "
                + ", ".join(
                    f"{name} (pip install 'omniq[{extra}]')" for name, extra in missing.items()
                )
                + "."
            )
        if failed:
            msg += " Plugins that failed to load: " + "; ".join(i.error or "" for i in failed)
        else:
            msg += (
                f" Third-party {'worker pools' if pools else 'backends'} register under the"
                f" {ENTRY_POINT_GROUP!r} entry-point group."
            )
        return UnknownBackendError(msg)

    def backend(self, name: str) -> BackendSpec:
        self._collect()
        entries = self._backends.get(name)
        if not entries:
            raise self._unknown("backend", name, sorted(self._backends))
        return self._one("backend", name, entries)

    def backend_for_scheme(self, scheme: str) -> BackendSpec:
        """The backend claiming a URL scheme. ``a+b`` is tried whole, then as backend
        ``a`` (SQLAlchemy's ``dialect+driver`` convention: ``fsspec+s3://``)."""
        self._collect()
        scheme = scheme.lower()
        entries = self._schemes.get(scheme)
        if entries:
            return self._one("URL scheme", scheme, entries)
        head = scheme.partition("+")[0]
        if head != scheme and head in self._backends:
            return self.backend(head)
        raise self._unknown("URL scheme", scheme, sorted(self._schemes))

    def option_table(self, name: str) -> str:
        """The Markdown table of backend ``name``'s options, from its store classes (its
        docs page shows it, and a test keeps the two equal)."""
        spec = self.backend(name)
        return options_table(
            {kind.replace("_", " "): spec.load(kind).option_schema for kind in spec.kinds()}
        )

    def pool(self, name: str) -> type[BasePool]:
        """The pool class registered as ``name`` (``--pool NAME``)."""
        self._collect()
        entries = self._pools.get(name)
        if not entries:
            raise self._unknown("worker pool", name, sorted(self._pools))
        return self._one("worker pool", name, entries).load()

    def worker(self, name: str) -> type[BasePool]:
        """Deprecated since 0.2: :meth:`pool`."""
        warn_renamed("PluginRegistry.worker()", "pool()")
        return self.pool(name)

    # -- resolution --------------------------------------------------------------------

    def resolve(self, kind: StoreKind, ref: Any) -> BaseStore:
        """Turn a backend reference into an unopened store instance.

        Accepted, in order: an instance of the store interface; a mapping
        ``{"backend": name-or-scheme, "url": ..., **options}``; a URL whose scheme a
        plugin claims; ``"package.module:Class"``; a bare plugin name.
        """
        base: type[BaseStore] = STORE_BASES[kind]
        if isinstance(ref, BaseStore):
            if not isinstance(ref, base):
                raise ConfigError(f"{kind}: {type(ref).__name__} is not a {base.__name__}")
            return ref
        options: dict[str, Any] = {}
        if isinstance(ref, Mapping):
            options = dict(ref)
            name = options.pop("backend", None)
            url = options.pop("url", None)
            if name is None and url is None:
                raise ConfigError(
                    f"{kind}: a mapping needs 'backend' (a plugin name) or 'url', "
                    f"got keys {sorted(ref)}"
                )
            if name is not None:
                cls = self.backend(str(name)).load(kind)
                return cls.from_url(url or f"{name}://", **options)
            ref = url
        if not isinstance(ref, str) or not ref:
            raise ConfigError(
                f"{kind}: expected a URL, a backend name, 'module:Class' or a store instance, "
                f"got {ref!r}"
            )
        if "://" in ref:
            scheme = ref.split("://", 1)[0]
            if not scheme or not all(c.isalnum() or c in "+-." for c in scheme):
                raise ConfigError(f"{kind}: malformed URL {mask_url(ref)!r}: bad scheme {scheme!r}")
            cls = self.backend_for_scheme(scheme).load(kind)
            return cls.from_url(ref, **options)
        if ":" in ref:
            try:
                cls = _import_object(ref)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"{kind}: cannot import {ref!r}: {exc}") from exc
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise IncompatiblePluginError(
                    f"{kind}: {ref!r} is not a subclass of {base.__name__}"
                )
            return cls.from_url("", **options)
        cls = self.backend(ref).load(kind)
        return cls.from_url(f"{ref}://", **options)


registry = PluginRegistry()


def register_plugin(plugin: object, name: str | None = None) -> PluginInfo:
    """Register a plugin (module or object with ``@hookimpl`` functions) in code."""
    return registry.register_plugin(plugin, name)


__getattr__ = renamed(__name__, {"WorkerSpec": ("PoolSpec", "_worker_spec")}, globals())
