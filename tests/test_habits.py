"""The habits CI enforces: the README's test command (``python3 .ci/dev.py test``) runs
ruff's lint and format checks and mypy before pytest, and a finding of any of them fails
it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def dev() -> ModuleType:
    """``.ci/dev.py`` as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("omniq_dev_script", ROOT / ".ci" / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Exec(Exception):
    """Raised in place of os.execv: the process dev.py would have become."""


def _record(dev: ModuleType, monkeypatch: pytest.MonkeyPatch, failing: str = "") -> list[str]:
    """Make ``dev.main`` record what it runs instead of running it; the check whose
    name is ``failing`` reports a finding."""
    ran: list[str] = []
    names = {" ".join(args): name for name, args in dev.checks()}

    def run(args: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        name = names[" ".join(args)]
        ran.append(name)
        return subprocess.CompletedProcess(args, 1 if name == failing else 0)

    def execv(path: str, args: list[str]) -> None:
        ran.append(" ".join(Path(a).name if i == 0 else a for i, a in enumerate(args)))
        raise _Exec

    monkeypatch.setattr(dev, "ensure_env", lambda: None)
    monkeypatch.setattr(dev.subprocess, "run", run)
    monkeypatch.setattr(dev.os, "execv", execv)
    monkeypatch.chdir(ROOT)
    return ran


def test_the_test_command_runs_every_check_before_pytest(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [args[1:] for _, args in dev.checks()] == [
        ["check", "."],
        ["format", "--check", "."],
        [],
    ]
    assert [Path(args[0]).name for _, args in dev.checks()] == ["ruff", "ruff", "mypy"]
    ran = _record(dev, monkeypatch)
    with pytest.raises(_Exec):
        dev.main(["test"])
    pytest_run = " ".join([f"{Path(sys.executable).name} -m pytest", *dev.parallel_args()])
    assert ran == ["ruff check", "ruff format", "mypy", pytest_run]


def test_the_full_run_is_spread_over_the_cores_and_a_single_core_runs_in_process(
    dev: ModuleType,
) -> None:
    assert dev.parallel_args(2) == ["-n", "2", "--dist", "loadscope"]
    assert dev.parallel_args(64) == ["-n", "4", "--dist", "loadscope"]
    assert dev.parallel_args(1) == []


@pytest.mark.parametrize("failing", ["ruff check", "ruff format", "mypy"])
def test_a_finding_fails_the_test_command_without_running_pytest(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    ran = _record(dev, monkeypatch, failing=failing)
    assert dev.main(["test"]) == 1
    assert ran == ["ruff check", "ruff format", "mypy"], "every check runs, then no pytest"


def test_pytest_arguments_skip_the_checks_and_check_runs_only_them(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = _record(dev, monkeypatch)
    with pytest.raises(_Exec):
        dev.main(["test", "tests/test_habits.py"])
    assert ran == [f"{Path(sys.executable).name} -m pytest tests/test_habits.py"]
    ran.clear()
    assert dev.main(["check"]) == 0
    assert ran == ["ruff check", "ruff format", "mypy"]


def test_the_real_tools_report_a_planted_finding_of_each_kind(
    dev: ModuleType, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The three checks, run for real on a project holding one finding for each: an
    unused import (lint), a missing blank line (format), an untyped function (mypy)."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.ruff.lint]\nselect = ["F"]\n\n'
        '[tool.mypy]\nfiles = ["planted.py"]\ndisallow_untyped_defs = true\n'
    )
    (tmp_path / "planted.py").write_text("import os\ndef double(x):\n    return 2 * x\n")
    assert dev.run_checks(tmp_path) == 1
    out, err = capfd.readouterr()
    assert "F401" in out, out
    assert "1 file would be reformatted" in out, out
    assert "planted.py:2: error: Function is missing a type annotation" in out, out
    assert "checks failed: ruff check, ruff format, mypy" in err, err
