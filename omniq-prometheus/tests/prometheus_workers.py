"""Workers of ``prometheus_app`` as real ``omniq worker`` processes, and their
``/metrics`` read the way Prometheus reads them."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from omniq.testing import until

#: How long a test waits for a worker to show something before it fails.
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scrape:
    """One scrape of ``/metrics``: the value of each sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(
            v
            for n, have, v in self.samples
            if n == name and all(have.get(k) == w for k, w in labels.items())
        )

    def labels(self, name: str) -> list[dict[str, str]]:
        return [have for n, have, _ in self.samples if n == name]


class WorkerProcess:
    """``omniq worker --metrics-port`` in its own process."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = cwd / f"worker-{self.port}.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "omniq.cli",
                "worker",
                "--app",
                "prometheus_app:app",
                "--metrics-port",
                f"127.0.0.1:{self.port}",
                *args,
            ],
            env=env,
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def scrape(self) -> Scrape:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return Scrape(response.read().decode())

    def wait_until(self, what: str, check: Callable[[Scrape], Any]) -> Scrape:
        """Scrape until ``check`` is truthy; fail after :data:`DEADLINE` naming ``what``."""
        last: list[Scrape] = []  # the latest answer, shown if the deadline passes

        def seen() -> Scrape | None:
            if self.proc.poll() is not None:
                pytest.fail(f"the worker exited ({self.proc.returncode}):\n{self.output()}")
            try:
                last[:] = [self.scrape()]
            except (urllib.error.URLError, ConnectionError):
                last.clear()  # not serving yet
                return None
            return last[0] if check(last[0]) else None

        return until(
            seen,
            what,
            deadline=DEADLINE,
            interval=0.05,
            show=lambda: f"last scrape:\n{last[0].text if last else '(no answer)'}",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
