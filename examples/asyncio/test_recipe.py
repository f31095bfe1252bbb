"""The asyncio recipe runs as documented, and docs/integrations.md shows it as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "integrations.md"


def test_recipe_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(HERE / "recipe.py"), f"sqlite:///{tmp_path / 'omniq.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "sizes: [17, 18]"


def test_docs_show_the_recipe_verbatim() -> None:
    code = (HERE / "recipe.py").read_text()
    assert f"```python\n{code}```" in DOC.read_text()
