"""griffe extension: show the Sphinx roles of OmniQ's docstrings as code.

The docstrings say ``:class:`OmniQConfig``` (read by ``help()`` and IDEs); mkdocstrings
renders Markdown, where the role would print as text. This turns each role into a code
span, ``~pkg.mod.Name`` into ``Name`` as Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`(?P<tilde>~?)(?P<target>[^`]+)`")


def _code(match: re.Match[str]) -> str:
    target = match["target"]
    return f"`{target.rpartition('.')[2] if match['tilde'] else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
