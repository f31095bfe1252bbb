"""Starting and steering :mod:`omniq.testing.tcp_proxy` from a test: a server that
goes away (``kill -9`` of the proxy), or an answer lost on the way back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

__all__ = ["forwarding", "lose_next_answer"]


@contextmanager
def forwarding(url: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A proxy process forwarding to ``url``'s server: its port and the process (killed
    on exit)."""
    parts = urlsplit(url)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omniq.testing.tcp_proxy",
            parts.hostname or "127.0.0.1",
            str(parts.port),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline()), proc
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def lose_next_answer(proc: subprocess.Popen[str], marker: str) -> None:
    """Have the proxy lose the answer to the next request holding ``marker`` (returns
    once it is armed; it prints ``cut`` when it did)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"cut {marker.encode().hex()}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "armed"
