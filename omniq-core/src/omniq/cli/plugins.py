"""``omniq plugins``: what is installed, what each plugin provides, what failed."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .root import OmniQGroup, cli
from .ui import out, print_json


def _provides(entry: dict[str, Any]) -> str:
    lines = [
        f"backend {b['name']}: {', '.join(b['provides'])}"
        + (f" (schemes: {', '.join(b['schemes'])})" if b["schemes"] else "")
        for b in entry["backends"]
    ]
    if entry["pools"]:
        lines.append(f"worker pools: {', '.join(entry['pools'])}")
    register = ("omniq_register_backends", "omniq_register_pools", "omniq_register_workers")
    other = [h for h in entry["hooks"] if h not in register]
    if other:
        lines.append(f"hooks: {', '.join(other)}")
    return "\n".join(lines) or "-"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--all", "include_builtin", is_flag=True, help="Include OmniQ's built-in plugins.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool, include_builtin: bool) -> None:
    """List installed plugins, what each provides and any that failed to load."""
    from ..registry import registry

    group = ctx.find_root().command
    cli_errors = group.plugin_errors if isinstance(group, OmniQGroup) else {}
    entries = []
    for info in sorted(registry.plugins(include_builtin=include_builtin), key=lambda i: i.name):
        entry = info.as_dict()
        entry["cli_error"] = cli_errors.get(info.name)
        entries.append(entry)
    if as_json:
        print_json(entries)
        return
    if not entries:
        out.print("No plugins installed. First-party backends: pip install 'omniq[redis]' (or postgres, nats, "
                  "fsspec, gevent).")
        return
    table = Table("plugin", "distribution", "version", "provides", "status")
    for e in entries:
        problem = e["error"] or e["cli_error"]
        status = f"[red]failed: {escape(problem)}[/red]" if problem else "[green]ok[/green]"
        dist = e["distribution"] or ("built-in" if e["builtin"] else "registered in code")
        table.add_row(e["name"], dist, e["version"] or "-", _provides(e), status)
    out.print(table)
    failed = [e for e in entries if e["error"]]
    if failed:
        out.print(f"[red]{len(failed)} plugin(s) failed to load[/red]; the others work. Disable one with "
                  f"OMNIQ_DISABLE_PLUGINS=<name>.")
