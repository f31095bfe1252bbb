"""The public API: :class:`AsyncOmniQ` and its blocking facade :class:`OmniQ`.

An app holds the configuration, the three stores (resolved through the plugin registry
when the app is built, opened on first use), the serializer and the registry of task
functions. Producers and workers use the same app object.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sys
import time
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

import msgspec

from . import requeueing
from .config import OmniQConfig, load_config
from .cron import validate_timezone
from .errors import (
    CapabilityError,
    ConfigError,
    ResultTimeoutError,
    TaskFailedError,
    TaskNotFoundError,
)
from .events import build_event, enqueued_events, write_events
from .groups import GroupRef, check_on_failure, dependency_ids
from .interfaces import (
    MAX_PAGE,
    BaseEventStorage,
    BaseResultStorage,
    BaseTaskQueue,
    Capability,
    check_event_order,
)
from .limits import Limits, parse_rate
from .middleware import Middleware, MiddlewareChain, plugin_middleware
from .models import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    ErrorInfo,
    EventType,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    WorkerInfo,
    new_id,
    new_ids,
    now,
    validate_cron,
    validate_name,
)
from .options import to_duration, to_int
from .registry import registry
from .remote_errors import rebuild_error
from .requeueing import RequeueSelection
from .retries import RetryPolicy
from .schedules import fire_due_schedules
from .serialization import Serializer, binding, unsigned
from .sync import Portal, SyncWrapper, blocking

if TYPE_CHECKING:
    from .worker.runtime import Worker

__all__ = ["AsyncOmniQ", "GroupRef", "OmniQ", "TaskFunction", "TaskRef"]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("omniq")

#: Results, events and tasks of a task that never ran end in one of these.
_ENDED_WITHOUT_RUN = {TaskState.CANCELLED, TaskState.EXPIRED, TaskState.DEAD}


class TaskRef(msgspec.Struct, Generic[R], frozen=True, gc=False):
    """What enqueue returns: the task's id, typed by the task's return value. (gc=False:
    a bulk enqueue returns one per task, and tracked they would set off full collections
    in the middle of it; a ref holds strings and a state, never a cycle.)"""

    id: str
    name: str
    queue: str
    state: TaskState

    def __repr__(self) -> str:
        return (
            f"TaskRef(id={self.id!r}, name={self.name!r}, queue={self.queue!r}, "
            f"state={self.state.value!r})"
        )


def default_task_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` with what the name pattern refuses dropped (``<locals>``)."""
    module = getattr(fn, "__module__", None) or "task"
    if module in ("__main__", "__mp_main__"):
        # A script registers its tasks under the name it has when imported, so that
        # `python tasks.py` (a worker) and `import tasks` (a producer) agree; so does
        # the script again in a process pool's child (multiprocessing's __mp_main__).
        main = sys.modules.get(module)
        spec = getattr(main, "__spec__", None)
        path = getattr(main, "__file__", None)
        module = spec.name if spec is not None else Path(path).stem if path else module
    raw = f"{module}.{getattr(fn, '__qualname__', 'callable')}"
    return re.sub(r"[^A-Za-z0-9_.:\-]", "", raw).replace("..", ".")[-200:].lstrip("._-:")


def _seconds(name: str, value: Any, *, allow_zero: bool = False) -> float | None:
    """Validate a duration given as seconds or a timedelta."""
    if value is None:
        return None
    try:
        return to_duration(value, minimum=0, above=not allow_zero, strings=False)
    except ValueError as exc:
        raise ConfigError(f"{name} must be {exc}, got {value!r}") from None


def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    try:
        return to_int(value, minimum=lo, maximum=hi, strings=False)
    except ValueError as exc:
        raise ConfigError(f"{name} must be {exc}, got {value!r}") from None


#: Epoch seconds a time may take: 1970-01-01 up to (not including) year 10000, the range
#: of a datetime. NaN, infinities and absurd values would be stored as they are and
#: leave a task scheduled forever (or fail inside a backend's script).
TIME_MIN, TIME_MAX = 0.0, 253402300800.0
_TIME_RANGE = (
    "epoch seconds from 0 up to, not including, 253402300800 (1970-01-01 to 9999-12-31 UTC)"
)


def _timestamp(name: str, value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(
                f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), got {value!r}"
            )
        stamp = value.timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        stamp = float(value)
    else:
        raise ConfigError(f"{name} must be an aware datetime or epoch seconds, got {value!r}")
    if not TIME_MIN <= stamp < TIME_MAX:  # also False for NaN
        raise ConfigError(f"{name} must be a time in {_TIME_RANGE}, got {value!r}")
    return stamp


class TaskOptions:
    """Per-task defaults given to ``@app.task``; validated once."""

    __slots__ = (
        "concurrency_limit",
        "max_deliveries",
        "max_retries",
        "priority",
        "queue",
        "rate_limit",
        "retry",
        "retry_backoff",
        "retry_backoff_max",
        "timeout",
        "ttl",
    )

    #: The options ``@app.task`` takes (``retry_max_delay`` is the name of
    #: ``retry_backoff_max`` the docs use; either works).
    NAMES = frozenset(
        {
            "queue", "retries", "timeout", "ttl", "priority", "max_deliveries",
            "retry_backoff", "retry_backoff_max", "retry_max_delay", "retry_on",
            "dont_retry_on", "retry_schedule", "retry_jitter", "rate_limit",
            "concurrency_limit",
        }
    )  # fmt: skip

    def __init__(
        self,
        *,
        queue: str,
        retries: int = 0,
        timeout: Any = None,
        ttl: Any = None,
        priority: int = 0,
        retry_backoff: Any = 1.0,
        retry_backoff_max: Any = 600.0,
        max_deliveries: int = 5,
        retry_max_delay: Any = None,
        retry_on: Any = None,
        dont_retry_on: Any = None,
        retry_schedule: Any = None,
        retry_jitter: Any = None,
        rate_limit: str | None = None,
        concurrency_limit: int | None = None,
    ) -> None:
        self.queue = validate_name("queue name", queue)
        # Global limits (omniq.limits), checked here so a bad value fails at import.
        if rate_limit is not None:
            parse_rate(rate_limit)
        if concurrency_limit is not None:
            _int("concurrency_limit", concurrency_limit, 1)
        self.rate_limit = rate_limit
        self.concurrency_limit = concurrency_limit
        self.max_retries = _int("retries", retries, 0)
        self.timeout = _seconds("timeout", timeout)
        self.ttl = _seconds("ttl", ttl)
        self.priority = _int("priority", priority, PRIORITY_MIN, PRIORITY_MAX)
        self.retry_backoff = _seconds("retry_backoff", retry_backoff, allow_zero=True) or 0.0
        if retry_max_delay is not None:
            retry_backoff_max = retry_max_delay
        self.retry_backoff_max = _seconds("retry_max_delay", retry_backoff_max) or 600.0
        self.max_deliveries = _int("max_deliveries", max_deliveries, 1)
        self.retry = RetryPolicy.build(retry_on, dont_retry_on, retry_schedule, retry_jitter)


