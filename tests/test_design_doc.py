"""The repository owns its design document, docs/architecture.md: nothing cites a document
outside the repository, and every reference into the design document names a section it
has (a renamed section breaks the references here, not silently in the reader's hands)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "architecture.md"
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", "node_modules"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".lua", ".sql", ".txt", ".yaml", ".yml", ".cfg", ".ini"}
# The outside document is this one's name in capitals; both are built here so that this
# file does not cite them itself.
OUTSIDE = (DESIGN.stem.upper() + DESIGN.suffix, ".." + "/shared/")


def _text_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name == "run"):
            files.append(path)
    return files


def _headings() -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{2,3} (.+)$", DESIGN.read_text(), re.M)]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_no_file_cites_a_document_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {needle}"
        for path in _text_files()
        for needle in OUTSIDE
        if needle in path.read_text(errors="replace")
    ]
    assert not offenders, offenders


def test_links_into_the_design_document_name_its_sections() -> None:
    anchors = {_slug(h) for h in _headings()}
    links = [
        (path, m.group(1))
        for path in _text_files()
        if path.suffix == ".md"
        for m in re.finditer(r"architecture\.md#([\w\-]+)", path.read_text())
    ]
    assert links, "no document links into docs/architecture.md"
    broken = [
        f"{path.relative_to(ROOT)}: #{anchor}" for path, anchor in links if anchor not in anchors
    ]
    assert not broken, f"{broken}; sections: {sorted(anchors)}"


def test_code_references_to_the_design_document_name_its_sections() -> None:
    titles = {re.sub(r"^\d+\. ", "", h).lower() for h in _headings()}
    refs = [
        (path, " ".join(m.group(1).split()))
        for path in _text_files()
        if path.suffix == ".py"
        for m in re.finditer(r'docs/architecture\.md,\s*(?:#:\s*)?"([^"]+)"', path.read_text())
    ]
    assert refs, "no code names a section of docs/architecture.md"
    broken = [
        f"{path.relative_to(ROOT)}: {title!r}"
        for path, title in refs
        if title.lower() not in titles
    ]
    assert not broken, f"{broken}; sections: {sorted(titles)}"
