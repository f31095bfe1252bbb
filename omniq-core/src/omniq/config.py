"""Configuration: one validated :class:`OmniQConfig` from several sources.

Precedence, highest first: explicit arguments, environment variables (``OMNIQ_KEY``,
nested with ``__``: ``OMNIQ_WORKER__CONCURRENCY``), a YAML file (the ``config`` argument
when it is a path, else ``$OMNIQ_CONFIG``, else ``./omniq.yaml`` if present), a mapping
or any object with matching attributes. Every value is validated on load, and an error
names the key, the bad value and what is valid. Secrets in URLs are masked in every
repr and message (:func:`mask_url`).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from .errors import ConfigError
from .masking import mask_url
from .options import to_float, to_int

__all__ = ["DEFAULT_URL", "OmniQConfig", "WorkerConfig", "load_config", "mask_url"]

#: The embedded default: one SQLite file in the working directory for all three stores.
DEFAULT_URL = "sqlite:///omniq.db"


def _mask_ref(ref: Any) -> Any:
    if isinstance(ref, str):
        return mask_url(ref)
    if isinstance(ref, Mapping):
        return {
            k: ("***" if re.search(r"(?i)pass|secret|token|cred", str(k)) else _mask_ref(v))
            for k, v in ref.items()
        }
    return ref


class WorkerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``worker:`` section: defaults for ``omniq worker`` and ``run_worker()``, whose
    options override them.

    :ivar pool: execution pool: ``async``, ``thread``, ``process`` or one a plugin adds.
    :ivar concurrency: tasks run at once.
    :ivar queues: the queues to serve.
    :ivar burst: stop when the queues are empty instead of waiting for work.
    :ivar poll_interval: seconds between reserve attempts of an idle worker whose store
        cannot wake it.
    :ivar grace_period: seconds a stopping worker waits for running tasks before
        releasing them.
    :ivar max_tasks_per_child: recycle after this many tasks (process pool: per child).
    :ivar max_memory_mb: recycle when resident memory exceeds this.
    :ivar prefetch: tasks reserved beyond ``concurrency``; unset: 4 x concurrency.
    :ivar reconnect_timeout: seconds a store may fail before the worker gives up.
    """

    pool: str = "async"
    concurrency: int = 10
    queues: list[str] = msgspec.field(default_factory=lambda: ["default"])
    burst: bool = False
    poll_interval: float = 1.0
    grace_period: float = 30.0
    max_tasks_per_child: int | None = None
    max_memory_mb: float | None = None
    prefetch: int | None = None  # tasks reserved beyond concurrency; None: 4 x concurrency
    reconnect_timeout: float = 300.0  # how long a store may fail before the worker gives up


class OmniQConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The validated configuration of an app (see :func:`load_config`).

    :ivar task_queue: the task queue: a URL, a plugin name, a mapping
        ``{backend:, url:, ...options}`` or ``"module:Class"``; unset: ``sqlite:///omniq.db``.
    :ivar result_storage: the result storage, in the same forms; unset: the task queue's.
    :ivar event_storage: the event storage, in the same forms; unset: the task queue's.
    :ivar default_queue: the queue of a task that names none.
    :ivar imports: modules imported when the app is created, so their tasks register.
    :ivar secret_key: signs every payload (HMAC-SHA256) and refuses unsigned ones.
    :ivar secret_keys: key id -> secret, for rotating keys; any of them verifies.
    :ivar signing_key: the id in ``secret_keys`` that signs new payloads.
    :ivar allow_unsigned_dill: accept unsigned dill payloads from network stores (unsafe
        unless every writer to the store is trusted).
    :ivar lease: seconds a reserved task stays leased to its worker without a heartbeat.
    :ivar heartbeat: seconds between lease extensions (at most lease/2); unset: lease/3.
    :ivar max_deliveries: a task whose lease keeps lapsing is dead after this many
        attempts (or ``max_retries + 1``, if more).
    :ivar result_ttl: seconds a finished task and its result are kept.
    :ivar dead_ttl: seconds a dead-lettered task is kept.
    :ivar event_ttl: seconds events are kept.
    :ivar payload_limit: the largest serialized call or value, in bytes.
    :ivar events: record task events; false skips every event write.
    :ivar queue_rate_limits: queue name -> the most tasks started from it, across every
        worker, as a rate ("100/m", "10/s", "5/h"); the store enforces it (docs/limits.md).
    :ivar worker: the worker section (keys below).
    """

    task_queue: Any = None
    result_storage: Any = None
    event_storage: Any = None
    default_queue: str = "default"
    imports: list[str] = msgspec.field(default_factory=list)
    secret_key: str | None = None
    secret_keys: dict[str, str] = msgspec.field(default_factory=dict)
    signing_key: str | None = None
    allow_unsigned_dill: bool = False
    lease: float = 60.0
    heartbeat: float | None = None
    max_deliveries: int = 5
    result_ttl: float = 86400.0
    dead_ttl: float = 7 * 86400.0
    event_ttl: float = 7 * 86400.0
    payload_limit: int = 1 << 20
    events: bool = True
    queue_rate_limits: dict[str, str] = msgspec.field(default_factory=dict)
    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)

    def __repr__(self) -> str:
        fields = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in ("secret_key",) and value:
                value = "***"
            elif name == "secret_keys" and value:
                value = dict.fromkeys(value, "***")
            elif name in ("task_queue", "result_storage", "event_storage"):
                value = _mask_ref(value)
            fields.append(f"{name}={value!r}")
        return f"OmniQConfig({', '.join(fields)})"

    __str__ = __repr__

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.lease / 3

    def store_ref(self, kind: str) -> Any:
        return getattr(self, kind) or DEFAULT_URL

    def signing_keys(self) -> dict[str, bytes]:
        keys = {k: v.encode() for k, v in self.secret_keys.items()}
        if self.secret_key:
            keys.setdefault("default", self.secret_key.encode())
        return keys


_TOP = set(OmniQConfig.__struct_fields__)
_WORKER = set(WorkerConfig.__struct_fields__)
_LIST_FIELDS = {("imports",), ("worker", "queues")}


def _positive(path: str, value: float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            to_int(value, minimum=0 if allow_zero else 1, strings=False)
        else:
            to_float(value, minimum=0, above=not allow_zero, strings=False)
    except ValueError as exc:
        raise ConfigError(f"config key {path!r}: must be {exc}, got {value!r}") from None


def _validate(cfg: OmniQConfig) -> OmniQConfig:
    for key in ("lease", "result_ttl", "dead_ttl", "event_ttl", "heartbeat"):
        _positive(key, getattr(cfg, key))
    _positive("payload_limit", cfg.payload_limit)
    _positive("max_deliveries", cfg.max_deliveries)
    if cfg.heartbeat is not None and cfg.heartbeat > cfg.lease / 2:
        raise ConfigError(
            f"config key 'heartbeat': {cfg.heartbeat} s is more than half the lease "
            f"({cfg.lease} s); "
            f"a lease would lapse between heartbeats. Use at most lease/3"
        )
    w = cfg.worker
    _positive("worker.concurrency", w.concurrency)
    _positive("worker.poll_interval", w.poll_interval)
    _positive("worker.grace_period", w.grace_period, allow_zero=True)
    _positive("worker.max_tasks_per_child", w.max_tasks_per_child)
    _positive("worker.max_memory_mb", w.max_memory_mb)
    _positive("worker.prefetch", w.prefetch, allow_zero=True)
    _positive("worker.reconnect_timeout", w.reconnect_timeout, allow_zero=True)
    if not w.queues:
        raise ConfigError("config key 'worker.queues': name at least one queue")
    from .models import validate_name

    for q in [*w.queues, cfg.default_queue]:
        validate_name("queue name", q)
    from .limits import parse_rate

    for q, rate in cfg.queue_rate_limits.items():
        validate_name("queue name", q)
        parse_rate(rate, f"config key 'queue_rate_limits.{q}':")
    if cfg.signing_key and cfg.signing_key not in cfg.signing_keys():
        raise ConfigError(
            f"config key 'signing_key': {cfg.signing_key!r} is not among secret_keys "
            f"{sorted(cfg.secret_keys)}"
        )
    return cfg


#: Config keys that take seconds: each also takes a duration text ("90s", "15m", "1d").
_DURATIONS = (
    ("lease",),
    ("heartbeat",),
    ("result_ttl",),
    ("dead_ttl",),
    ("event_ttl",),
    ("worker", "poll_interval"),
    ("worker", "grace_period"),
    ("worker", "reconnect_timeout"),
)


def _durations(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each duration text or timedelta of a seconds key turned into seconds
    (numbers are left to the validation below, which names the key and the range)."""
    from datetime import timedelta

    from .options import to_duration

    out = dict(data)
    for path in _DURATIONS:
        holder = out if len(path) == 1 else out.get(path[0])
        if not isinstance(holder, Mapping) or not isinstance(
            holder.get(path[-1]), (str, timedelta)
        ):
            continue
        value = holder[path[-1]]
        try:
            seconds = to_duration(value, minimum=None)
        except ValueError as exc:
            key = ".".join(path)
            raise ConfigError(f"config key {key!r}: must be {exc}, got {value!r}") from None
        if len(path) == 1:
            out[path[0]] = seconds
        else:
            out[path[0]] = {**holder, path[1]: seconds}
    return out


