"""The dashboard's plugin module: adds ``omniq dashboard`` to the command line.

Discovery imports only this module, so it imports nothing but click and omniq; the web
stack (Starlette, Jinja2, uvicorn) loads when the command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def omniq_register_cli_commands(cli: click.Group) -> None:
    from .command import dashboard

    cli.add_command(dashboard)
