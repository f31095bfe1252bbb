"""Make ``benchmarks/.venv-peers``: the workspace's OmniQ distributions (editable) plus the
pinned peers of ``requirements.txt``, apart from the project's own virtualenv.

    python3 benchmarks/peers/setup.py            # from the repository root
    benchmarks/.venv-peers/bin/python benchmarks/compare.py --backend redis

Plain ``venv`` + ``pip``; run it again to bring the environment up to date.
"""

from __future__ import annotations

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


def main() -> int:
    if not (VENV / "bin" / "python").exists():
        venv.create(VENV, with_pip=True)
    editable = [arg for member in MEMBERS for arg in ("-e", str(ROOT / member))]
    command = [
        str(VENV / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        *editable,
        "-r",
        str(HERE / "requirements.txt"),
    ]
    print(" ".join(command), flush=True)
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
