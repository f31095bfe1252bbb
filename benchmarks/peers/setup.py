"""Make ``benchmarks/.venv-peers``: the workspace's OmniQ distributions (editable) plus the
pinned peers of ``requirements.txt``, apart from the project's own virtualenv; and one
virtualenv per peer that cannot share it (``.venv-peers-<name>`` from
``requirements-<name>.txt``), which ``peers/remote.py`` runs as a subprocess.

    python3 benchmarks/peers/setup.py            # from the repository root
    benchmarks/.venv-peers/bin/python benchmarks/compare.py --backend redis

Plain ``venv`` + ``pip``; run it again to bring the environments up to date.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = HERE.parent / ".venv-peers"
MEMBERS = (
    "omniq-core",
    "omniq-backend-sqlite",
    "omniq-backend-redis",
    "omniq-backend-postgres",
    "omniq-backend-nats",
)
#: Peers with a virtualenv of their own -> the Python they need ("" = this one): bullmq
#: needs redis-py >= 6.2 (arq < 6); Oban for Python needs Python >= 3.12.
OWN_VENVS = {"bullmq": "", "oban": "3.12"}


def find_python(version: str) -> str:
    """The newest pyenv build of that version, else ``pythonX.Y`` on PATH (pyenv's shim
    on PATH fails when that version is not the selected one)."""
    if not version:
        return sys.executable
    pattern = str(Path.home() / f".pyenv/versions/{version}.*/bin/python")
    builds = sorted(glob.glob(pattern), key=lambda p: int(Path(p).parts[-3].split(".")[-1]))
    found = builds[-1] if builds else shutil.which(f"python{version}")
    if found is None:
        raise SystemExit(f"Python {version} not found ({pattern} or python{version} on PATH)")
    return found


def pip_install(python: Path, *args: str) -> int:
    command = [str(python), "-m", "pip", "install", "--quiet", *args]
    print(" ".join(command), flush=True)
    return subprocess.call(command)


def main() -> int:
    if not (VENV / "bin" / "python").exists():
        venv.create(VENV, with_pip=True)
    editable = [arg for member in MEMBERS for arg in ("-e", str(ROOT / member))]
    code = pip_install(VENV / "bin" / "python", *editable, "-r", str(HERE / "requirements.txt"))
    for name, version in OWN_VENVS.items():
        own = HERE.parent / f".venv-peers-{name}"
        if not (own / "bin" / "python").exists():
            subprocess.check_call([find_python(version), "-m", "venv", str(own)])
        requirements = str(HERE / f"requirements-{name}.txt")
        code = pip_install(own / "bin" / "python", "-r", requirements) or code
    return code


if __name__ == "__main__":
    sys.exit(main())
