"""``omniq dashboard``: serve the dashboard with uvicorn, safe by default.

It binds 127.0.0.1; any other address needs ``--auth`` and is refused without it, since
the pages show task arguments and results and the buttons change the queues.
"""

from __future__ import annotations

import ipaddress
import os

import click

from omniq.cli.state import CliState

#: The environment variable ``--auth`` falls back to (keeps the secret out of ``ps``).
AUTH_ENV = "OMNIQ_DASHBOARD_AUTH"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option(
    "--app",
    "app_ref",
    metavar="MODULE:ATTR",
    help="The OmniQ/AsyncOmniQ instance whose stores to show, e.g. 'myproject.tasks:app'.",
)
@click.option(
    "--config",
    "config",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="YAML configuration naming the stores (instead of --app).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback requires --auth.",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--auth",
    "auth",
    metavar="USER:PASSWORD|TOKEN",
    envvar=AUTH_ENV,
    help=f"Require HTTP basic auth (USER:PASSWORD) or a bearer token (TOKEN); "
    f"also read from ${AUTH_ENV}.",
)
@click.option(
    "--read-only", is_flag=True, help="Show everything, change nothing (no action buttons)."
)
@click.pass_context
def dashboard(
    ctx: click.Context,
    app_ref: str | None,
    config: str | None,
    host: str,
    port: int,
    auth: str | None,
    read_only: bool,
) -> None:
    """Serve the web dashboard (queues, tasks, dead letters, schedules, plugins)."""
    if not is_loopback(host) and not auth:
        raise click.UsageError(
            f"--host {host!r} is reachable from other machines; the dashboard refuses to serve it "
            f"without --auth USER:PASSWORD or --auth TOKEN (or ${AUTH_ENV}). Use --host 127.0.0.1 "
            f"to serve this machine only."
        )
    state = ctx.find_object(CliState) or CliState()
    if config:
        state.config = config
    omniq_app = state.build_app(app_ref)
    import uvicorn

    from .web import create_app

    web = create_app(omniq_app, auth=auth, read_only=read_only)
    where = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    click.echo(f"OmniQ dashboard on {where}" + (" (read-only)" if read_only else ""), err=True)
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "127.0.0.1")
    uvicorn.run(web, host=host, port=port, log_level="warning", lifespan="on")
