"""``omniq schedules list|pause|resume|delete``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from .root import app_option, cli
from .state import CliState
from .ui import fmt_time, out, print_json, print_table

if TYPE_CHECKING:
    from ..app import AsyncOmniQ
    from ..models import Schedule


@cli.group()
def schedules() -> None:
    """List, pause, resume and delete recurring tasks."""


@schedules.command("list")
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_schedules(state: CliState, app_ref: str | None, as_json: bool) -> None:
    """List schedules with their next and last firing."""

    async def fetch(app: AsyncOmniQ) -> list[Schedule]:
        return await app.list_schedules()

    found = state.run(state.build_app(app_ref), fetch)
    if as_json:
        print_json(
            [
                {
                    "id": s.id,
                    "task": s.template.name,
                    "queue": s.template.queue,
                    "cron": s.cron,
                    "tz": s.tz,
                    "interval": s.interval,
                    "next_run": s.next_run,
                    "last_run": s.last_run,
                    "paused": s.paused,
                }
                for s in found
            ]
        )
        return
    if not found:
        out.print("No schedules.")
        return
    table = Table("id", "task", "every", "next run", "last run", "state")
    for s in found:
        every = (f"{s.cron} ({s.tz})" if s.tz else s.cron) if s.cron else f"{s.interval:g} s"
        table.add_row(
            escape(s.id),
            escape(s.template.name),
            every,
            "-" if s.paused else fmt_time(s.next_run),
            fmt_time(s.last_run),
            "[yellow]paused[/yellow]" if s.paused else "[green]active[/green]",
        )
    print_table(table)


def _toggle(pause: bool) -> click.Command:
    verb = "pause" if pause else "resume"

    @click.argument("schedule_id")
    @app_option
    @click.pass_obj
    def command(state: CliState, schedule_id: str, app_ref: str | None) -> None:
        async def toggle(app: AsyncOmniQ) -> None:
            await (app.pause_schedule(schedule_id) if pause else app.resume_schedule(schedule_id))

        state.run(state.build_app(app_ref), toggle)
        out.print(f"Schedule {escape(schedule_id)} {verb}d.")

    command.__doc__ = (
        "Pause a schedule: it stops firing until resumed."
        if pause
        else "Resume a paused schedule (missed firings are not replayed unless it catches up)."
    )
    return click.command(verb)(command)


schedules.add_command(_toggle(pause=True))
schedules.add_command(_toggle(pause=False))


@schedules.command("delete")
@click.argument("schedule_id")
@app_option
@click.pass_obj
def delete_schedule(state: CliState, schedule_id: str, app_ref: str | None) -> None:
    """Delete a schedule (tasks it already enqueued stay). Exits 1 if there is none."""

    async def delete(app: AsyncOmniQ) -> bool:
        return await app.delete_schedule(schedule_id)

    if not state.run(state.build_app(app_ref), delete):
        raise click.ClickException(f"no schedule {schedule_id!r} (see 'omniq schedules list')")
    out.print(f"Schedule {escape(schedule_id)} deleted.")
