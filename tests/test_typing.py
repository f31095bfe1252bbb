"""A type checker flags a wrong call of a task and types get_result by the task's return."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent / "typing" / "typed_tasks.py"


@pytest.mark.slow
def test_mypy_flags_exactly_the_marked_lines():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--hide-error-context",
            "--no-error-summary",
            "--ignore-missing-imports",
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    flagged = {
        int(m.group(1)) for m in re.finditer(rf"{re.escape(EXAMPLE.name)}:(\d+): error", run.stdout)
    }
    expected = {i for i, line in enumerate(EXAMPLE.read_text().splitlines(), 1) if "# E:" in line}
    assert flagged == expected, run.stdout
