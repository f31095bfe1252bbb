"""The pages and actions. Each handler reads through the app's three stores and renders a
template; actions are POSTs that check the CSRF token and the read-only switch first."""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from omniq.config import mask_url
from omniq.errors import (
    BackendUnavailableError,
    ConfigError,
    OmniQError,
    QueueError,
    TaskNotFoundError,
)
from omniq.interfaces import REQUEUE_STATES, Capability, EventCount
from omniq.models import ACTIVE_STATES, EventType, TaskState, validate_name

from .charts import line_chart, percentile
from .formats import parse_time
from .security import CSRF_FIELD, csrf_ok
from .shared import Shared

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ

Stats = dict[str, dict[TaskState, int]]
#: Rows per task-list page.
PAGE = 50
#: The overview's window: an hour in one-minute buckets.
WINDOW, STEP = 3600, 60
#: How many recent tasks the queue-wait chart reads, and its bucket width.
WAIT_SAMPLE, WAIT_STEP = 500, 300
#: Longest argument or result text shown on a page.
SHOWN = 4000
#: Most dependents the task page lists (a fan-out can be large).
SHOWN_DEPENDENTS = 200
#: Failed attempts (a task that dies has one too, so "dead" would count it twice).
FAILURE_TYPES = ("failed",)
#: Every state a store may report, in lifecycle order.
STATE_ORDER = [s.value for s in TaskState]
#: The states shown as columns and filter choices: a task never ends ``failed`` (its last
#: failed attempt leaves it ``dead``; ``failed`` is a result's and an event's state), and
#: a column of zeros there read as "nothing failed" beside the dead ones.
SHOWN_STATES = [s for s in STATE_ORDER if s != TaskState.FAILED.value]


