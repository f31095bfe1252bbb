"""Names kept for one minor version after a rename: using one warns and still works.

A module lists its renames and sets ``__getattr__ = renamed(__name__, {...}, globals())``,
so the old name is looked up (and warns) only when someone uses it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

#: The release that renamed them and the one that removes the old names.
DEPRECATED_IN = "0.2"
REMOVED_IN = "0.3"


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now ``new`` (``stacklevel`` points at the user's line)."""
    warnings.warn(
        f"{old} is deprecated since omniq {DEPRECATED_IN} and will be removed in "
        f"{REMOVED_IN}; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed(
    module: str, renames: Mapping[str, tuple[str, str]], namespace: Mapping[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for old names: ``renames`` maps an old name to (the new
    name to tell the user, the attribute of ``namespace`` that serves the old one)."""

    def __getattr__(name: str) -> Any:
        if name not in renames:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, attr = renames[name]
        warn_renamed(f"{module}.{name}", f"{module}.{new}")
        return namespace[attr]

    return __getattr__
