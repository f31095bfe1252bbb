"""MkDocs hook: show a backend's crash windows on its page.

The windows are written once, in ``docs/architecture.md`` section 8 (one ``###`` heading
per backend). A backend page holds a marker ``<!-- crash-windows: HEADING -->`` and a link
to that section, which is what GitHub shows; on the site the marker becomes the section's
text. A marker naming no section fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"<!-- crash-windows: (?P<heading>[^>]+?) -->")


def _section(design: str, heading: str) -> str | None:
    found = re.search(rf"^### {re.escape(heading)}\n(?P<body>.*?)(?=^##|\Z)", design, re.M | re.S)
    return found["body"].strip() + "\n" if found else None


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if "<!-- crash-windows:" not in markdown:
        return markdown
    design = (Path(config["docs_dir"]) / "architecture.md").read_text()

    def include(match: re.Match[str]) -> str:
        body = _section(design, match["heading"])
        if body is None:
            raise PluginError(
                f"{page.file.src_path}: no section '### {match['heading']}' in architecture.md"
            )
        return body

    return MARKER.sub(include, markdown)
