"""Helpers for tests that drive worker subprocesses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence

StartWorker = Callable[..., "subprocess.Popen[str]"]


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for a worker; return its output, failing with it when the exit is not clean."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def run_python(*parts: str, args: Sequence[str] = ()) -> str:
    """Run the code ``parts`` (each dedented) in a fresh interpreter with ``args`` in
    ``sys.argv[1:]``, since patching must not touch the test process; return its
    stdout, failing with its output unless it exits cleanly."""
    code = "\n".join(textwrap.dedent(p) for p in parts)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
