"""``omniq dashboard`` as a user runs it: a real process serving real requests."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from omniq.testing import until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("auth", [None, "ops:pa55word"])
def test_command_serves_the_configured_stores(tmp_path: Path, auth: str | None) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text(f"task_queue: sqlite:///{tmp_path}/q.db\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OMNIQ_DASHBOARD_AUTH"}
    if auth:
        env["OMNIQ_DASHBOARD_AUTH"] = auth  # from the environment: not visible in ps
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omniq.cli",
            "dashboard",
            "--config",
            str(config),
            "--port",
            str(port),
            "--read-only",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def serving() -> tuple[int, str] | None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                return get(f"http://127.0.0.1:{port}/plugins", auth)
            except (ConnectionError, urllib.error.URLError):
                return None

        status, page = until(serving, "omniq dashboard serving", deadline=20, interval=0.1)
        assert status == 200 and "read-only" in page and "SqliteTaskQueue" in page
        if auth:
            assert get(f"http://127.0.0.1:{port}/")[0] == 401
    finally:
        proc.terminate()
        proc.wait(15)
