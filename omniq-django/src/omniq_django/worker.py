"""The worker side: an OmniQ app for a Django task backend, which ``manage.py
omniq_worker`` runs and which ``omniq worker --django SETTINGS`` loads as
``omniq_django.worker:app``.

The backend alias is ``$OMNIQ_DJANGO_BACKEND`` when set, else the only OmniQ backend in
``settings.TASKS`` (``default`` when several are).
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from omniq import AsyncOmniQ

from .compat import task_backends
from .connection import build_app

__all__ = ["backend_alias", "worker_app"]

BACKEND_ENV = "OMNIQ_DJANGO_BACKEND"


def backend_alias(alias: str | None = None) -> str:
    """The alias to serve: the one given, else the environment's, else the only (or the
    ``default``) OmniQ backend of ``settings.TASKS``."""
    from .backend import OmniQBackend

    tasks = getattr(settings, "TASKS", {}) or {}
    alias = alias or os.environ.get(BACKEND_ENV)
    ours: list[str] = [a for a in tasks if isinstance(task_backends[a], OmniQBackend)]
    if alias is not None:
        if alias not in ours:
            raise ImproperlyConfigured(
                f"task backend {alias!r} is not an OmniQ backend; OmniQ backends in "
                f"settings.TASKS: {ours or 'none'}"
            )
        return alias
    if len(ours) == 1:
        return ours[0]
    if "default" in ours:
        return "default"
    raise ImproperlyConfigured(
        f"settings.TASKS has {len(ours)} OmniQ backends ({ours or 'none'}) and none named "
        f"'default'; pick one with --backend or ${BACKEND_ENV}"
    )


def worker_app(alias: str | None = None) -> AsyncOmniQ:
    """A fresh app for the worker of one backend. Its default queues are the backend's
    ``QUEUES`` unless ``OPTIONS`` set ``worker.queues`` or a command line names them."""
    name = backend_alias(alias)
    backend = task_backends[name]
    options: dict[str, Any] = dict(backend.options)
    worker_cfg = dict(options.get("worker") or {})
    if backend.queues and "queues" not in worker_cfg:
        worker_cfg["queues"] = sorted(backend.queues)
        options["worker"] = worker_cfg
    return build_app(options)


def __getattr__(name: str) -> Any:
    if name == "app":  # `omniq worker --django SETTINGS` imports omniq_django.worker:app
        return worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
