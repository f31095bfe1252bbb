"""``omniq demo`` runs end to end on SQLite files, with no server, well under 30 s."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("omniq_backend_sqlite")


def test_demo_runs_and_reports(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "omniq.cli", "demo", "--dir", str(tmp_path / "demo")],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 30
    out = proc.stdout
    assert "Results" in out and "Event summary" in out and "Timeline of the retried task" in out
    for name in ("add", "word_count", "flaky_fetch", "report", "tick"):
        assert name in out
    assert "fetched on a later attempt" in out  # the retried task succeeded on attempt 2
    assert "failed" in out and "retrying" in out and "scheduled" in out
    assert "Traceback" not in proc.stderr
    for name in ("tasks.db", "results.db", "events.db", "omniq.yaml"):
        assert (tmp_path / "demo" / name).is_file()


def test_demo_files_can_be_explored_with_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config the demo writes points the other commands at its files."""
    import json

    from click.testing import CliRunner

    from omniq.cli import cli
    from omniq.cli.state import CliState
    from omniq.cli.ui import err, out
    from omniq.demo import run_demo

    monkeypatch.chdir(tmp_path)
    directory = run_demo(tmp_path / "d", out, err)
    result = CliRunner().invoke(
        cli, ["--config", str(directory / "omniq.yaml"), "queues", "--json"], obj=CliState()
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["demo"]
    assert set(counts) == {"succeeded"} and counts["succeeded"] >= 7  # 5 tasks and the firings
