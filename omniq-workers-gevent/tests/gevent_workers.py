"""Helpers for tests that drive worker subprocesses."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

StartWorker = Callable[..., "subprocess.Popen[str]"]


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for a worker; return its output, failing with it when the exit is not clean."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def wait_for(path: Path, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not appear within {deadline} s")
        time.sleep(0.02)
