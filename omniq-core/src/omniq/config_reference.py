"""The configuration reference, rendered from the config model.

Every key of :class:`~omniq.config.OmniQConfig` and :class:`~omniq.config.WorkerConfig`
with its type, default, environment variable and the ``:ivar:`` line of the class
docstring, as the Markdown table of ``docs/configuration.md``
(``python -c "from omniq.config_reference import config_table; print(config_table())"``).
A test keeps the page equal to it, and fails on a key without a description.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from typing import Any

import msgspec

from .config import OmniQConfig, WorkerConfig

__all__ = ["config_table", "field_docs"]

_IVAR = re.compile(r"^:ivar (\w+):\s*(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """``name -> description`` from the ``:ivar name:`` lines of ``cls``'s docstring."""
    docs: dict[str, str] = {}
    current: str | None = None
    for line in (inspect.getdoc(cls) or "").splitlines():
        match = _IVAR.match(line)
        if match:
            current = match[1]
            docs[current] = match[2]
        elif current and line.startswith(" ") and line.strip():
            docs[current] += " " + line.strip()
        else:
            current = None
    return docs


def _type(tp: Any) -> str:
    if tp is Any:
        return "URL, name or mapping"
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join("none" if a is type(None) else _type(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "mapping"
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, msgspec.Struct):
        return "see below"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        days = value / 86400
        span = (
            f" ({days:g} day{'s' if days != 1 else ''})" if days >= 1 and days.is_integer() else ""
        )
        return f"`{value:g}`{span}"
    if value in ([], {}):
        return "empty"
    return f"`{json.dumps(value) if isinstance(value, list) else value}`"


def _rows(cls: type[msgspec.Struct], prefix: str, env: str) -> list[str]:
    docs = field_docs(cls)
    rows = []
    for f in msgspec.structs.fields(cls):
        default = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
        doc = docs.get(f.name, "").replace("``", "`")
        if not doc:
            raise ValueError(f"{cls.__name__}.{f.name} has no ':ivar {f.name}:' in its docstring")
        doc = doc[0].upper() + doc[1:]
        variable = f"{env}{f.name.upper()}" if not isinstance(default, msgspec.Struct) else "-"
        cells = (
            f"`{prefix}{f.name}`",
            _type(f.type),
            _default(default),
            f"`{variable}`" if variable != "-" else "-",
            doc,
        )
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return rows


def config_table() -> str:
    """The Markdown table of every configuration key."""
    lines = [
        "| Key | Type | Default | Environment variable | What it does |",
        "|---|---|---|---|---|",
        *_rows(OmniQConfig, "", "OMNIQ_"),
        *_rows(WorkerConfig, "worker.", "OMNIQ_WORKER__"),
    ]
    return "\n".join(lines) + "\n"
