"""Runs the Django project's tests (``project/project_checks.py``) in a child Python, once
per database: Django's settings are global to a process, and the Django 6 run needs
another interpreter anyway."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent / "project"


@pytest.fixture
def run_project(tmp_path: Path) -> Callable[..., None]:
    """``run_project(python, db, framework)``: the project's tests under ``python`` with
    Django and OmniQ on ``db`` (``sqlite`` or ``postgres``), expecting the task framework
    to be imported from ``framework``; fails with the child's output."""

    def run(python: str, db: str, framework: str) -> None:
        env = {
            **os.environ,
            "OMNIQ_DJANGO_DB": db,
            "OMNIQ_DJANGO_DIR": str(tmp_path),
            "OMNIQ_DJANGO_SCHEMA": f"omniq_dj_{uuid.uuid4().hex[:10]}",
            # The database the other PostgreSQL tests use, not a fixed one.
            "OMNIQ_DJANGO_PG_URL": os.environ.get(
                "OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
            ),
            "OMNIQ_DJANGO_EXPECT_FRAMEWORK": framework,
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        proc = subprocess.run(
            [
                python,
                "-m",
                "pytest",
                "project_checks.py",
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "addopts=",
                "--basetemp",
                str(tmp_path / "basetemp"),
            ],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, f"project tests failed on {db}:\n{proc.stdout}\n{proc.stderr}"

    return run
