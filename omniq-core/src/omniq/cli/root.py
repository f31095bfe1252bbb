"""The ``omniq`` command group: global options, one-line errors, plugin commands."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import OmniQError
from .state import STORE_FLAGS, CliState, scrub
from .ui import flush_logging, hold_early_records, log_early_records, setup_logging

__all__ = ["OmniQGroup", "app_option", "cli", "main"]

_Command = TypeVar("_Command", bound=Callable[..., Any])


def one_line(exc: BaseException) -> str:
    """An exception as one line: expected errors by their message, others with their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (OmniQError, OSError)):
        text = f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
    return scrub(text)


class OmniQGroup(click.Group):
    """A group whose commands fail with one line (a traceback only with ``--debug``)
    and which plugins extend through ``omniq_register_cli_commands``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_errors: dict[str, str] = {}
        self._plugins_loaded = False

    def load_plugin_commands(self) -> None:
        """Let each plugin add its commands; a plugin that raises, or that would replace a
        built-in command, is reported and skipped, never fatal."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from ..registry import registry

        try:
            with hold_early_records():  # logged once the command has set up logging
                registry.load()
            impls = registry.pm.hook.omniq_register_cli_commands.get_hookimpls()
        except Exception as exc:  # a strict-mode plugin load error (OMNIQ_STRICT_PLUGINS)
            self.plugin_errors["(loading)"] = one_line(exc)
            impls = []
        for impl in impls:
            before = dict(self.commands)
            try:
                impl.function(**{a: self for a in impl.argnames if a == "cli"})
                replaced = [n for n, c in before.items() if self.commands.get(n) is not c]
                if replaced:
                    raise ValueError(f"it replaced the built-in command(s) {replaced}")
            except Exception as exc:
                self.commands = before
                self.plugin_errors[impl.plugin_name] = one_line(exc)
        for name, error in self.plugin_errors.items():
            click.echo(f"warning: plugin {name!r} could not add its commands: {error}", err=True)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # Also for a built-in command: a plugin may have added an option to it.
        self.load_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            raise  # the reader went away (`| head`): main() exits quietly
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:
            state = ctx.obj if isinstance(ctx.obj, CliState) else None
            if state is not None and state.debug:
                raise
            raise click.ClickException(one_line(exc)) from None


#: ``--app`` on a command (it wins over the global ``omniq --app``).
app_option = click.option(
    "--app",
    "app_ref",
    metavar="MODULE:ATTR",
    help="The OmniQ/AsyncOmniQ instance to use, e.g. 'myproject.tasks:app'.",
)


def _store_option(key: str) -> Callable[[_Command], _Command]:
    return click.option(
        STORE_FLAGS[key],
        key,
        metavar="URL",
        help=f"Backend for the {key.replace('_', ' ')} (overrides config and environment).",
    )


@click.group(cls=OmniQGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="YAML configuration file (default: $OMNIQ_CONFIG, else ./omniq.yaml if present).",
)
@_store_option("task_queue")
@_store_option("result_storage")
@_store_option("event_storage")
@click.option(
    "--app",
    "app_ref",
    metavar="MODULE:ATTR",
    envvar="OMNIQ_APP",
    help="The OmniQ/AsyncOmniQ instance to use, e.g. 'myproject.tasks:app'.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="omniq-core", prog_name="omniq")
@click.pass_context
def cli(
    ctx: click.Context,
    config: str | None,
    task_queue: str | None,
    result_storage: str | None,
    event_storage: str | None,
    app_ref: str | None,
    debug: bool,
) -> None:
    """OmniQ: run workers and inspect tasks, events, schedules and queues."""
    state = ctx.ensure_object(CliState)
    state.config = config
    state.stores = {
        k: v
        for k, v in (
            ("task_queue", task_queue),
            ("result_storage", result_storage),
            ("event_storage", event_storage),
        )
        if v
    }
    state.app_ref = app_ref
    state.debug = debug
    setup_logging(logging.DEBUG if debug else logging.WARNING)
    if ctx.invoked_subcommand != "worker":  # the worker sets up its own format, then logs them
        log_early_records()
    # The handler may hold lines (see ui._StderrHandler): out before the command returns,
    # while sys.stderr is still the one they were written for (click's test runner).
    ctx.call_on_close(flush_logging)


def main() -> None:
    """Console-script entry point. A reader that closes the pipe early (``omniq events |
    head``) ends the command quietly with status 1 (click's own choice for a closed pipe,
    which it handles when the pipe breaks inside a command), never a traceback."""
    try:
        try:
            cli.main(args=sys.argv[1:], prog_name="omniq", obj=CliState(argv=sys.argv[1:]))
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not as a warning at exit
    except BrokenPipeError:
        # Nothing may be written to the closed pipe again, not even at interpreter exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
