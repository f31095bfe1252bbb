"""Fixtures of the fsspec tests: an S3-compatible server, and worker processes to kill.

The S3 server is moto's, on 127.0.0.1, one per session: ``moto.server.ThreadedMotoServer``
with one addition. moto checks ``If-Match``/``If-None-Match`` and then stores without a
lock, so two conditional PUTs racing on one key could both pass, which real S3 never
allows. The server below runs conditional PUTs one at a time (everything else
concurrently), making moto's check-and-store atomic as S3's is.

:class:`Crash` runs workers of a ``file://`` queue as real processes, makes one of their
writes fail and ``kill -9`` s them (the crash-between-writes tests).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from omniq.testing import until

BUCKET = "omniq-test"


@pytest.fixture(scope="session")
def s3_storage_options() -> Iterator[dict[str, Any]]:
    """fsspec options reaching a fresh moto server with bucket :data:`BUCKET` created."""
    moto_server = pytest.importorskip(
        "moto.moto_server.werkzeug_app", reason="moto[server] runs the S3 tests"
    )
    s3fs = pytest.importorskip("s3fs", reason="s3fs runs the S3 tests (omniq[s3])")
    from werkzeug.serving import make_server

    app = moto_server.DomainDispatcherApplication(moto_server.create_backend_app)
    conditional = threading.Lock()

    def serialize_conditional_puts(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] == "PUT" and (
            "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
        ):
            with conditional:
                return list(app(environ, start_response))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, serialize_conditional_puts, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
    }
    s3fs.S3FileSystem(**options).call_s3("create_bucket", Bucket=BUCKET)
    try:
        yield options
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def s3_ref(s3_storage_options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A ref for an empty prefix of the test bucket (plain data, as the suite requires),
    removed afterwards (moto lists a bucket by scanning all of it, so leftovers slow
    every later test)."""
    import s3fs

    prefix = f"{BUCKET}/{uuid.uuid4().hex}"
    yield {"url": f"s3://{prefix}", "storage_options": s3_storage_options}
    fs = s3fs.S3FileSystem(**s3_storage_options)
    if fs.exists(prefix):
        fs.rm(prefix, recursive=True)


CRASH_APP = """
import logging, os, pathlib, sys, time
from omniq import OmniQ

app = OmniQ(task_queue={url!r}, lease={lease})

@app.task
def hold(go: str) -> int:
    until = time.monotonic() + 60
    while not pathlib.Path(go).exists() and time.monotonic() < until:
        time.sleep(0.005)
    return os.getpid()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True)
    app.run_worker(pool="thread", concurrency=1)
"""


class Crash:
    """A ``file://`` queue in ``tmp_path/q``, the app module of its workers (``crashapp``,
    also imported here as the producer: :attr:`app`), and its worker processes."""

    lease = 2.0

    def __init__(self, tmp_path: Path, mod: ModuleType) -> None:
        self.tmp_path = tmp_path
        self.queue = tmp_path / "q"
        self.url = f"file://{self.queue}"
        self.mod = mod
        self.app = mod.app

    @staticmethod
    def poll(
        what: str,
        check: Callable[[], Any],
        deadline: float = 30.0,
        show: Callable[[], Any] | None = None,
    ) -> Any:
        """:func:`omniq.testing.until`, its failure showing ``show()`` (a worker's log)."""
        return until(check, what, deadline=deadline, show=show)

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        """A worker process (one thread), logging to ``<name>.log``."""
        with (self.tmp_path / f"{name}.log").open("ab") as out:
            return subprocess.Popen(
                [sys.executable, str(self.tmp_path / "crashapp.py")],
                cwd=self.tmp_path,
                stdout=out,
                stderr=out,
            )

    def kill_when_logged(self, proc: subprocess.Popen[bytes], name: str, text: str) -> None:
        """``kill -9`` the worker ``name`` as soon as its log holds ``text``."""
        self.poll(f"{text!r} logged", lambda: text in self.log(name), show=lambda: self.log(name))
        self.kill(proc)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """``kill -9`` (when still running) and reap."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def entries(self, state: str) -> list[Path]:
        """The index entries of queue ``default`` in ``state``."""
        found = (self.queue / "queues" / "default" / state).rglob("*")
        return [p for p in found if p.is_file()]

    @staticmethod
    @contextlib.contextmanager
    def undeletable(path: Path) -> Iterator[None]:
        """Make deleting the file ``path`` fail (reading it still works): the immutable
        attribute as root (who ignores permissions), else a read-only directory."""
        if os.geteuid() != 0:
            mode = path.parent.stat().st_mode
            path.parent.chmod(0o555)
            try:
                yield
            finally:
                path.parent.chmod(mode)
            return
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make {path} immutable here: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def crash(tmp_path: Path) -> Iterator[Crash]:
    """:class:`Crash` on ``tmp_path``: the app module written there and imported here."""
    script = tmp_path / "crashapp.py"
    url = f"file://{tmp_path / 'q'}"
    script.write_text(textwrap.dedent(CRASH_APP.format(url=url, lease=Crash.lease)))
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("crashapp", None)
        mod = importlib.import_module("crashapp")
    finally:
        sys.path.pop(0)
    try:
        yield Crash(tmp_path, mod)
    finally:
        mod.app.close()
        sys.modules.pop("crashapp", None)
