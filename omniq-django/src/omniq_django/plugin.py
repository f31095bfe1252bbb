"""OmniQ plugin of ``omniq-django``: adds ``--django SETTINGS`` to ``omniq worker``.

Discovery imports this module in every OmniQ process, so it imports neither Django nor
the rest of the package; the option's callback does, when it is given.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from omniq import hookimpl

if TYPE_CHECKING:
    import click

#: What ``--django`` loads as the worker's app.
WORKER_APP = "omniq_django.worker:app"


def _use_django(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Configure Django from the settings module, then serve its OmniQ task backend."""
    import click

    if value is None:
        return
    state = ctx.find_root().obj
    if getattr(state, "app_ref", None) or ctx.params.get("app_ref"):
        raise click.UsageError(
            "--django names the app already (the Django task backend's); drop --app / $OMNIQ_APP"
        )
    if os.getcwd() not in sys.path:  # like manage.py: the project's modules import
        sys.path.insert(0, os.getcwd())
    os.environ["DJANGO_SETTINGS_MODULE"] = value
    import django

    try:
        django.setup()
    except Exception as exc:
        raise click.BadParameter(
            f"cannot load Django settings {value!r}: {exc}", ctx=ctx, param=param
        ) from exc
    state.app_ref = WORKER_APP


@hookimpl
def omniq_register_cli_commands(cli: click.Group) -> None:
    import click

    worker: Any = cli.commands.get("worker")
    if worker is None or any(p.name == "django" for p in worker.params):
        return  # (the hook may run again on the same command group)
    worker.params.append(
        click.Option(
            ["--django"],
            metavar="SETTINGS",
            expose_value=False,
            callback=_use_django,
            help="Run the Django task backend's tasks: the project's settings module, e.g. "
            "'mysite.settings' (instead of --app; $OMNIQ_DJANGO_BACKEND picks among "
            "several OmniQ backends).",
        )
    )