def _from_object(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, OmniQConfig):
        plain: dict[str, Any] = msgspec.to_builtins(obj)
        return plain
    if isinstance(obj, Mapping):
        return dict(obj)
    out: dict[str, Any] = {}
    for key in _TOP:
        if hasattr(obj, key):
            value = getattr(obj, key)
            if key == "worker" and not isinstance(value, (Mapping, WorkerConfig)):
                value = {k: getattr(value, k) for k in _WORKER if hasattr(value, k)}
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}"
        )
    return data


_RELATIVE_SQLITE = re.compile(r"^sqlite:///(?!/|:memory:)(?P<path>[^?#]+)", re.I)


def _anchor_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative SQLite paths of a YAML file's stores, made absolute against the file's
    directory: the file means the same database whatever directory a command runs in."""

    def anchor(url: Any) -> Any:
        m = _RELATIVE_SQLITE.match(url) if isinstance(url, str) else None
        if m is None:
            return url
        return f"sqlite:///{(base / m['path']).absolute()}{url[m.end() :]}"

    out = dict(data)
    for key in ("task_queue", "result_storage", "event_storage"):
        ref = out.get(key)
        if isinstance(ref, Mapping) and "url" in ref:
            out[key] = {**ref, "url": anchor(ref["url"])}
        elif ref is not None:
            out[key] = anchor(ref)
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("OMNIQ_") or name == "OMNIQ_CONFIG":
            continue
        parts = tuple(p.lower() for p in name[6:].split("__"))
        if not _env_is_config(name, parts):
            continue  # other OMNIQ_ variables (plugins, tests) are not config keys
        value: Any = raw
        if parts in _LIST_FIELDS:
            value = [v.strip() for v in raw.split(",") if v.strip()]
        elif raw.startswith("{"):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment variable {name}: invalid JSON: {exc}") from exc
        if len(parts) == 1:
            out[parts[0]] = value
        else:
            out.setdefault("worker", {})[parts[1]] = value
    return out


#: OMNIQ_ variables that are not config keys but read by OmniQ itself.
_ENV_NOT_CONFIG = frozenset(
    {
        "OMNIQ_CONFIG",
        "OMNIQ_APP",
        "OMNIQ_STRICT_PLUGINS",
        "OMNIQ_DISABLE_PLUGINS",
        "OMNIQ_LOAD_PLUGINS",
    }
)


def _env_is_config(name: str, parts: tuple[str, ...]) -> bool:
    """Whether ``OMNIQ_...`` sets a config key. One that looks meant as a key but is
    none (``OMNIQ_WORKER__CONCURENCY``, ``OMNIQ_LAESE``) is an error naming it, like an
    unknown YAML key; a name far from every key (``OMNIQ_TEST_REDIS_URL``) belongs to a
    plugin or a test suite and is left alone."""
    if name in _ENV_NOT_CONFIG:
        return False
    if parts in {(k,) for k in _TOP} or (
        len(parts) == 2 and parts[0] == "worker" and parts[1] in _WORKER
    ):
        return True
    source = f"the environment ({name})"
    if parts[0] == "worker":
        _check_keys({"worker": {"__".join(parts[1:]): None}}, source)
    elif parts[0] in _TOP or difflib.get_close_matches(parts[0], sorted(_TOP), n=1, cutoff=0.8):
        _check_keys({"__".join(parts): None}, source)
    return False


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if (
            key == "worker"
            and isinstance(value, Mapping)
            and isinstance(merged.get("worker"), Mapping)
        ):
            merged["worker"] = {**merged["worker"], **value}
        else:
            merged[key] = value
    return merged


def _check_keys(data: Mapping[str, Any], source: str) -> None:
    for key in data:
        if key not in _TOP:
            close = difflib.get_close_matches(str(key), sorted(_TOP), n=1)
            raise ConfigError(
                f"unknown config key {key!r} in {source}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f" Valid keys: {', '.join(sorted(_TOP))}"
            )
    worker = data.get("worker")
    if isinstance(worker, Mapping):
        for key in worker:
            if key not in _WORKER:
                close = difflib.get_close_matches(str(key), sorted(_WORKER), n=1)
                raise ConfigError(
                    f"unknown config key 'worker.{key}' in {source}"
                    + (f"; did you mean 'worker.{close[0]}'?" if close else "")
                    + f" Valid worker keys: {', '.join(sorted(_WORKER))}"
                )


def load_config(
    config: Any = None,
    *,
    environ: Mapping[str, str] | None = None,
    **explicit: Any,
) -> OmniQConfig:
    """Build the configuration. ``config`` is a YAML path, a mapping, an object, or an
    :class:`OmniQConfig`; ``explicit`` keyword arguments override everything."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any]]] = []
    path: Path | None = None
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
    else:
        if config is not None:
            layers.append(("the config object", _from_object(config)))
        if environ.get("OMNIQ_CONFIG"):
            path = Path(environ["OMNIQ_CONFIG"])
        elif Path("omniq.yaml").is_file():
            path = Path("omniq.yaml")
    if path is not None:
        layers.append((f"config file {str(path)!r}", _anchor_paths(_read_yaml(path), path.parent)))
    layers.append(("the environment", _from_env(environ)))
    layers.append(("the arguments", {k: v for k, v in explicit.items() if v is not None}))
    merged: dict[str, Any] = {}
    for source, data in layers:
        _check_keys(data, source)
        merged = _merge(merged, data)
    merged = _durations(merged)
    try:
        cfg = msgspec.convert(merged, OmniQConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, merged)) from None
    return _validate(cfg)


def _explain(exc: msgspec.ValidationError, data: Mapping[str, Any]) -> str:
    msg = str(exc)
    m = re.search(r" - at `\$\.(?P<path>[\w.\[\]]+)`$", msg)
    if not m:
        return f"invalid configuration: {msg}"
    path = m.group("path")
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    reason = msg[: m.start()]
    return f"config key {path!r}: {reason.rstrip('.')}; got {_mask_ref(value)!r}"
