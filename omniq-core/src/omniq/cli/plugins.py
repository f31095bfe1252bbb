"""``omniq plugins``: what is installed, what each plugin provides, what failed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from .root import OmniQGroup, cli
from .ui import out, print_json, print_table

if TYPE_CHECKING:
    from ..registry import PluginInfo


#: Short names of the store kinds, so a backend's line fits an 80-column terminal.
_STORES = {"task_queue": "tasks", "result_storage": "results", "event_storage": "events"}


def _provides(entry: dict[str, Any]) -> str:
    lines = []
    for b in entry["backends"]:
        lines.append(f"backend {b['name']}: {', '.join(_STORES.get(k, k) for k in b['provides'])}")
        if b["schemes"]:
            lines.append(f"schemes: {', '.join(b['schemes'])}")
    if entry["pools"]:
        lines.append(f"worker pools: {', '.join(entry['pools'])}")
    register = ("omniq_register_backends", "omniq_register_pools", "omniq_register_workers")
    other = [h for h in entry["hooks"] if h not in register]
    if other:
        lines.append(f"hooks: {', '.join(h.removeprefix('omniq_') for h in other)}")
    return "\n".join(lines) or "-"


def _conflict_note(what: str, owners: list[PluginInfo]) -> str:
    names = [f"{i.name} ({i.distribution or 'registered in code'})" for i in owners]
    return (
        f"{what} is claimed by {', '.join(names[:-1])} and {names[-1]}: resolving it fails "
        f"until you choose one, e.g. {{'backend': '{owners[0].name}', 'url': ...}}, or disable "
        f"the others with OMNIQ_DISABLE_PLUGINS"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--all", "include_builtin", is_flag=True, help="Include OmniQ's built-in plugins.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool, include_builtin: bool) -> None:
    """List installed plugins, what each provides and any that failed to load."""
    from ..registry import registry

    group = ctx.find_root().command
    cli_errors: dict[str, str] = {}
    if isinstance(group, OmniQGroup):
        group.load_plugin_commands()  # a built-in command does not load them by itself
        cli_errors = group.plugin_errors
    conflicts = registry.contested()
    entries = []
    for info in sorted(registry.plugins(include_builtin=include_builtin), key=lambda i: i.name):
        entry = info.as_dict()
        entry["cli_error"] = cli_errors.get(info.name)
        entry["conflicts"] = [what for what, owners in conflicts.items() if info in owners]
        entries.append(entry)
    if as_json:
        print_json(entries)
        return
    if not entries:
        out.print(
            "No plugins installed. First-party backends: pip install 'omniq[redis]' "
            "(or postgres, nats, fsspec, gevent)."
        )
        return
    # Problems go in numbered notes under the table, at full width: in a cell, an error
    # would be squeezed into a column a few characters wide on an 80-column terminal.
    notes: dict[str, str] = {}  # what -> the note's text, numbered in order

    def note(what: str, text: str) -> int:
        notes.setdefault(what, text)
        return list(notes).index(what) + 1

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header in ("plugin", "distribution", "provides", "status"):
        table.add_column(header, overflow="fold")  # wrap, never cut a name short with "…"
    for e in entries:
        status = [
            f"[red]failed [{note(p, f'[red]failed:[/red] {escape(p)}')}][/red]"
            for p in (e["error"], e["cli_error"])
            if p
        ]
        status += [
            f"[yellow]conflict [{note(w, escape(_conflict_note(w, conflicts[w])))}][/yellow]"
            for w in e["conflicts"]
        ]
        if e["disabled"]:
            status.append("[yellow]disabled (OMNIQ_DISABLE_PLUGINS)[/yellow]")
        dist = e["distribution"] or ("built-in" if e["builtin"] else "registered in code")
        version = f"\n{e['version']}" if e["version"] else ""
        table.add_row(
            e["name"],
            escape(dist + version),
            escape(_provides(e)),
            "\n".join(status) or "[green]ok[/green]",
        )
    print_table(table)
    for number, text in enumerate(notes.values(), 1):
        out.print(f"[{number}] {text}")
    failed = [e for e in entries if e["error"]]
    if failed:
        out.print(
            f"[red]{len(failed)} plugin(s) failed to load[/red]; the others work. Disable one with "
            f"OMNIQ_DISABLE_PLUGINS=<name>."
        )
