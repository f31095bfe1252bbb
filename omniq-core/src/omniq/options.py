"""One option schema for backends, and the converters every number check in OmniQ uses.

A backend declares its options once, as a table (:class:`OptionSchema` of
:class:`Option`: name, type, bounds, default, one-line doc). ``from_url`` hands the URL
and its keyword arguments to :meth:`OptionSchema.parse`, which merges query parameters
and keywords (keywords win), refuses an unknown name with the closest match and the valid
names, converts and bounds-checks every value, and masks the URL in every message. The
same table renders as Markdown for the backend's docs page
(:meth:`omniq.registry.PluginRegistry.option_table`:
``python -c "from omniq.registry import registry; print(registry.option_table('redis'))"``),
and a test keeps the page equal to it.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from .errors import ConfigError
from .masking import mask_url

__all__ = [
    "Option",
    "OptionSchema",
    "ParsedOptions",
    "check_ports",
    "options_table",
    "to_bool",
    "to_duration",
    "to_float",
    "to_int",
]

OptionType = Literal["int", "float", "duration", "bool", "enum", "str", "mapping"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)?\s*$")


def _bounds(minimum: float | None, maximum: float | None, above: bool) -> str:
    low = None if minimum is None else f"{'>' if above else '>='} {minimum:g}"
    if low and maximum is not None and not above:
        return f"from {minimum:g} to {maximum:g}"
    return " and ".join(p for p in (low, None if maximum is None else f"<= {maximum:g}") if p)


def _in_bounds(number: float, minimum: float | None, maximum: float | None, above: bool) -> bool:
    if minimum is not None and (number <= minimum if above else number < minimum):
        return False
    return maximum is None or number <= maximum


def to_int(
    value: Any, *, minimum: int | None = None, maximum: int | None = None, strings: bool = True
) -> int:
    """An integer within bounds; a decimal string too when ``strings`` (URL values).
    Raises ValueError saying what is valid."""
    number: Any = value
    if isinstance(value, str) and strings:
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if (
        isinstance(number, bool)
        or not isinstance(number, int)
        or not _in_bounds(number, minimum, maximum, False)
    ):
        raise ValueError(f"an integer {_bounds(minimum, maximum, False)}".rstrip())
    return number


def to_float(
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: bool = False,
    strings: bool = True,
) -> float:
    """A finite number within bounds (``above``: the minimum itself is excluded)."""
    number: Any = value
    if isinstance(value, str) and strings:
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if (
        isinstance(number, bool)
        or not isinstance(number, (int, float))
        or not math.isfinite(number)
        or not _in_bounds(number, minimum, maximum, above)
    ):
        raise ValueError(f"a number {_bounds(minimum, maximum, above)}".rstrip())
    return float(number)


def to_duration(
    value: Any,
    *,
    minimum: float | None = 0.0,
    maximum: float | None = None,
    above: bool = True,
    strings: bool = True,
) -> float:
    """Seconds from a number, a :class:`~datetime.timedelta` or (``strings``) a text such
    as ``"30"``, ``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"1w"``."""
    seconds: Any = value
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and strings:
        match = _DURATION.match(value)
        seconds = float(match[1]) * _UNITS[match[2] or "s"] if match else None
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or not _in_bounds(seconds, minimum, maximum, above)
    ):
        forms = (
            "a number, a timedelta or a text like '30s', '5m'"
            if strings
            else ("a number or a timedelta")
        )
        raise ValueError(f"seconds {_bounds(minimum, maximum, above)} ({forms})".replace("  ", " "))
    return float(seconds)


def to_bool(value: Any) -> bool:
    """True or False; in a URL also 1/0, true/false, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("true or false (1/0, yes/no, on/off)")


