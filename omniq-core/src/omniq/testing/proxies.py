"""Starting and steering :mod:`omniq.testing.tcp_proxy` from a test: a server that
goes away (``kill -9`` of the proxy), or an answer lost on the way back."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

__all__ = ["Proxy", "forwarding"]

#: How long a proxy has to print what it was asked (its port, ``armed``).
ANSWER_TIMEOUT = 10.0


class Proxy:
    """A running proxy process: its ``port``, and what it prints, read as it comes (so
    that a wait for it has a deadline instead of a blocked read)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self._next(ANSWER_TIMEOUT, "its port"))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())

    def _next(self, timeout: float, what: str) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the proxy printed no {what} within {timeout} s") from None

    def lose_next_answer(self, marker: str) -> None:
        """Lose the answer to the next request holding ``marker`` (returns once armed).
        Markers armed before the first cut are watched for in turn."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"cut {marker.encode().hex()}\n")
        self.proc.stdin.flush()
        assert self._next(ANSWER_TIMEOUT, "'armed'") == "armed"

    def cut(self, timeout: float = 20.0) -> None:
        """Wait until the proxy lost an answer (fails if no request held the marker)."""
        assert self._next(timeout, "'cut': no request held the marker") == "cut"

    def kill(self) -> None:
        """``kill -9``: every connection closes and new ones are refused."""
        self.proc.kill()
        self.proc.wait()


@contextmanager
def forwarding(url: str, port: int = 0) -> Iterator[Proxy]:
    """A proxy process forwarding to ``url``'s server, listening on ``port`` (a free one
    by default; killed on exit)."""
    parts = urlsplit(url)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omniq.testing.tcp_proxy",
            parts.hostname or "127.0.0.1",
            str(parts.port),
            str(port),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield Proxy(proc)
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
