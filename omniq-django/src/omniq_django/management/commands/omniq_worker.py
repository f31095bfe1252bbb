"""``python manage.py omniq_worker``: an OmniQ worker for the project's Django tasks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from omniq import AsyncOmniQ, OmniQError
from omniq_django.worker import worker_app


class Command(BaseCommand):
    help = (
        "Run an OmniQ worker for the Django tasks of an OmniQ task backend until stopped "
        "(SIGTERM/Ctrl-C drain it; twice stops at once)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--backend",
            metavar="ALIAS",
            help="Alias in settings.TASKS (default: the only OmniQ backend, else 'default').",
        )
        parser.add_argument(
            "--queue",
            "-q",
            dest="queues",
            action="append",
            metavar="NAME",
            help="Queue to serve (repeatable; default: the backend's QUEUES).",
        )
        parser.add_argument("--concurrency", "-c", type=int, help="Tasks run at once.")
        parser.add_argument("--pool", metavar="NAME", help="Execution pool (async or thread).")
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Stop when the queues are empty instead of waiting for work.",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["verbosity"] > 1:
            logging.getLogger("omniq").setLevel(
                logging.DEBUG if opts["verbosity"] > 2 else logging.INFO
            )
        options = {key: opts[key] for key in ("queues", "concurrency", "pool") if opts[key]}
        if opts["burst"]:
            options["burst"] = True
        try:
            app = worker_app(opts["backend"])
            reason = asyncio.run(_run(app, options))
        except (OmniQError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc
        if opts["verbosity"] > 0:
            self.stdout.write(f"omniq worker stopped: {reason}")


async def _run(app: AsyncOmniQ, options: dict[str, Any]) -> str:
    try:
        return await app.run_worker(**options)
    finally:
        await app.close()
