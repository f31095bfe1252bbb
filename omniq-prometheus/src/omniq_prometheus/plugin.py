"""OmniQ plugin of ``omniq-prometheus``: the middleware that records every attempt, the
worker gauges, and ``omniq worker --metrics-port`` to serve them.

Discovery imports this module in every OmniQ process, so it imports only omniq and the
standard library; prometheus_client loads when an app is created (the middleware) or a
worker starts.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from omniq import hookimpl

if TYPE_CHECKING:
    import click

    from omniq.app import AsyncOmniQ
    from omniq.middleware import Middleware
    from omniq.worker.runtime import Worker

log = logging.getLogger("omniq.prometheus")


def _metrics_port(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Check the address now (a port in use fails before the app loads), then hand it to
    the worker through the environment variable the worker reads when it starts."""
    import click

    from omniq.errors import ConfigError

    from .server import ENV, check_free, parse_address

    if value is None:
        return
    try:
        check_free(parse_address(value))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    os.environ[ENV] = value


@hookimpl
def omniq_register_cli_commands(cli: click.Group) -> None:
    import click

    from .server import ENV

    worker: Any = cli.commands.get("worker")
    if worker is None or any(p.name == "metrics_port" for p in worker.params):
        return  # (the hook may run again on the same command group)
    worker.params.append(
        click.Option(
            ["--metrics-port"],
            metavar="[HOST:]PORT",
            envvar=ENV,
            expose_value=False,
            callback=_metrics_port,
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (no HOST: every "
            f"interface); ${ENV} too. One port per worker process.",
        )
    )


@hookimpl
def omniq_middleware(app: AsyncOmniQ) -> Middleware:
    from .middleware import PrometheusMiddleware

    return PrometheusMiddleware()


@hookimpl
def omniq_worker_started(worker: Worker) -> None:
    from omniq.errors import ConfigError

    from .metrics import default_metrics
    from .server import configured, serve

    default_metrics().workers.watch(worker)
    try:
        address = configured()
        if address is not None:
            serve(address)
    except ConfigError as exc:
        # Asked for metrics and cannot serve them: a worker nobody can see is worse than
        # one that does not run (omniq_worker_started failures are otherwise only logged).
        log.error("worker %s: %s; stopping", worker.id, exc)
        worker.request_stop(f"error: {exc}")


@hookimpl
async def omniq_worker_stopping(worker: Worker, reason: str) -> None:
    from .metrics import default_metrics

    await default_metrics().workers.stopping(worker)
