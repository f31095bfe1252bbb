"""The ASGI app: routes, the middleware stack, and the store lifecycle.

Every page reads through the store interfaces (``list_page``, ``stats``, ``counts``,
``query``...), never into one backend, so it shows any mix of backends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from . import formats
from .security import AuthMiddleware, Credentials, CsrfCookieMiddleware
from .views import Views

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ, OmniQ

__all__ = ["create_app"]


def _async_app(app: Any) -> tuple[AsyncOmniQ, bool]:
    """The AsyncOmniQ to read through, and whether the dashboard owns it (and so opens
    and closes it). A sync OmniQ's stores live on its own loop thread, so the dashboard
    builds its own AsyncOmniQ from the same configuration."""
    from omniq.app import AsyncOmniQ, OmniQ

    if isinstance(app, AsyncOmniQ):
        return app, False
    if isinstance(app, OmniQ):
        return AsyncOmniQ(config=app.config), True
    return AsyncOmniQ(config=app), True


def templates() -> Jinja2Templates:
    """The package's templates; autoescape always on, so every string from a store is
    text in the page, never markup."""
    env = Environment(
        loader=PackageLoader("omniq_dashboard", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(formats.FILTERS)
    return Jinja2Templates(env=env)


def create_app(
    app: OmniQ | AsyncOmniQ | Any = None,
    *,
    auth: str | None = None,
    read_only: bool = False,
    title: str = "OmniQ",
) -> Starlette:
    """The dashboard as a Starlette app, to serve alone or mount in any ASGI app.

    :param app: an :class:`~omniq.OmniQ` or :class:`~omniq.AsyncOmniQ` (its stores are
        shown), or what ``AsyncOmniQ(config=...)`` takes (a YAML path, a mapping; None
        for the configured defaults).
    :param auth: ``"user:password"`` for HTTP basic auth or a token (bearer, or the
        password of basic auth); None serves without authentication (keep it on
        127.0.0.1 then, as ``omniq dashboard`` does).
    :param read_only: show everything, offer and accept no action.
    """
    omniq, owned = _async_app(app)
    views = Views(omniq, templates(), read_only=read_only, title=title)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan does not run; the views open the app on first use.
        try:
            yield
        finally:
            if owned:
                await omniq.close()

    routes = [
        Route("/", views.overview, name="overview"),
        Route("/live/overview", views.overview_live, name="overview_live"),
        Route("/tasks", views.tasks, name="tasks"),
        Route("/tasks/{task_id}", views.task, name="task"),
        Route("/dead", views.dead, name="dead"),
        Route("/dead/requeue", views.requeue, methods=["POST"], name="requeue"),
        Route("/schedules", views.schedules, name="schedules"),
        Route(
            "/schedules/{schedule_id}/{action}",
            views.schedule_action,
            methods=["POST"],
            name="schedule_action",
        ),
        Route("/workers", views.workers, name="workers"),
        Route("/plugins", views.plugins, name="plugins"),
        Mount("/static", StaticFiles(packages=[("omniq_dashboard", "static")]), name="static"),
    ]
    middleware = [Middleware(CsrfCookieMiddleware)]
    if auth:
        middleware.insert(0, Middleware(AuthMiddleware, credentials=Credentials(auth)))
    web = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=views.exception_handlers(),
    )
    web.state.omniq = omniq
    return web