def shown(value: Any) -> str:
    """``repr`` of a decoded value, cut to :data:`SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + f"... ({len(text)} characters)"


class Views:
    """The handlers, sharing the app, the templates and the read-only switch."""

    def __init__(
        self, omniq: AsyncOmniQ, templates: Jinja2Templates, *, read_only: bool, title: str
    ) -> None:
        self.omniq = omniq
        self.templates = templates
        self.read_only = read_only
        self.title = title
        self.stats: Shared[Stats] = Shared(omniq.task_queue.stats)
        self.hour: Shared[tuple[float, list[EventCount]]] = Shared(self.hour_counts)

    # -- rendering -----------------------------------------------------------------------

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        context.update(
            request=request,
            read_only=self.read_only,
            title=self.title,
            csrf_field=CSRF_FIELD,
            csrf_token=request.state.csrf_token,
            link=lambda route, **q: self.link(request, route, **q),
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    @staticmethod
    def link(request: Request, route: str, **query: Any) -> str:
        """The path of ``route`` (path parameters in ``query`` go into the path), plus the
        non-empty remaining ``query`` as a query string."""
        route_params = {
            k: query.pop(k) for k in ("task_id", "schedule_id", "action", "path") if k in query
        }
        url = request.url_for(route, **route_params).path
        pairs = [(k, v) for k, v in query.items() if v not in (None, "", [], ())]
        flat = [(k, x) for k, v in pairs for x in (v if isinstance(v, (list, tuple)) else [v])]
        return url + ("?" + urlencode(flat) if flat else "")

    def exception_handlers(self) -> Mapping[Any, Callable[..., Any]]:
        async def bad_request(request: Request, exc: Exception) -> Response:
            status = (
                404
                if isinstance(exc, TaskNotFoundError)
                else 503  # a store that does not answer: not the request's fault
                if isinstance(exc, BackendUnavailableError)
                else 400
            )
            return self.render(
                request, "error.html", status_code=status, message=mask_url(str(exc))
            )

        async def timed_out(request: Request, exc: Exception) -> Response:
            # A store that stalls once connected (a hung server, a partition): a new
            # connection's timeout comes up bare, not as the store's outage error.
            return self.render(
                request,
                "error.html",
                status_code=503,
                message="the store did not answer in time (TimeoutError); check that it "
                "runs and is reachable",
            )

        async def http_error(request: Request, exc: HTTPException) -> Response:
            if not hasattr(request.state, "csrf_token"):
                return Response(exc.detail, status_code=exc.status_code)
            return self.render(
                request, "error.html", status_code=exc.status_code, message=exc.detail
            )

        return {OmniQError: bad_request, TimeoutError: timed_out, HTTPException: http_error}

    async def opened(self) -> AsyncOmniQ:
        await self.omniq.open()
        return self.omniq

    # -- overview ------------------------------------------------------------------------

    async def overview_context(self) -> dict[str, Any]:
        q = await self.opened()
        stats = await self.stats.get()
        now = time.time()
        since, counts = await self.hour.get()
        buckets = [since + i * STEP for i in range(WINDOW // STEP)]
        done: dict[str, int] = {}
        failed: dict[str, int] = {}
        per_bucket = {"succeeded": [0] * len(buckets), "failed": [0] * len(buckets)}
        if q.config.events:
            for c in counts:
                i = int((c.bucket - since) // STEP)
                if c.type == "succeeded":
                    done[c.queue] = done.get(c.queue, 0) + c.count
                    per_bucket["succeeded"][i] += c.count
                else:
                    failed[c.queue] = failed.get(c.queue, 0) + c.count
                    per_bucket["failed"][i] += c.count
        queues = sorted(set(stats) | set(done) | set(failed))
        rows: list[dict[str, Any]] = [
            {
                "queue": name,
                "counts": {s.value: n for s, n in stats.get(name, {}).items()},
                "done": done.get(name, 0),
                "failed": failed.get(name, 0),
            }
            for name in queues
        ]
        totals = {s: sum(r["counts"].get(s, 0) for r in rows) for s in STATE_ORDER}
        states = [s for s in STATE_ORDER if s in SHOWN_STATES or totals[s]]
        running = await q.task_queue.list_page(states=[TaskState.RUNNING], limit=200)
        workers: dict[str, int] = {}
        for t in running.tasks:
            workers[t.lease_owner or "?"] = workers.get(t.lease_owner or "?", 0) + 1
        return {
            "rows": rows,
            "states": states,
            "totals": totals,
            "events_on": q.config.events,
            "workers": sorted(workers.items()),
            "more_running": running.cursor is not None,
            "throughput": line_chart(
                "Tasks per minute",
                buckets,
                {
                    "succeeded / min": per_bucket["succeeded"],
                    "failed attempts / min": per_bucket["failed"],
                },
            ),
            "wait": await self.wait_chart(now),
        }

    async def hour_counts(self) -> tuple[float, list[EventCount]]:
        """Succeeded and failed events per minute and queue over the last hour (and the
        hour's start): what the overview draws, shared through :attr:`hour`."""
        until = (math.floor(time.time() / STEP) + 1) * STEP
        since = until - WINDOW
        if not self.omniq.config.events:
            return since, []
        await self.omniq.open()
        counts = await self.omniq.event_storage.counts(
            since=since, until=until, step=STEP, types=["succeeded", *FAILURE_TYPES]
        )
        return since, counts

    async def wait_chart(self, now: float) -> Any:
        """Queue wait (start minus enqueue or eta) of recent first attempts, p50 and p95
        per bucket, from one page of the newest tasks that started."""
        page = await self.omniq.task_queue.list_page(
            states=[TaskState.SUCCEEDED, TaskState.RUNNING], since=now - WINDOW, limit=WAIT_SAMPLE
        )
        since = now - WINDOW
        buckets = [since + i * WAIT_STEP for i in range(WINDOW // WAIT_STEP)]
        waits: list[list[float]] = [[] for _ in buckets]
        for t in page.tasks:
            if t.started_at is None or t.attempts != 1 or t.started_at < since:
                continue
            i = min(int((t.started_at - since) // WAIT_STEP), len(buckets) - 1)
            waits[i].append(max(0.0, t.started_at - max(t.created_at, t.eta or 0.0)))
        return line_chart(
            "Queue wait (s)",
            buckets,
            {
                "p50 wait": [percentile(w, 0.5) for w in waits],
                "p95 wait": [percentile(w, 0.95) for w in waits],
            },
            unit=" s",
        )

    async def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", **await self.overview_context())

    async def overview_live(self, request: Request) -> Response:
        return self.render(request, "_overview_live.html", **await self.overview_context())

    # -- tasks ---------------------------------------------------------------------------

    async def tasks(self, request: Request) -> Response:
        return await self.task_list(request, "tasks.html", fixed_state=None)

    async def dead(self, request: Request) -> Response:
        return await self.task_list(request, "dead.html", fixed_state=TaskState.DEAD)

    async def task_list(
        self, request: Request, template: str, fixed_state: TaskState | None
    ) -> Response:
        q = await self.opened()
        params = request.query_params
        queue = params.get("queue") or None
        name = params.get("name") or None
        state = fixed_state.value if fixed_state else params.get("state") or None
        if queue:
            validate_name("queue name", queue)
        if state and state not in STATE_ORDER:
            raise ConfigError(f"unknown state {state!r}; valid: {', '.join(STATE_ORDER)}")
        since = parse_time("since", params.get("since"))
        until = parse_time("until", params.get("until"))
        cursor = params.get("cursor") or None
        page = await q.task_queue.list_page(
            queue=queue,
            states=[TaskState(state)] if state else None,
            name=name,
            since=since,
            until=until,
            cursor=cursor,
            limit=PAGE,
        )
        filters = {
            "queue": queue,
            "name": name,
            "state": None if fixed_state else state,
            "since": params.get("since"),
            "until": params.get("until"),
        }
        requeued = await self.omniq.requeued_to(page.tasks) if fixed_state is TaskState.DEAD else {}
        context: dict[str, Any] = {
            "tasks": page.tasks,
            "next_cursor": page.cursor,
            "cursor": cursor,
            "filters": filters,
            "states": SHOWN_STATES,
            "requeued": requeued,
            "queues": sorted(await self.stats.get()),
            "requeue_states": {s.value for s in REQUEUE_STATES},
            "done": params.get("requeued"),
        }
        live = "_task_rows.html" if template == "tasks.html" else "_dead_rows.html"
        return self.render(request, live if params.get("fragment") else template, **context)

    async def task(self, request: Request) -> Response:
        q = await self.opened()
        task_id = validate_name("task id", request.path_params["task_id"])
        task = await q.task_queue.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id, " (never enqueued, or deleted after its retention)")
        origin = type(q.task_queue).__name__
        call: dict[str, Any] = {}
        try:
            args, kwargs, func = q.serializer.loads_call(
                task.payload, local_only=q.task_queue.local_only, origin=origin
            )
            call = {"args": shown(args), "kwargs": shown(kwargs), "func": func is not None}
        except OmniQError as exc:
            call = {"error": mask_url(str(exc))}
        result = await q.result_storage.get(task_id)
        value = None
        if result is not None and result.value is not None:
            try:
                value = shown(
                    q.serializer.loads(
                        result.value,
                        local_only=q.result_storage.local_only,
                        origin=type(q.result_storage).__name__,
                    )
                )
            except OmniQError as exc:
                value = f"(cannot decode: {mask_url(str(exc))})"
        events = await q.event_storage.query(task_id=task_id, limit=500) if q.config.events else []
        parents = [(pid, await q.task_queue.get(pid)) for pid in task.depends_on[:50]]
        dependents = (
            (await q.task_queue.dependents(task_id))[:SHOWN_DEPENDENTS]
            if Capability.DEPENDENCIES in type(q.task_queue).capabilities
            else None
        )
        links = {
            "requeued_to": [e.detail.get("to") for e in events if e.type is EventType.REQUEUED],
            "requeued_from": [
                e.detail["requeued_from"]
                for e in events
                if e.type is EventType.ENQUEUED and "requeued_from" in e.detail
            ],
        }
        error = task.error or (result.error if result else None)
        return self.render(
            request,
            "task.html",
            task=task,
            call=call,
            result=result,
            value=value,
            error=error,
            events=events,
            parents=parents,
            dependents=dependents,
            dependents_shown=SHOWN_DEPENDENTS,
            links=links,
            can_requeue=task.state in REQUEUE_STATES,
            active=task.state in ACTIVE_STATES,
            now=time.time(),
            done=request.query_params.get("requeued"),
        )

    # -- actions -------------------------------------------------------------------------

    async def action_form(self, request: Request) -> Any:
        """The form of an action, after the read-only and CSRF checks."""
        if self.read_only:
            raise HTTPException(403, "the dashboard is read-only")
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page and try again")
        return form

    @staticmethod
    def who(request: Request) -> str:
        """Who acted, for the ``requeued`` event: the basic-auth user, else the address."""
        client = request.client.host if request.client else "?"
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user = base64.b64decode(value, validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                user = ""
            if user:
                return f"dashboard user {user} ({client})"
        return f"dashboard ({client})"

    async def requeue(self, request: Request) -> Response:
        form = await self.action_form(request)
        q = await self.opened()
        ids = [validate_name("task id", i) for i in form.getlist("task_id") if isinstance(i, str)]
        if not ids:
            raise ConfigError("select at least one task to requeue")
        new = await q.requeue_many(ids, by=self.who(request))
        await self.stats.fresh()
        back = form.get("back")
        if back == "task" and len(new) == 1:
            return RedirectResponse(self.link(request, "task", task_id=new[0].id, requeued=1), 303)
        return RedirectResponse(self.link(request, "dead", requeued=len(new)), 303)

    async def schedule_action(self, request: Request) -> Response:
        await self.action_form(request)
        q = await self.opened()
        schedule_id = validate_name("schedule id", request.path_params["schedule_id"])
        action = request.path_params["action"]
        if action == "pause":
            await q.pause_schedule(schedule_id)
        elif action == "resume":
            await q.resume_schedule(schedule_id)
        elif action == "delete":
            if not await q.delete_schedule(schedule_id):
                raise QueueError(f"no schedule {schedule_id!r}")
        else:
            raise HTTPException(
                404, f"unknown schedule action {action!r}; valid: pause, resume, delete"
            )
        return RedirectResponse(self.link(request, "schedules", done=action, id=schedule_id), 303)

    # -- schedules and plugins -----------------------------------------------------------

    async def schedules(self, request: Request) -> Response:
        q = await self.opened()
        params = request.query_params
        return self.render(
            request,
            "schedules.html",
            schedules=await q.list_schedules(),
            done=params.get("done"),
            done_id=params.get("id"),
        )

    async def workers(self, request: Request) -> Response:
        """The live workers from the task queue's registry (each registers at start and on
        its heartbeat, so an idle worker shows too, and a killed one drops out)."""
        found = await self.omniq.workers()
        now = time.time()
        rows = [(w, max(0.0, now - w.heartbeat_at)) for w in found]
        return self.render(request, "workers.html", workers=rows)

    async def plugins(self, request: Request) -> Response:
        from omniq.cli.state import describe_ref
        from omniq.registry import registry

        q = self.omniq  # nothing to read from the stores: no need to open them
        default = q.config.store_ref("task_queue")
        stores = [
            (
                kind,
                describe_ref(getattr(q.config, kind) or default),
                type(getattr(q, kind)).__name__,
            )
            for kind in ("task_queue", "result_storage", "event_storage")
        ]
        infos = sorted(registry.plugins(include_builtin=True), key=lambda i: i.name)
        return self.render(request, "plugins.html", plugins=infos, stores=stores)
