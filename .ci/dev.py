#!/usr/bin/env python3
"""Set up the development environment if needed, then run the demo, the checks or the
test suite.

    python3 .ci/dev.py demo [omniq demo options]
    python3 .ci/dev.py test [pytest options]
    python3 .ci/dev.py check            # lint, format and type checks only
    python3 .ci/dev.py shell            # prints how to activate the environment

Needs only Python 3.11+ with pip and venv. It creates ./.venv, installs every workspace
member editable (plain pip, so nothing from the public index is ever taken for an
``omniq*`` name), and reinstalls only when a pyproject.toml or this file changed.

``test`` with no arguments (the README's command, which CI runs) first runs the checks,
``ruff check .``, ``ruff format --check .`` and ``mypy`` (configured in the root
pyproject.toml; mypy keeps its cache in ./.mypy_cache), each to the end so every finding
is printed, and fails without running pytest if any reports one. ``test`` with pytest
arguments (a developer running one file) skips them: ``check`` runs them alone.

``test`` with no arguments also runs pytest on several workers (pytest-xdist, see
:func:`parallel_args`): the suite mostly waits on servers, processes and leases. With
arguments it runs in one process, as given (add ``-n 2 --dist loadscope`` to spread
them too).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".omniq-installed"

MEMBERS = [
    "omniq-core",
    "omniq-backend-sqlite",
    "omniq-backend-fsspec",
    "omniq-backend-redis",
    "omniq-backend-postgres",
    "omniq-backend-nats",
    "omniq-workers-gevent",
    "omniq-django",
    "omniq-dashboard",
    "omniq-prometheus",
    "omniq-opentelemetry",
]
# What the test suite needs beyond the members' own dependencies.
TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    # Runs the suite on every core (`test` with no arguments): it mostly waits on servers,
    # processes and leases, so two workers roughly halve its wall time.
    "pytest-xdist>=3.6",
    "mypy>=1.15",
    "ruff>=0.17,<0.18",
    "hatchling>=1.27",
    "build>=1.2",
    "moto[server]>=5",
    "s3fs",
    # The dashboard's browser tests (the system chromium-driver; nothing downloads a browser).
    "selenium>=4.20",
    # The documentation site, built with --strict by tests/test_docs_site.py.
    "mkdocs>=1.6,<2",
    "mkdocs-material>=9.5,<10",
    "mkdocstrings[python]>=1.0,<2",
    "mkdocstrings-python>=2.0,<3",
    # The Django project tests (omniq-django's `test` extra) and the FastAPI example.
    "psycopg[binary]>=3.1",
    "fastapi>=0.110",
    # Starlette's TestClient: httpx2 since Starlette 1.10 (httpx deprecated there), httpx
    # before it and for benchmarks/dashboard.py.
    "httpx>=0.27",
    "httpx2>=2",
    # omniq-opentelemetry's tests record spans with the SDK (its `test` extra).
    "opentelemetry-sdk>=1.20",
]


def fingerprint() -> str:
    h = hashlib.sha256(sys.version.encode())
    for path in [
        Path(__file__),
        ROOT / "pyproject.toml",
        *(ROOT / m / "pyproject.toml" for m in MEMBERS),
    ]:
        h.update(path.read_bytes() if path.exists() else b"-")
    return h.hexdigest()


def ensure_env() -> None:
    # Checked at run time: this script is what tells someone on an older Python to upgrade.
    if sys.version_info < (3, 11):  # noqa: UP036
        sys.exit(f"OmniQ needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = fingerprint()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("installing the OmniQ workspace (editable) and test tools...", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    editable = [
        arg
        for m in MEMBERS
        if (ROOT / m / "pyproject.toml").exists()
        for arg in ("-e", str(ROOT / m))
    ]
    subprocess.run([*pip, *editable, *TEST_DEPS], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def checks() -> list[tuple[str, list[str]]]:
    """The checks ``test`` runs before pytest: a name and a command each, run from the
    directory whose pyproject.toml configures them."""
    return [
        ("ruff check", [str(BIN / "ruff"), "check", "."]),
        ("ruff format", [str(BIN / "ruff"), "format", "--check", "."]),
        ("mypy", [str(BIN / "mypy")]),
    ]


def run_checks(root: Path = ROOT) -> int:
    """Run every check in ``root``, all of them even after a failure (so one run shows
    every finding); 1 if any failed, naming them, else 0."""
    failed = []
    for name, args in checks():
        print(f"== {name}: {' '.join([Path(args[0]).name, *args[1:]])}", flush=True)
        if subprocess.run(args, cwd=root).returncode != 0:
            failed.append(name)
    if failed:
        print(f"checks failed: {', '.join(failed)} (findings above)", file=sys.stderr)
        return 1
    return 0


def parallel_args(cpus: int | None = None) -> list[str]:
    """pytest-xdist options for the full run: one worker per core, at most four (the
    fault tests' leases of a few seconds must hold under the load), none on one core.
    ``loadscope`` runs a test class, or a module's test functions, on one worker: a
    module whose tests share a build (the Django 6 environment, the example plugin's
    venv) or a browser keeps them together. (``loadgroup`` with ``xdist_group`` marks
    would not: pytest-xdist 3.8 sets the group by rewriting a node id that pytest 9.2
    no longer reads there, so the marks are silently ignored.)"""
    workers = min(cpus if cpus is not None else os.cpu_count() or 1, 4)
    return ["-n", str(workers), "--dist", "loadscope"] if workers > 1 else []


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "check", "shell"):
        print(__doc__)
        return 2
    ensure_env()
    command, rest = argv[0], argv[1:]
    os.chdir(ROOT)
    if command == "check":
        return run_checks()
    if command == "demo":
        args = [str(BIN / "omniq"), "demo", *rest]
    elif command == "test":
        if not rest and run_checks() != 0:
            return 1
        args = [str(PY), "-m", "pytest", *(rest or parallel_args())]
    else:
        print(f"environment ready: source {BIN / 'activate'}")
        return 0
    os.execv(args[0], args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
