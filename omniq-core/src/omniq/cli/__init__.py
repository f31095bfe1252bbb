"""The ``omniq`` command line (click + rich).

Importing this package registers the built-in commands on :data:`cli`; plugins add
theirs through the ``omniq_register_cli_commands`` hook when the command line starts.
"""

from __future__ import annotations

# Importing them registers their commands.
from . import demo, operate, plugins, schedules, tasks, worker  # noqa: F401
from .root import cli, main

__all__ = ["cli", "main"]