class TaskFunction(Generic[P, R]):
    """A registered task. Calling it runs the function here; ``delay`` enqueues it."""

    def __init__(
        self, app: AsyncOmniQ, fn: Callable[..., Any], name: str, options: TaskOptions
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__module__ = getattr(fn, "__module__", __name__)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.name} queue={self.options.queue}>"


class AsyncTaskFunction(TaskFunction[P, R]):
    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskRef[R]:
        """Enqueue a call with the task's default options."""
        return await self.app._enqueue(self, args, kwargs, {})

    async def apply(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> TaskRef[R]:
        """Enqueue with per-call options (``priority``, ``delay``, ``eta``, ``depends_on``...)."""
        return await self.app._enqueue(self, tuple(args), dict(kwargs or {}), options)


#: The options of a ``delay()`` (none: the task's own).
_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


class SyncTaskFunction(TaskFunction[P, R]):
    def __init__(self, sync_app: OmniQ, inner: AsyncTaskFunction[P, R]) -> None:
        super().__init__(inner.app, inner.fn, inner.name, inner.options)
        self._sync_app = sync_app
        self._inner = inner

    @property
    def aio(self) -> AsyncTaskFunction[P, R]:
        """The async twin (``await task.aio.delay(...)``), for ``async def`` code on the
        app's loop: an ``async def`` task of a blocking app, where a blocking call would
        wait for the loop it blocks."""
        return self._inner

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskRef[R]:
        # Straight to the app's enqueue, as the async delay() goes (not through apply(),
        # a coroutine frame and copies of args and kwargs more per call), and to the
        # portal's loop (Portal.call written out: a frame and a tuple less, ~2,000
        # instructions).
        inner = self._inner
        portal = self._sync_app._portal
        state = portal._state or portal._start()
        return state.call(inner.app._enqueue, (inner, args, kwargs, _NO_OPTIONS))  # type: ignore[no-any-return]

    def apply(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> TaskRef[R]:
        return self._sync_app._portal.call(lambda: self._inner.apply(args, kwargs, **options))


#: Calls per batch of an ``enqueue_many``: big enough that a batch's round trip and
#: script or statement overhead vanish per task, small enough that the server starts
#: storing soon and stores one while the next is built, and that no single step holds
#: the server long. (10,000-task bulks on Redis: 500 ran 10-25 % faster than 1,000.)
ENQUEUE_BATCH = 500

#: The id a schedule's template is built (and its call signed) with.
_TEMPLATE_ID = "template"
_ENQUEUE_OPTIONS = frozenset(
    {
        "priority",
        "delay",
        "eta",
        "depends_on",
        "on_failure",
        "pass_results",
        "queue",
        "ttl",
        "timeout",
        "retries",
        "task_id",
    }
)


def _split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task keyword arguments, enqueue options) from one keyword dict."""
    options = {k: v for k, v in kwargs.items() if k in _ENQUEUE_OPTIONS}
    return {k: v for k, v in kwargs.items() if k not in _ENQUEUE_OPTIONS}, options


def _derived_schedule_id(
    template: Task, payload: bytes, cron: str | None, every: float | None, tz: str | None
) -> str:
    """The id of a schedule declared without a name: the task's name and a digest of its
    call and timing (``tz`` only when given, so ids of UTC schedules stay as they were)."""
    timing = f"{cron}|{every}|{template.queue}" + ("" if tz is None else f"|{tz}")
    return f"{template.name}:{hashlib.sha256(payload + timing.encode()).hexdigest()[:12]}"


class AsyncOmniQ:
    """The async app. ``AsyncOmniQ()`` uses the configured (or default SQLite) stores.

    :param task_queue: backend reference for tasks (URL, plugin name, mapping, instance).
    :param result_storage: the same for results; defaults to the task queue's reference.
    :param event_storage: the same for events.
    :param config: a YAML path, mapping, object or :class:`OmniQConfig` (lowest precedence).
    :param settings: any other config key (``lease=30``, ``secret_key=...``).
    """

    def __init__(
        self,
        task_queue: Any = None,
        result_storage: Any = None,
        event_storage: Any = None,
        *,
        config: Any = None,
        **settings: Any,
    ) -> None:
        self.config: OmniQConfig = load_config(
            config,
            task_queue=task_queue,
            result_storage=result_storage,
            event_storage=event_storage,
            **settings,
        )
        cfg = self.config
        registry.call_hook("omniq_configure", config=cfg)
        queue_ref = cfg.store_ref("task_queue")
        self.task_queue = cast(BaseTaskQueue, registry.resolve("task_queue", queue_ref))
        self.result_storage = cast(
            BaseResultStorage, registry.resolve("result_storage", cfg.result_storage or queue_ref)
        )
        self.event_storage = cast(
            BaseEventStorage, registry.resolve("event_storage", cfg.event_storage or queue_ref)
        )
        self.serializer = Serializer(
            cfg.signing_keys(),
            cfg.signing_key,
            allow_unsigned_dill=cfg.allow_unsigned_dill,
            payload_limit=cfg.payload_limit,
        )
        self.tasks: dict[str, TaskFunction[Any, Any]] = {}
        #: ``delay()``'s templates by task function (see :meth:`_plain_task`).
        self._plain_templates: dict[
            TaskFunction[Any, Any], tuple[TaskOptions, OmniQConfig, Task]
        ] = {}
        #: The per-task middleware chain: plugins' (``omniq_middleware``), then
        #: :meth:`add_middleware`'s.
        self.middleware = MiddlewareChain(plugin_middleware(self))
        self._open_lock: asyncio.Lock | None = None
        self._opened = False
        #: The blocking facade over this app, if it has one (weakly: the facade owns the
        #: app). Its portal's loop is the one the stores are used on, so a worker that
        #: runs this app (``omniq worker --app``) runs there (:meth:`portal`).
        self._facade: weakref.ref[OmniQ] | None = None
        for module in cfg.imports:
            self.import_tasks(module)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config!r}>"

    def portal(self) -> Portal | None:
        """The loop of this app's blocking facade (:class:`OmniQ`), or None for an app
        used only asynchronously. A worker for a facade's app must run on it: the task
        bodies' blocking calls (``delay()``, ``get_result()``) go through it, and the
        stores must be used on one loop."""
        facade = self._facade() if self._facade is not None else None
        return facade._portal if facade is not None else None

    def add_middleware(self, middleware: Middleware) -> None:
        """Append ``middleware`` to this app's chain (see :mod:`omniq.middleware`); add it
        before the worker starts."""
        self.middleware.add(middleware)

    def limits(self) -> Limits:
        """The global limits this app declares: its tasks' ``rate_limit`` and
        ``concurrency_limit`` and the config's ``queue_rate_limits``. A worker passes
        them to every reserve (see :mod:`omniq.limits`); empty when none are declared."""
        return Limits.build(
            task_rates={
                n: t.options.rate_limit for n, t in self.tasks.items() if t.options.rate_limit
            },
            queue_rates=self.config.queue_rate_limits,
            task_concurrency={
                n: t.options.concurrency_limit
                for n, t in self.tasks.items()
                if t.options.concurrency_limit is not None
            },
        )

    # -- lifecycle ---------------------------------------------------------------------

    def _stores(self) -> list[Any]:
        return [self.task_queue, self.result_storage, self.event_storage]

    async def open(self) -> None:
        if self._opened:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                opened: list[Any] = []
                try:
                    for store in self._stores():
                        await store.open()
                        opened.append(store)
                except BaseException:
                    # What opened before the failure holds connections and background
                    # tasks that would keep the process alive: close it, newest first.
                    for store in reversed(opened):
                        try:
                            await store.close()
                        except Exception:
                            log.debug("closing %r after a failed open", store, exc_info=True)
                    raise
                self._opened = True

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            for store in reversed(self._stores()):
                await store.close()

    async def __aenter__(self) -> AsyncOmniQ:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- task registration -------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTaskFunction[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> AsyncTaskFunction[P, R]: ...
    @overload
    def task(self, fn: None = None, /, **options: Any) -> _AsyncTaskDecorator: ...
    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue=..., retries=3,
        timeout=30, ttl=3600, priority=5)``.

        Retries (docs/retries.md): ``retry_on``/``dont_retry_on`` (exception types),
        ``retry_backoff`` (base seconds), ``retry_max_delay`` (cap), ``retry_schedule``
        (``"exponential"``, ``"fixed"``, a list of seconds or a function of the attempt)
        and ``retry_jitter`` (full jitter, on by default)."""

        def register(f: Callable[..., Any]) -> AsyncTaskFunction[Any, Any]:
            return cast(
                AsyncTaskFunction[Any, Any], self._register(f, name, options, AsyncTaskFunction)
            )

        return register(fn) if fn is not None else register

    def _register(
        self,
        fn: Callable[..., Any],
        name: str | None,
        options: Mapping[str, Any],
        cls: type[TaskFunction[Any, Any]],
    ) -> TaskFunction[Any, Any]:
        if isinstance(fn, TaskFunction):
            fn = fn.fn
        if not callable(fn):
            raise ConfigError(f"@task needs a function, got {fn!r}")
        task_name = validate_name("task name", name or default_task_name(fn))
        unknown = set(options) - TaskOptions.NAMES
        if unknown:
            raise ConfigError(
                f"unknown task option(s) {sorted(unknown)}; valid: {sorted(TaskOptions.NAMES)}"
            )
        if "retry_max_delay" in options and "retry_backoff_max" in options:
            raise ConfigError("give retry_max_delay or retry_backoff_max (the same cap), not both")
        opts = TaskOptions(
            queue=options.get("queue", self.config.default_queue),
            max_deliveries=options.get("max_deliveries", self.config.max_deliveries),
            **{k: v for k, v in options.items() if k not in ("queue", "max_deliveries")},
        )
        tf = cls(self, fn, task_name, opts)
        self.tasks[task_name] = tf
        return tf

    def import_tasks(self, module: str) -> None:
        """Import a module whose ``@app.task`` decorators register tasks on this app."""
        import importlib

        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"config key 'imports': cannot import {module!r}: {exc}") from exc

    # -- enqueue -----------------------------------------------------------------------

    def _build_task(
        self,
        fn: Any,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        at: float,
    ) -> Task:
        if not options and isinstance(fn, TaskFunction):
            return self._plain_task(fn, args, kwargs, at)
        template, func_payload = self._task_template(fn, options, at)
        task_id = options.get("task_id")
        return self._fill_task(
            template, func_payload, args, kwargs, new_id() if task_id is None else task_id
        )

    def _plain_task(
        self, fn: TaskFunction[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any], at: float
    ) -> Task:
        """A ``delay()``'s task: the template of ``fn``'s own options is checked and
        built once (per options and config object: neither is changed in place), and
        each call fills in its id, payload and times (~5 µs less a call)."""
        cached = self._plain_templates.get(fn)
        if cached is None or cached[0] is not fn.options or cached[1] is not self.config:
            template = self._task_template(fn, {}, 0.0)[0]
            cached = self._plain_templates[fn] = (fn.options, self.config, template)
        template = cached[2]
        task_id = new_id()
        ttl = fn.options.ttl
        serializer = self.serializer  # (_payload, written out)
        bind = binding(template.name, template.queue, task_id) if serializer.signing_key else None
        return msgspec.structs.replace(
            template,
            id=task_id,
            payload=serializer.dumps_call(
                args, kwargs, None, local_only=self.task_queue.local_only, bind=bind
            ),
            created_at=at,
            expires_at=(at + ttl) if ttl else None,
        )

    def _task_template(self, fn: Any, options: Mapping[str, Any], at: float) -> tuple[Task, Any]:
        """Everything of a task but its id and payload, checked once: what the calls of an
        enqueue_many share. Returns the template and the function that travels in the
        payload (an unregistered callable), if any."""
        unknown = set(options) - _ENQUEUE_OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown enqueue option(s) {sorted(unknown)}; valid: {sorted(_ENQUEUE_OPTIONS)}"
            )
        func_payload = None
        if isinstance(fn, TaskFunction):
            name, defaults = fn.name, fn.options
        elif isinstance(fn, str):
            name = validate_name("task name", fn)
            tf = self.tasks.get(name)
            defaults = (
                tf.options
                if tf
                else TaskOptions(
                    queue=self.config.default_queue, max_deliveries=self.config.max_deliveries
                )
            )
        elif callable(fn):
            # Not registered: the function itself travels (by dill), subject to the trust rule.
            name = "dill:" + default_task_name(fn)
            defaults = TaskOptions(
                queue=self.config.default_queue, max_deliveries=self.config.max_deliveries
            )
            func_payload = fn
        else:
            raise ConfigError(
                f"enqueue needs a task function, a task name or a callable, got {fn!r}"
            )

        given_queue = options.get("queue")  # '' is refused, not taken for the default
        queue = validate_name("queue name", defaults.queue if given_queue is None else given_queue)
        priority = _int(
            "priority", options.get("priority", defaults.priority), PRIORITY_MIN, PRIORITY_MAX
        )
        timeout = _seconds("timeout", options.get("timeout", defaults.timeout))
        ttl = _seconds("ttl", options.get("ttl", defaults.ttl))
        retries = _int("retries", options.get("retries", defaults.max_retries), 0)
        eta = None
        if options.get("eta") is not None:
            eta = _timestamp("eta", options["eta"])
        delay = _seconds("delay", options.get("delay"), allow_zero=True)
        if delay:
            eta = max(eta or at, at + delay)
            if not eta < TIME_MAX:
                raise ConfigError(
                    f"delay={delay!r} s puts the task past the last valid time ({_TIME_RANGE})"
                )
        depends = dependency_ids(options.get("depends_on"))
        on_failure = check_on_failure(options.get("on_failure", "cancel"))
        pass_results = options.get("pass_results", False)
        if not isinstance(pass_results, bool):
            raise ConfigError(f"pass_results must be True or False, got {pass_results!r}")
        if (pass_results or on_failure != "cancel") and not depends:
            raise ConfigError(
                f"{'pass_results' if pass_results else 'on_failure'} is about the tasks in "
                f"depends_on, and none is given: name the parents (a task id, TaskRef or "
                f"GroupRef) in depends_on"
            )
        if options.get("task_id") is not None:
            validate_name("task id", options["task_id"])
        if eta is not None and eta > at:
            self._require(Capability.DELAYED, "delayed tasks (delay/eta)")
        if depends:
            self._require(Capability.DEPENDENCIES, "task dependencies (depends_on)")
        template = Task(
            id="",
            name=name,
            queue=queue,
            priority=priority,
            created_at=at,
            eta=eta,
            expires_at=(at + ttl) if ttl else None,
            timeout=timeout,
            max_retries=retries,
            retry_backoff=defaults.retry_backoff,
            retry_backoff_max=defaults.retry_backoff_max,
            max_deliveries=defaults.max_deliveries,
            depends_on=depends,
            on_parent_failure="run" if on_failure == "run" else "cancel",
            pass_results=pass_results,
            result_ttl=self.config.result_ttl,
            dead_ttl=self.config.dead_ttl,
        )
        return template, func_payload

    def _fill_task(
        self,
        template: Task,
        func_payload: Any,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        task_id: str,
    ) -> Task:
        """The template with its id and the call's payload (``task_id`` already valid)."""
        payload = self._payload(template, func_payload, args, kwargs, task_id)
        return msgspec.structs.replace(template, id=task_id, payload=payload)

    def _fill_tasks(
        self,
        template: Task,
        func_payload: Any,
        calls: Sequence[Sequence[Any] | Mapping[str, Any]],
        ids: Sequence[str],
    ) -> list[Task]:
        """:meth:`_fill_task` for each call (a tuple of args or a dict of kwargs) and the
        id at its place: an enqueue_many's batch (the payloads by
        :meth:`~omniq.serialization.Serializer.dumps_calls`)."""
        serializer = self.serializer
        name, queue = template.name, template.queue
        payloads = serializer.dumps_calls(
            calls,
            func_payload,
            local_only=self.task_queue.local_only,
            binds=[binding(name, queue, i) for i in ids] if serializer.signing_key else None,
        )
        replace = msgspec.structs.replace
        return [replace(template, id=i, payload=p) for i, p in zip(ids, payloads, strict=True)]

    def _payload(
        self,
        template: Task,
        func_payload: Any,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        task_id: str,
    ) -> bytes:
        """The serialised call of the task ``template`` will be under id ``task_id``."""
        serializer = self.serializer
        bind = binding(template.name, template.queue, task_id) if serializer.signing_key else None
        return serializer.dumps_call(
            args, kwargs, func_payload, local_only=self.task_queue.local_only, bind=bind
        )

    def _require(self, cap: Capability, what: str) -> None:
        if cap not in self.task_queue.capabilities:
            raise CapabilityError(
                f"{what} need the {cap.value!r} capability, which {type(self.task_queue).__name__} "
                f"does not declare; pick a backend that has it (sqlite, postgres, redis, nats, "
                f"file://, memory://)"
            )

    def event(
        self,
        task: Task,
        type: EventType,
        worker_id: str | None = None,
        at: float | None = None,
        **detail: Any,
    ) -> TaskEvent:
        """An event of ``task`` (:func:`omniq.events.build_event`)."""
        return build_event(task, type, worker_id, at, **detail)

    async def record_events(self, events: Sequence[TaskEvent]) -> None:
        """Write events to the event storage, unless events are off."""
        await write_events(self._event_storage(), events)

    def _enqueued_events(self, tasks: list[Task], at: float) -> list[TaskEvent]:
        """The ``enqueued`` event of each task (none when events are off)."""
        return enqueued_events(tasks, at) if self.config.events else []

    def _event_storage(self) -> BaseEventStorage | None:
        return self.event_storage if self.config.events else None

    async def _enqueue(
        self, fn: Any, args: Sequence[Any], kwargs: Mapping[str, Any], options: Mapping[str, Any]
    ) -> TaskRef[Any]:
        # (What _build_task, _enqueued_events and _event_storage do, written out: this
        # runs once per delay(), and each Python frame less is ~1-3,000 instructions.)
        if not self._opened:  # (not a coroutine per delay() once open)
            await self.open()
        at = time.time()  # (now(), written out: read at the call, as a clock patched in tests)
        if not options and isinstance(fn, TaskFunction):
            task = self._plain_task(fn, args, kwargs, at)
        else:
            task = self._build_task(fn, args, kwargs, options, at)
        tasks = [task]
        made = None
        if options.get("task_id") is None:
            # An id made just now: no result can exist yet (a given id may have one; one a
            # middleware sets next gets no note, so its wait reads first).
            made = task.id
            self.result_storage.expect(made)
        middleware = self.middleware
        if middleware.enqueues:
            await middleware.before_enqueue_one(task)
        events_on = self.config.events
        [stored] = await self.task_queue.enqueue_recorded(
            tasks,
            enqueued_events(tasks, at) if events_on else [],
            self.event_storage if events_on else None,
            fresh=task.id == made,  # (not when a middleware named it)
        )
        return TaskRef(stored.id, stored.name, stored.queue, stored.state)

    def build_task(self, fn: Any, *args: Any, **kwargs: Any) -> Task:
        """The :class:`Task` that :meth:`enqueue` would store, without storing it: for
        backend APIs such as enqueueing inside your own database transaction."""
        kwargs, options = _split_options(kwargs)
        return self._build_task(fn, args, kwargs, options, now())

    async def enqueue(
        self, fn: Callable[..., Awaitable[R]] | Callable[..., R] | str, *args: Any, **kwargs: Any
    ) -> TaskRef[R]:
        """Enqueue ``fn(*args, **kwargs)``. Keywords named like enqueue options
        (priority, delay, eta, depends_on, queue, ttl, timeout, retries, task_id) are
        options; use ``fn.apply(args, kwargs, **options)`` when the task itself takes
        such a keyword."""
        kwargs, options = _split_options(kwargs)
        return await self._enqueue(fn, args, kwargs, options)

    async def enqueue_many(
        self, /, fn: Any, calls: Iterable[Sequence[Any] | Mapping[str, Any]], **options: Any
    ) -> list[TaskRef[Any]]:
        """Enqueue one task per item of ``calls`` (a tuple of args, or a dict of kwargs) in
        one bulk operation, in order.

        The tasks are built and handed to the backend in batches of ``ENQUEUE_BATCH``
        (:meth:`~omniq.interfaces.BaseTaskQueue.enqueue_batches`): a backend whose server
        stores one batch while the next is built does so. If it raises part way (a bad
        argument, a refused key), what was stored is the tasks before the failing batch,
        as its note says."""
        await self.open()
        at = now()
        calls = list(calls)
        if not calls:
            return []
        template, func_payload = self._task_template(fn, options, at)
        given_id = options.get("task_id")
        if given_id is not None and len(calls) > 1:
            raise ConfigError(
                f"enqueue_many got task_id={given_id!r} for {len(calls)} calls; a task id names "
                f"one task. Leave task_id out (each call gets its own id) or enqueue the calls "
                f"one by one, each with its own task_id. Nothing was enqueued."
            )
        ids = [given_id] if given_id is not None else new_ids(len(calls))
        fill = self._fill_tasks

        def batch(start: int) -> tuple[list[Task], list[TaskEvent]]:
            end = start + ENQUEUE_BATCH
            tasks = fill(template, func_payload, calls[start:end], ids[start:end])
            return tasks, self._enqueued_events(tasks, at)

        starts = range(0, len(calls), ENQUEUE_BATCH)
        # (one batch goes as a list, known whole: nothing to chain)
        batches: Iterable[tuple[list[Task], list[TaskEvent]]]
        batches = [batch(0)] if len(starts) == 1 else (batch(start) for start in starts)
        if self.middleware.enqueues:  # async middleware: build the batches first
            batches = list(batches)
            await self.middleware.before_enqueue(t for tasks, _ in batches for t in tasks)
        stored = await self.task_queue.enqueue_batches(batches, self._event_storage())
        return [TaskRef(t.id, t.name, t.queue, t.state) for t in stored]

    # -- fan-in --------------------------------------------------------------------------

    async def group(
        self, /, fn: Any, calls: Iterable[Sequence[Any] | Mapping[str, Any]], **options: Any
    ) -> GroupRef:
        """Enqueue one task per item of ``calls`` as :meth:`enqueue_many` does (one bulk
        store call, the same options) and return them as a :class:`GroupRef`: give it to
        :meth:`chord` (or as ``depends_on``) for a callback, or to :meth:`get_result` for
        the list of values."""
        refs = await self.enqueue_many(fn, calls, **options)
        if not refs:
            raise ConfigError("group() got no calls: a group needs at least one task")
        return GroupRef(tuple(r.id for r in refs))

    def group_ref(self, ids: Iterable[str | TaskRef[Any]]) -> GroupRef:
        """The :class:`GroupRef` of tasks already enqueued (ids kept from an earlier
        :meth:`group`, e.g. ``list(ref.ids)`` stored somewhere)."""
        checked = dependency_ids(list(ids))
        if not checked:
            raise ConfigError("group_ref() got no ids: a group needs at least one task")
        return GroupRef(checked)

    async def chord(
        self,
        /,
        group: GroupRef | Iterable[str | TaskRef[Any]],
        callback: Callable[..., Awaitable[R]] | Callable[..., R] | str,
        *args: Any,
        on_failure: str = "cancel",
        **kwargs: Any,
    ) -> TaskRef[R]:
        """Enqueue ``callback(results, *args, **kwargs)`` to run once after every task of
        ``group``: ``results`` is the list of their values in the group's order.

        ``on_failure="cancel"`` (the default): a task of the group that does not succeed
        cancels the callback (:class:`~omniq.errors.DependencyFailedError`, as any
        dependent). ``on_failure="run"``: the callback runs once every task ended, and the
        entry of one that did not succeed is its exception (its own type where the worker
        can rebuild it, else :class:`~omniq.errors.TaskFailedError`). Other keywords named
        like enqueue options are options, as in :meth:`enqueue`."""
        kwargs, options = _split_options(kwargs)
        if "depends_on" in options or "pass_results" in options:
            raise ConfigError(
                "chord() sets depends_on (the group) and pass_results itself; for more "
                "parents, enqueue the callback with depends_on=[...] and pass_results=True"
            )
        options.update(depends_on=group, pass_results=True, on_failure=on_failure)
        return await self._enqueue(callback, args, kwargs, options)

    async def gather_results(
        self, task_ids: Sequence[str], timeout: float | None = None
    ) -> list[Any]:
        """The outcome of each task, in order: its value, or the exception it ended with
        (not raised: a list entry). Waits up to ``timeout`` s in all (None: forever) for
        those not finished; :class:`ResultTimeoutError` past it. This is what a
        ``pass_results`` task is called with; :meth:`get_result` on a group raises the
        first exception instead."""
        await self.open()
        ids = [validate_name("task id", i) for i in task_ids]
        return [
            o.error if isinstance(o, _Failure) else o for o in await self._outcomes(ids, timeout)
        ]

    async def _outcomes(self, ids: Sequence[str], timeout: float | None) -> list[Any]:
        """Each task's value or :class:`_Failure`, in order: the stored results in one
        read, then each missing one waited for, all under one deadline."""
        wait = _seconds("timeout", timeout, allow_zero=True)
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        found = await self.result_storage.get_many(list(dict.fromkeys(ids)))
        out: list[Any] = []
        for task_id in ids:
            result = found.get(task_id)
            if result is None:
                left = None if deadline is None else max(deadline - loop.time(), 0.0)
                out.append(await self._outcome_of(task_id, left))
            else:
                out.append(self._outcome(result))
        return out

    # -- results -----------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task:
        await self.open()
        task = await self.task_queue.get(validate_name("task id", task_id))
        if task is None:
            raise TaskNotFoundError(task_id, " (never enqueued, or deleted after its retention)")
        return task

    async def get_task_result(self, task_id: str) -> TaskResult | None:
        await self.open()
        return await self.result_storage.get(validate_name("task id", task_id))

    @overload
    async def get_result(self, task: TaskRef[R], timeout: float | None = None) -> R: ...
    @overload
    async def get_result(self, task: str, timeout: float | None = None) -> Any: ...
    async def get_result(
        self, task: TaskRef[Any] | GroupRef | str, timeout: float | None = None
    ) -> Any:
        """Wait for a task's value; raise its error (rebuilt as its own type where that
        type is a builtin or already imported here, else :class:`TaskFailedError`).

        For a :class:`GroupRef`, the list of its tasks' values in order, or the first
        error in that order. ``timeout=None`` waits forever (for a group, ``timeout`` is
        for the whole group); on timeout :class:`ResultTimeoutError`.
        """
        await self.open()
        if isinstance(task, GroupRef):
            ids = [validate_name("task id", i) for i in task.ids]
            outcomes = await self._outcomes(ids, timeout)
        else:
            task_id = validate_name("task id", task.id if isinstance(task, TaskRef) else task)
            outcomes = [await self._outcome_of(task_id, timeout)]
        for outcome in outcomes:
            if isinstance(outcome, _Failure):
                raise outcome.error
        return outcomes if isinstance(task, GroupRef) else outcomes[0]

    async def _outcome_of(self, task_id: str, timeout: float | None) -> Any:
        """Wait for one task's value, or :class:`_Failure` with its error (see
        :meth:`get_result`); ``timeout=None`` waits forever."""
        wait = _seconds("timeout", timeout, allow_zero=True)
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        checked = False
        while True:
            remaining = 1.0 if deadline is None else min(1.0, deadline - loop.time())
            result = await self.result_storage.wait(task_id, max(remaining, 0.0))
            if result is not None:
                return self._outcome(result)
            # No result yet: a task that ended without running never gets one.
            stored = await self.task_queue.get(task_id)
            if stored is None and not checked:
                result = await self.result_storage.get(task_id)
                if result is not None:
                    return self._outcome(result)
                raise TaskNotFoundError(
                    task_id, " (never enqueued, or deleted after its retention)"
                )
            checked = True
            if stored is not None and stored.state in _ENDED_WITHOUT_RUN:
                err = stored.error or ErrorInfo(type=stored.state.value, message="no result")
                if stored.state is TaskState.DEAD and stored.error is not None:
                    # (its result, written just after, would say the same)
                    return _Failure(rebuild_error(task_id, stored.state.value, err))
                return _Failure(
                    TaskFailedError(
                        task_id, stored.state.value, err.type, err.message, err.traceback
                    )
                )
            if deadline is not None and loop.time() >= deadline:
                raise ResultTimeoutError(
                    f"task {task_id} has no result after {wait} s (state: "
                    f"{stored.state.value if stored else 'unknown'}); it may still finish"
                )

    def _outcome(self, result: TaskResult) -> Any:
        """A stored result's value, or :class:`_Failure` with its rebuilt error."""
        if result.state is TaskState.SUCCEEDED:
            if result.value is None:
                return None
            return self.serializer.loads(
                result.value,
                local_only=self.result_storage.local_only,
                origin=type(self.result_storage).__name__,
            )
        err = result.error or ErrorInfo(type="Error", message=result.state.value)
        return _Failure(rebuild_error(result.task_id, result.state.value, err))

    # -- inspection and control --------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        await self.open()
        task = await self.get_task(task_id)
        cancelled = await self.task_queue.cancel(task.id)
        if cancelled:
            await self.record_events([self.event(task, EventType.CANCELLED)])
        return cancelled

    async def requeue(self, task_id: str, by: str = "api") -> Task:
        """Enqueue a dead, failed, cancelled or expired task again, attempts reset;
        the new task (see :meth:`requeue_many`)."""
        return (await self.requeue_many([task_id], by=by))[0]

    async def requeue_many(self, task_ids: Iterable[str], by: str = "api") -> list[Task]:
        """Enqueue dead, failed, cancelled or expired tasks again, attempts reset (see
        :meth:`BaseTaskQueue.requeue_many`: all refused if one cannot be); a
        ``requeued`` event on each original records ``by`` (who requeued: ``"api"``,
        ``"cli:user@host"``, ``"dashboard ..."``) and the new task's id. Returns the new
        tasks, in the order given."""
        await self.open()
        ids = list(dict.fromkeys(validate_name("task id", i) for i in task_ids))
        new = await self.task_queue.requeue_many(ids)
        at = now()
        events: list[TaskEvent] = []
        for old_id, task in zip(ids, new, strict=True):
            # the original shares the new task's queue and name (the store copied them)
            events.append(
                TaskEvent(
                    id=new_id(),
                    task_id=old_id,
                    queue=task.queue,
                    type=EventType.REQUEUED,
                    timestamp=at,
                    detail={"name": task.name, "by": by, "to": task.id},
                )
            )
            events.append(
                self.event(
                    task, EventType.ENQUEUED, at=at, state=task.state.value, requeued_from=old_id
                )
            )
        await self.record_events(events)
        return new

    async def requeue_selected(
        self,
        selection: RequeueSelection,
        by: str = "api",
        batch: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> list[tuple[str, str]]:
        """Requeue every task ``selection`` takes, ``batch`` at a time (one
        :meth:`requeue_many` each, so a failure stops after whole batches); ``progress``
        is called with the running total after each. Returns ``(old id, new id)`` pairs."""
        await self.open()
        done: list[tuple[str, str]] = []
        async for page in requeueing.select(self, selection, page=max(1, min(batch, MAX_PAGE))):
            new = await self.requeue_many([t.id for t in page], by=by)
            done += [(t.id, n.id) for t, n in zip(page, new, strict=True)]
            if progress is not None:
                progress(len(done))
        return done

    async def requeue_candidates(self, selection: RequeueSelection) -> AsyncIterator[list[Task]]:
        """The tasks :meth:`requeue_selected` would take, a page at a time: what a dry
        run shows."""
        await self.open()
        async for page in requeueing.select(self, selection):
            yield page

    async def requeued_to(self, tasks: Iterable[Task]) -> dict[str, str]:
        """Which of ``tasks`` were requeued already, and as which task (from events)."""
        await self.open()
        return await requeueing.requeued_to(self, tasks)

    async def events(
        self,
        task_id: str | None = None,
        queue: str | None = None,
        types: Iterable[str] | None = None,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        limit: int | None = 1000,
        order: str = "asc",
    ) -> list[TaskEvent]:
        """Events matching every filter, oldest first by default."""
        await self.open()
        check_event_order(order)
        valid_types = {t.value for t in EventType}
        type_list = None
        if types is not None:
            type_list = [t.value if isinstance(t, EventType) else t for t in types]
            bad = [t for t in type_list if t not in valid_types]
            if bad:
                raise ConfigError(f"unknown event type(s) {bad}; valid: {sorted(valid_types)}")
        return await self.event_storage.query(
            task_id=validate_name("task id", task_id) if task_id else None,
            queue=validate_name("queue name", queue) if queue else None,
            types=type_list,
            since=_timestamp("since", since) if since is not None else None,
            until=_timestamp("until", until) if until is not None else None,
            limit=limit,
            order=order,
        )

    async def stats(self) -> dict[str, dict[TaskState, int]]:
        await self.open()
        return await self.task_queue.stats()

    async def list_tasks(
        self, queue: str | None = None, states: Iterable[TaskState] | None = None, limit: int = 100
    ) -> list[Task]:
        await self.open()
        return await self.task_queue.list(queue=queue, states=states, limit=limit)

    async def purge(
        self, queue: str | None = None, states: Iterable[TaskState] | None = None
    ) -> int:
        """Delete tasks of ``queue`` (every queue when None) in ``states``; with no
        states, every state except ``running`` (a running task is deleted only when asked
        for by name, since its worker still holds it)."""
        await self.open()
        return await self.task_queue.purge(
            queue=validate_name("queue name", queue) if queue else None, states=states
        )

    # -- schedules ---------------------------------------------------------------------

    async def schedule(
        self,
        /,
        fn: Any,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        cron: str | None = None,
        interval: float | timedelta | None = None,
        name: str | None = None,
        tz: str | None = None,
        schedule_id: str | None = None,
        catch_up: bool = False,
        start_at: float | datetime | None = None,
        **options: Any,
    ) -> str:
        """Run ``fn`` on a cron expression (read in time zone ``tz``, UTC by default) or a
        fixed interval; return the schedule id (docs/schedules.md).

        With ``name`` (``schedule_id`` is the older spelling) the schedule's id is that
        name, and declaring the same name again updates the schedule in place: its cron,
        interval, time zone, arguments and options, keeping its paused state (and its
        next firing when the timing did not change). Without a name the id is derived
        from the task, its arguments and its timing, so an application that declares its
        schedules at every start does not duplicate them. Neither depends on
        ``secret_key``.
        """
        await self.open()
        self._require(Capability.SCHEDULES, "schedules")
        if (cron is None) == (interval is None):
            raise ConfigError(
                "schedule needs exactly one of cron='*/5 * * * *' or interval=seconds"
            )
        if name is not None and schedule_id is not None and name != schedule_id:
            raise ConfigError(
                f"schedule got name={name!r} and schedule_id={schedule_id!r}: give one "
                f"(schedule_id is the older name of the same thing)"
            )
        name = name if name is not None else schedule_id
        if name is not None:
            validate_name("schedule name", name)
        every = _seconds("interval", interval)
        if cron is not None:
            validate_cron(cron)
        if tz is not None:
            if cron is None:
                raise ConfigError(
                    f"tz={tz!r} applies to cron schedules; an interval counts elapsed time"
                )
            validate_timezone(tz)
        at = now()
        # (a fixed template id: each firing's task is signed for its own id when it fires)
        template = self._build_task(
            fn, tuple(args), dict(kwargs or {}), {**options, "task_id": _TEMPLATE_ID}, at
        )
        derived = _derived_schedule_id(template, unsigned(template.payload), cron, every, tz)
        sched = Schedule(
            id=name or derived,
            template=template,
            cron=cron,
            interval=every,
            tz=tz,
            catch_up=catch_up,
            created_at=at,
        )
        first = _timestamp("start_at", start_at) if start_at is not None else None
        sched.next_run = (
            first if first is not None else sched.following(at) if cron else at + (every or 0)
        )
        if not sched.next_run < TIME_MAX:
            raise ConfigError(
                f"interval={interval!r} puts the first firing past the last valid time "
                f"({_TIME_RANGE})"
            )
        # Earlier declarations of this very call under another id: the id an unnamed
        # schedule had before ids stopped depending on secret_key, and the unnamed id
        # when a name is given now. They are moved to the new id, not left firing.
        legacy = _derived_schedule_id(template, template.payload, cron, every, None)
        moved = []
        for old_id in dict.fromkeys((legacy, derived)):
            old = await self.task_queue.get_schedule(old_id) if old_id != sched.id else None
            if old is not None:
                moved.append(old)
        prior = await self.task_queue.get_schedule(sched.id) or (moved[0] if moved else None)
        if prior is not None:
            sched.paused, sched.created_at = prior.paused, prior.created_at or at
            if (prior.cron, prior.interval, prior.tz) == (cron, every, tz) and first is None:
                sched.next_run, sched.last_run = prior.next_run, prior.last_run
        await self.task_queue.add_schedule(sched)
        for old in moved:
            await self.task_queue.delete_schedule(old.id)
        return sched.id

    async def _get_schedule(self, schedule_id: str) -> Schedule:
        await self.open()
        sched = await self.task_queue.get_schedule(validate_name("schedule id", schedule_id))
        if sched is None:
            ids = [s.id for s in await self.task_queue.list_schedules()]
            raise ConfigError(f"no schedule {schedule_id!r}; existing: {ids or 'none'}")
        return sched

    async def pause_schedule(self, schedule_id: str) -> None:
        await self._get_schedule(schedule_id)
        await self.task_queue.set_schedule_paused(schedule_id, True)

    async def resume_schedule(self, schedule_id: str) -> None:
        """Resume; missed firings are not replayed unless the schedule has ``catch_up``."""
        sched = await self._get_schedule(schedule_id)
        nxt = None if sched.catch_up else sched.following(now())
        await self.task_queue.set_schedule_paused(schedule_id, False, nxt)

    async def delete_schedule(self, schedule_id: str) -> bool:
        await self.open()
        return await self.task_queue.delete_schedule(validate_name("schedule id", schedule_id))

    async def list_schedules(self) -> list[Schedule]:
        await self.open()
        return await self.task_queue.list_schedules()

    async def workers(self) -> list[WorkerInfo]:
        """The live workers registered in the task queue's store, by id (each worker
        registers at start and on its heartbeat; a stopped or killed one drops out)."""
        await self.open()
        return await self.task_queue.list_workers()

    async def run_due_schedules(self) -> list[Task]:
        """Claim due firings and enqueue their tasks (every worker calls this; the
        claim's compare-and-set and the deterministic task ids make it fire once)."""
        if Capability.SCHEDULES not in self.task_queue.capabilities:
            return []
        await self.open()
        return await fire_due_schedules(
            self.task_queue, self._event_storage(), self.serializer, self.middleware
        )

    # -- workers -----------------------------------------------------------------------

    def worker(self, **options: Any) -> Worker:
        """A worker for this app; options override the ``worker`` config section."""
        from .worker.runtime import Worker

        return Worker(self, **options)

    async def run_worker(self, **options: Any) -> str:
        """Run a worker until it stops; return why (``"burst"``, ``"signal"``, ...)."""
        portal = self.portal()
        if portal is not None and not portal.on_loop_thread():
            log.warning(
                "the worker of a blocking app (OmniQ) runs on a loop other than the app's "
                "own: its tasks' blocking calls (delay(), get_result()) go through the app's "
                "loop and meet stores opened on this one. Run it with app.run_worker() or "
                "'omniq worker --app', not app.aio.run_worker()"
            )
        return await self.worker(**options).run()


class _Failure:
    """A task's error as an outcome among values (a value may itself be an exception)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _AsyncTaskDecorator(Protocol):
    def __call__(self, fn: Callable[P, R], /) -> AsyncTaskFunction[P, R]: ...


class _SyncTaskDecorator(Protocol):
    def __call__(self, fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...


class OmniQ(SyncWrapper[AsyncOmniQ]):
    """The blocking app: the same methods as :class:`AsyncOmniQ`, without ``await``."""

    def __init__(
        self,
        task_queue: Any = None,
        result_storage: Any = None,
        event_storage: Any = None,
        *,
        config: Any = None,
        **settings: Any,
    ) -> None:
        super().__init__(
            AsyncOmniQ(task_queue, result_storage, event_storage, config=config, **settings)
        )
        self._async._facade = weakref.ref(self)

    def add_middleware(self, middleware: Middleware) -> None:
        """Append ``middleware`` to the app's chain (see :mod:`omniq.middleware`)."""
        self._async.add_middleware(middleware)

    @property
    def config(self) -> OmniQConfig:
        return self._async.config

    @property
    def tasks(self) -> dict[str, TaskFunction[Any, Any]]:
        return self._async.tasks

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> SyncTaskFunction[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...
    @overload
    def task(self, fn: None = None, /, **options: Any) -> _SyncTaskDecorator: ...
    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Any:
        def register(f: Callable[..., Any]) -> SyncTaskFunction[Any, Any]:
            inner = self._async._register(f, name, options, AsyncTaskFunction)
            sync_fn: SyncTaskFunction[Any, Any] = SyncTaskFunction(
                self, cast(AsyncTaskFunction[Any, Any], inner)
            )
            return sync_fn

        return register(fn) if fn is not None else register

    def run_worker(self, **options: Any) -> str:
        """Run a worker in this thread's stead until it stops (SIGTERM/SIGINT drain it)."""
        from .worker.signals import StopOnSignal

        with StopOnSignal(self._portal) as stop:
            return self._portal.call(stop.run, self._async, options)

    open = blocking(AsyncOmniQ.open)
    enqueue = blocking(AsyncOmniQ.enqueue)

    def build_task(self, fn: Any, *args: Any, **kwargs: Any) -> Task:
        return self._async.build_task(fn, *args, **kwargs)

    enqueue_many = blocking(AsyncOmniQ.enqueue_many)
    group = blocking(AsyncOmniQ.group)
    chord = blocking(AsyncOmniQ.chord)
    gather_results = blocking(AsyncOmniQ.gather_results)

    def group_ref(self, ids: Iterable[str | TaskRef[Any]]) -> GroupRef:
        return self._async.group_ref(ids)

    get_result = blocking(AsyncOmniQ.get_result)
    get_task = blocking(AsyncOmniQ.get_task)
    get_task_result = blocking(AsyncOmniQ.get_task_result)
    cancel = blocking(AsyncOmniQ.cancel)
    requeue = blocking(AsyncOmniQ.requeue)
    requeue_many = blocking(AsyncOmniQ.requeue_many)
    requeue_selected = blocking(AsyncOmniQ.requeue_selected)
    requeued_to = blocking(AsyncOmniQ.requeued_to)
    events = blocking(AsyncOmniQ.events)
    stats = blocking(AsyncOmniQ.stats)
    list_tasks = blocking(AsyncOmniQ.list_tasks)
    purge = blocking(AsyncOmniQ.purge)
    schedule = blocking(AsyncOmniQ.schedule)
    pause_schedule = blocking(AsyncOmniQ.pause_schedule)
    resume_schedule = blocking(AsyncOmniQ.resume_schedule)
    delete_schedule = blocking(AsyncOmniQ.delete_schedule)
    list_schedules = blocking(AsyncOmniQ.list_schedules)
    run_due_schedules = blocking(AsyncOmniQ.run_due_schedules)
    workers = blocking(AsyncOmniQ.workers)