@dataclass(frozen=True)
class Option:
    """One row of a backend's option table."""

    name: str
    type: OptionType
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is not allowed
    choices: tuple[str, ...] = ()  # for "enum" (compared case-insensitively, stored upper)
    #: None turns the option off; so do "", "none" and these values.
    optional: bool = False
    off: tuple[Any, ...] = ()
    secret: bool = False  # never shown in a message
    query: bool = True  # may come from the URL query (False: a keyword only, e.g. a mapping)

    def valid(self) -> str:
        """What this option accepts, for messages and the docs table."""
        kind = self.type
        if kind == "int":
            text = f"an integer {_bounds(self.minimum, self.maximum, False)}".rstrip()
        elif kind == "float":
            text = f"a number {_bounds(self.minimum, self.maximum, self.above)}".rstrip()
        elif kind == "duration":
            text = f"seconds {_bounds(self.minimum, self.maximum, self.above)}".rstrip()
        elif kind == "bool":
            text = "true or false"
        elif kind == "enum":
            text = "one of " + ", ".join(self.choices)
        elif kind == "mapping":
            text = "a mapping"
        else:
            text = "a text"
        if self.optional and kind != "str":
            off = " or ".join(dict.fromkeys(str(v) for v in self.off if v not in (None, "")))
            text += f"; none{' or ' + off if off else ''} turns it off"
        return text

    def convert(self, value: Any) -> Any:
        """The value as its type, or ValueError saying what is valid."""
        if self.optional and (
            value is None
            or value in self.off
            or (isinstance(value, str) and value.strip().lower() in ("", "none"))
        ):
            return None
        try:
            if self.type == "int":
                return to_int(value, minimum=_opt_int(self.minimum), maximum=_opt_int(self.maximum))
            if self.type == "float":
                return to_float(value, minimum=self.minimum, maximum=self.maximum, above=self.above)
            if self.type == "duration":
                return to_duration(
                    value, minimum=self.minimum, maximum=self.maximum, above=self.above
                )
            if self.type == "bool":
                return to_bool(value)
        except ValueError:
            raise ValueError(self.valid()) from None
        if self.type == "enum":
            if isinstance(value, str) and value.strip().upper() in self.choices:
                return value.strip().upper()
            raise ValueError(self.valid())
        if self.type == "mapping":
            if isinstance(value, Mapping):
                return dict(value)
            raise ValueError(f"{self.valid()}, got a {type(value).__name__}")
        if not isinstance(value, str):
            raise ValueError(f"{self.valid()}, got a {type(value).__name__}")
        return value


def _opt_int(bound: float | None) -> int | None:
    return None if bound is None else int(bound)


@dataclass(frozen=True)
class ParsedOptions:
    """What :meth:`OptionSchema.parse` found: every option's value, and the URL without
    the query parameters that were options (what the driver gets)."""

    values: dict[str, Any]
    url: str
    rest: list[tuple[str, str]] = field(default_factory=list)  # query parameters left over

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


#: How close (difflib's ratio) a query parameter meant for the driver may come to one of
#: OmniQ's option names before it is refused as a typo of it: ``?max_sise=4`` would reach
#: PostgreSQL as a server setting and fail at connect time, far from its cause. Real
#: driver parameters stay well below (``socket_timeout`` against ``socket_connect_timeout``
#: is 0.78).
TYPO = 0.85


