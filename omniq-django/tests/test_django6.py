"""The same Django project tests on Django 6 (``django.tasks``), which needs Python 3.12.

The test builds a virtual environment with Python 3.12, Django 6 and the workspace's
OmniQ distributions (editable) in ``.venv-django6`` at the repository root, once, and
rebuilds it when a pyproject it installs from changes. Without a Python 3.12 it is
skipped locally and fails under CI (``CI=true``), where Django 6 must be covered.
Set ``OMNIQ_PYTHON312`` to point at an interpreter the search below misses.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-django6"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".omniq-installed"
MEMBERS = ["omniq-core", "omniq-backend-sqlite", "omniq-backend-postgres", "omniq-django"]
DJANGO = "django>=6,<7"
# Module-level test functions only: pytest-xdist's ``--dist loadscope`` (.ci/dev.py) then
# runs both cases on one worker; on two, each would build the environment above, one
# deleting it under the other.


def _is_312_or_newer(python: str) -> bool:
    try:
        proc = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.strip() == "True"


def find_python312() -> str | None:
    """A working Python 3.12+: ``$OMNIQ_PYTHON312``, pyenv's, or ``python3.12`` on PATH
    (a pyenv shim on PATH may exist and still refuse to run, so each is tried)."""
    candidates = [os.environ.get("OMNIQ_PYTHON312", "")]
    candidates += sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")), reverse=True
    )
    candidates += [shutil.which("python3.12") or "", "/usr/bin/python3.12"]
    return next((c for c in candidates if c and _is_312_or_newer(c)), None)


def _fingerprint() -> str:
    h = hashlib.sha256(DJANGO.encode())
    for member in MEMBERS:
        h.update((ROOT / member / "pyproject.toml").read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def django6_python() -> str:
    """The interpreter of the Django 6 environment, built if missing or stale."""
    wanted = _fingerprint()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return str(PYTHON)
    base = find_python312()
    if base is None:
        message = (
            "Django 6 needs Python 3.12, and none was found (set OMNIQ_PYTHON312 or "
            "install python3.12)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must run the Django 6 tests")
        pytest.skip(message)
    if VENV.exists():
        shutil.rmtree(VENV)
    # Without pip of its own (this interpreter's pip installs into it: ensurepip cost
    # half the build), and the editable builds share one hatchling installed first
    # instead of an isolated build environment each.
    subprocess.run([base, "-m", "venv", "--without-pip", str(VENV)], check=True, timeout=300)
    pip = [sys.executable, "-m", "pip", "--python", str(PYTHON), "install"]
    pip += ["--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "hatchling", "editables"], check=True, timeout=300)
    editable = [arg for m in MEMBERS[:-1] for arg in ("-e", str(ROOT / m))]
    subprocess.run(
        [*pip, "--no-build-isolation", *editable, "-e", f"{ROOT / 'omniq-django'}[test]", DJANGO],
        check=True,
        timeout=900,
    )
    STAMP.write_text(wanted)
    return str(PYTHON)


@pytest.mark.slow
@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_django6_project(django6_python: str, run_project: Callable[..., None], db: str) -> None:
    run_project(django6_python, db, "django.tasks")
