"""Where a store keeps its files: the URL and options turned into a :class:`Location`.

``file:///var/lib/omniq``, ``memory://omniq``, ``s3://bucket/prefix`` and, through the
core registry's ``a+b`` rule, ``fsspec+PROTO://...`` for any other fsspec protocol. Every
path a store builds lies under the location's base directory (see :mod:`.names`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omniq.config import mask_url
from omniq.errors import ConfigError
from omniq.options import Option, OptionSchema

__all__ = ["DEFAULT_URL", "LOCAL_PROTOCOLS", "OPTIONS", "Location", "parse_location"]

#: What a config that names only the plugin (``task_queue="fsspec"``) gets.
DEFAULT_URL = "memory://omniq"
#: Protocols whose data never leaves this machine (``BaseStore.local_only``).
LOCAL_PROTOCOLS = frozenset({"file", "memory"})
_ALIASES = {"local": "file", "gcs": "gs", "abfs": "az"}
#: The options of every fsspec store (:mod:`omniq.options`).
OPTIONS = OptionSchema(
    "fsspec",
    (
        Option(
            "storage_options",
            "mapping",
            None,
            "Keyword arguments for the fsspec file system: credentials, "
            "`client_kwargs={'endpoint_url': ...}` for S3-compatible servers, `anon`, "
            "`profile`, ...",
            query=False,
        ),
        Option(
            "fsync",
            "bool",
            False,
            "`file://` only: fsync every file and its directory before a change counts, "
            "so a power failure loses nothing; costs a disk flush per write.",
        ),
        Option(
            "create",
            "bool",
            True,
            "`file://` only: create the directory when it is missing. The CLI's inspection and "
            "operator commands open with false, so a mistyped path is an error.",
        ),
    ),
)


@dataclass(frozen=True)
class Location:
    """A file system protocol, a base directory on it, and how to reach it."""

    protocol: str  # "file", "memory", or any fsspec protocol ("s3", "gs", "sftp", ...)
    base_dir: str  # absolute path for "file", a namespace for "memory", "bucket/prefix" else
    url: str  # as given, for messages (mask it before printing)
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    fsync: bool = False
    create: bool = True

    @property
    def local(self) -> bool:
        return self.protocol in LOCAL_PROTOCOLS


def parse_location(url: str, options: Mapping[str, Any], store: Any = None) -> Location:
    """Validate ``url`` and the keyword ``options`` of ``from_url``; raise ConfigError."""
    if not isinstance(url, str) or "://" not in url:
        OPTIONS.parse("", options, store)
        raise ConfigError(
            f"fsspec backend: expected a URL such as file:///var/lib/omniq, memory://omniq or "
            f"s3://bucket/prefix, got {mask_url(url)!r}"
        )
    values = OPTIONS.parse(url, options, store)
    scheme, rest = values.url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "fsspec":  # a config naming only the plugin
        return parse_location(DEFAULT_URL, options, store)
    if "?" in rest or "#" in rest:
        raise ConfigError(
            f"fsspec backend: {mask_url(url)!r} has a fragment; options go in the query "
            f"({', '.join(OPTIONS.names())})"
        )
    protocol = _ALIASES.get(scheme.removeprefix("fsspec+"), scheme.removeprefix("fsspec+"))
    _check_protocol(protocol, url)
    base_dir = _base_dir(protocol, rest, url)
    fsync = values["fsync"]
    if fsync and protocol != "file":
        raise ConfigError(f"fsspec backend: fsync applies to file:// only, not {protocol}://")
    options = values["storage_options"] or {}
    return Location(protocol, base_dir, url, options, fsync, values["create"])


def _check_protocol(protocol: str, url: str) -> None:
    from fsspec.registry import known_implementations, registry

    if protocol in LOCAL_PROTOCOLS or protocol in registry or protocol in known_implementations:
        return
    known = sorted(set(known_implementations) | set(registry))
    close = difflib.get_close_matches(protocol, known, n=1)
    raise ConfigError(
        f"fsspec backend: {mask_url(url)!r} names protocol {protocol!r}, which fsspec does not "
        f"know"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + "; use file://, memory://, s3://, gs://, az:// or fsspec+PROTOCOL:// with a protocol "
        "from fsspec.available_protocols()"
    )


def _base_dir(protocol: str, rest: str, url: str) -> str:
    if protocol == "file":
        if not rest.startswith("/"):
            raise ConfigError(
                f"fsspec backend: {mask_url(url)!r} needs an absolute path with three slashes, "
                f"e.g. file:///var/lib/omniq"
            )
        parts = [p for p in rest.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ConfigError(f"fsspec backend: {mask_url(url)!r}: '.' and '..' are not allowed")
        return "/" + "/".join(parts)
    if protocol == "memory":
        return rest.strip("/") or "omniq"
    base = rest.strip("/")
    if not base:
        raise ConfigError(
            f"fsspec backend: {mask_url(url)!r} names no bucket or directory, e.g. "
            f"{protocol}://bucket/prefix"
        )
    return base