@dataclass(frozen=True)
class OptionSchema:
    """A backend's option table. ``passthrough`` names the driver that takes the query
    parameters that are not options (``"redis-py"``); without it they are refused too."""

    backend: str
    options: tuple[Option, ...] = ()
    passthrough: str | None = None

    def extend(self, *options: Option) -> OptionSchema:
        """This table plus (or with replaced) rows, for one store kind."""
        mine = {o.name: o for o in self.options}
        mine.update({o.name: o for o in options})
        return replace(self, options=tuple(mine.values()))

    def names(self) -> list[str]:
        return [o.name for o in self.options]

    def __getitem__(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def parse(self, url: str, options: Mapping[str, Any], store: Any = None) -> ParsedOptions:
        """Merge ``url``'s query and the keyword ``options`` (keywords win) into converted,
        bounds-checked values with defaults. ``store`` (a store class) names the store in
        messages. Raises ConfigError naming the option, what is valid and the masked URL."""
        label = self.label(store)
        where = f" in {mask_url(url)!r}" if isinstance(url, str) and url else ""
        known = {o.name: o for o in self.options}
        parts = urlsplit(url) if isinstance(url, str) else None
        given: dict[str, Any] = {}
        rest: list[tuple[str, str]] = []
        from_query = False
        for name, value in parse_qsl(parts.query if parts else "", keep_blank_values=True):
            if name in known and not known[name].query:
                raise ConfigError(
                    f"{label}: option {name!r} cannot come in the URL{where}; pass it as a "
                    f"keyword or in the mapping form"
                )
            if name in known:
                given[name], from_query = value, True
            elif self.passthrough and not difflib.get_close_matches(name, known, 1, TYPO):
                rest.append((name, value))
            else:
                raise self.unknown(name, label, where)
        for name in options:
            if name not in known:
                raise self.unknown(name, label, where)
        given.update(options)
        values: dict[str, Any] = {}
        for name, option in known.items():
            value = given.get(name, option.default)
            try:
                values[name] = option.convert(value) if name in given else value
            except ValueError as exc:
                shown = "***" if option.secret else repr(value)
                raise ConfigError(
                    f"{label}: option {name}={shown}{where}: expected {exc}"
                ) from None
        if not from_query:
            return ParsedOptions(values, url, rest)
        query = urlencode(rest)
        stripped = url.split("?", 1)[0] + (f"?{query}" if query else "")
        return ParsedOptions(values, stripped, rest)

    def unknown(self, name: str, label: str, where: str = "") -> ConfigError:
        """The error for an option this table does not have."""
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        valid = f" Valid options: {', '.join(names)}" if names else " It takes no options"
        extra = f" (other query parameters go to {self.passthrough})" if self.passthrough else ""
        return ConfigError(f"{label}: unknown option {name!r}{where}{hint}{valid}{extra}")

    def label(self, store: Any = None) -> str:
        """``"redis task queue"``: the backend and the kind of ``store`` (a class)."""
        return f"{self.backend} {getattr(store, 'kind_name', None) or 'backend'}"


def check_ports(url: str, label: str, default_scheme: str | None = None) -> None:
    """Refuse a port that is not a number from 1 to 65535 in any host of ``url``
    (``h1:4222,h2:4223`` and ``nats://...,nats://...`` lists too), naming the store and the
    masked URL (urllib would say only ``Port could not be cast to integer value``)."""
    if not isinstance(url, str) or "://" not in url:
        return
    for one in url.split(","):
        if "://" not in one and default_scheme:
            one = f"{default_scheme}://{one}"
        netloc = urlsplit(one).netloc if "://" in one else one.split("/", 1)[0]
        host = netloc.rpartition("@")[2]
        if host.startswith("["):  # [ipv6]:port
            host = host.partition("]")[2]
        _, colon, port = host.rpartition(":") if ":" in host else ("", "", "")
        if colon and port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(
                f"{label}: port {port!r} in {mask_url(url)!r} is not valid; expected a number "
                f"from 1 to 65535"
            )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(option: Option) -> str:
    value = option.default
    if value is None:
        return "none"
    if option.type == "duration":
        days = f" ({value / 86400:g} days)" if value >= 86400 and value % 86400 == 0 else ""
        return f"`{value:g}` s{days}"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def options_table(schemas: Mapping[str, OptionSchema]) -> str:
    """The Markdown table of one backend's options; ``schemas`` maps a store kind
    (``"task queue"``) to its table. A row that differs by store kind says which."""
    rows: dict[tuple[str, ...], list[str]] = {}
    for kind, schema in schemas.items():
        for option in schema.options:
            key = (f"`{option.name}`", option.type, _default(option), option.valid(), option.doc)
            rows.setdefault(tuple(_cell(c) for c in key), []).append(kind)
    every = len(schemas)
    lines = [
        "| Option | Type | Default | Valid values | Stores | What it does |",
        "|---|---|---|---|---|---|",
    ]
    for (name, kind, default, valid, doc), kinds in rows.items():
        stores = "all" if len(kinds) == every else ", ".join(kinds)
        lines.append(f"| {name} | {kind} | {default} | {valid} | {stores} | {doc} |")
    return "\n".join(lines) + "\n"
