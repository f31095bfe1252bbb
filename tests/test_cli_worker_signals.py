"""``omniq worker`` drains on SIGTERM for a blocking (``OmniQ``) app whose loop idles on
its portal's own thread: a real worker process, whose app module made a blocking call
as it was imported (the portal's thread then runs the loop, and the worker's run is
handed to it, where asyncio cannot install signal handlers: the process died of the
signal, its running task cut off, with no drain)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from omniq import OmniQ
from omniq.testing import until

DEADLINE = 60.0

APP = """
import os, pathlib, time
from omniq import OmniQ

app = OmniQ(task_queue=os.environ["QUEUE"])

@app.task(name="t.hold")
def hold(folder: str) -> str:
    here = pathlib.Path(folder)
    (here / "running").touch()
    deadline = time.monotonic() + 60
    while not (here / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"

app.open()  # a blocking call at import: the app's loop then idles on the portal's thread
"""


@pytest.mark.slow
def test_sigterm_drains_a_worker_whose_app_loop_idles_on_its_portal_thread(
    tmp_path: Path,
) -> None:
    queue = f"sqlite:///{tmp_path / 'q.db'}"
    (tmp_path / "idle_app.py").write_text(textwrap.dedent(APP))
    env = dict(os.environ, QUEUE=queue)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    producer = OmniQ(task_queue=queue)

    @producer.task(name="t.hold")
    def hold(folder: str) -> str:  # (the worker's module runs the body)
        return ""

    ref = hold.delay(str(tmp_path))
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "omniq.cli", "worker", "--app", "idle_app:app", "-c", "1"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        until(lambda: (tmp_path / "running").exists(), "the task running", deadline=DEADLINE)
        worker.send_signal(signal.SIGTERM)
        until(
            lambda: "stopping (signal)" in log.read_text() or worker.poll() is not None,
            "the drain, or the worker's exit",
            deadline=DEADLINE,
        )
        assert worker.poll() is None, (worker.returncode, log.read_text())  # (it drains)
        (tmp_path / "release").touch()  # (the drain waits for the running task)
        code = worker.wait(timeout=DEADLINE)
        assert producer.get_result(ref, timeout=DEADLINE) == "done"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        producer.close()
    assert code == 0, log.read_text()
