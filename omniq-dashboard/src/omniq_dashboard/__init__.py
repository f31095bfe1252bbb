"""OmniQ's web dashboard: an ASGI app (Starlette) over the three store interfaces, so it
shows any backend, or any mix of backends, the same way.

    from omniq_dashboard import create_app
    dashboard = create_app(app)             # an OmniQ, an AsyncOmniQ or a config path
    fastapi_app.mount("/omniq", dashboard)  # or serve it alone: omniq dashboard --app m:app
"""

from __future__ import annotations

from .web import create_app

__all__ = ["create_app"]
