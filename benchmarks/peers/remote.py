"""A peer that cannot share ``.venv-peers`` runs in a virtualenv of its own: this bridge.

``RemoteSubject`` is a ``Subject`` in the harness process that starts
``<venv>/bin/python -m peers.remote <module:Class>`` and forwards every call to it as one
JSON line on the child's stdin, reading one JSON line back from its stdout; the child
(``serve``) holds the real subject. The timed loops run in the child too
(``harness.Timed``, reached as ``timed.*``), so the hop between the two processes is
never inside a measured interval. ``worker_command`` comes from the child as well, so
the peer's worker runs on that virtualenv's interpreter.

``benchmarks/peers/setup.py`` makes the virtualenvs: ``benchmarks/.venv-peers-<name>``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

__all__ = ["RemoteSubject", "bullmq", "oban", "serve"]

BENCHMARKS = Path(__file__).resolve().parent.parent


def venv_python(name: str) -> Path:
    """The interpreter of ``benchmarks/.venv-peers-<name>``."""
    return BENCHMARKS / f".venv-peers-{name}" / "bin" / "python"


class RemoteError(Exception):
    """An exception the subject raised in the child, by type name and message."""


class RemoteRuntimeError(RemoteError, RuntimeError):
    """A ``RuntimeError`` in the child (the harness retries ``processing_window`` on
    those while a worker without burst mode is still finishing)."""


class RemoteSubject:
    """The subject ``ref`` (``module:Class``) of the peer whose virtualenv is ``venv``."""

    def __init__(self, venv: str, ref: str) -> None:
        python = venv_python(venv)
        if not python.exists():
            raise RuntimeError(f"{python} is missing: run `python3 benchmarks/peers/setup.py`")
        path = os.pathsep.join(filter(None, [str(BENCHMARKS), os.environ.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [str(python), "-m", "peers.remote", ref],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
            text=True,
        )
        hello = self._read()
        self.name: str = hello["name"]
        self.has_burst: bool = hello["has_burst"]
        self.notes: list[str] = hello["notes"]
        self.timed = _RemoteTimed(self)

    def _read(self) -> Any:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise RuntimeError(f"the subprocess {self._proc.args} exited with {code}")
        reply = json.loads(line)
        if "error" in reply:
            kind = {"RuntimeError": RemoteRuntimeError, "TimeoutError": TimeoutError}
            raise kind.get(reply["type"], RemoteError)(f"{reply['type']}: {reply['error']}")
        return reply.get("result")

    def call(self, method: str, *args: Any) -> Any:
        """One blocking request and its reply (the child serves one at a time)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"method": method, "args": args}) + "\n")
        self._proc.stdin.flush()
        return self._read()

    async def ask(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.call, method, *args)

    def _end(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()  # the child's loop ends on EOF
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    async def open(self) -> None:
        try:
            await self.ask("open")
        except BaseException:
            self._end()
            raise

    async def close(self) -> None:
        try:
            await self.ask("close")
        finally:
            await asyncio.to_thread(self._end)

    async def enqueue_one(self) -> str:
        return str(await self.ask("enqueue_one"))

    async def enqueue_bulk(self, n: int) -> list[str]:
        return list(await self.ask("enqueue_bulk", n))

    async def clear(self) -> None:
        await self.ask("clear")

    def worker_command(self, burst: bool) -> list[str]:
        return list(self.call("worker_command", burst))

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        first, last = await self.ask("processing_window", task_ids)
        return float(first), float(last)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        await self.ask("wait_result", task_id, timeout)


class _RemoteTimed:
    """``harness.Timed``'s loops, run in the child on the real subject."""

    def __init__(self, remote: RemoteSubject) -> None:
        self.remote = remote

    async def enqueue_singles(self, n: int) -> float:
        return float(await self.remote.ask("timed.enqueue_singles", n))

    async def enqueue_bulk(self, n: int) -> tuple[list[str], float]:
        ids, seconds = await self.remote.ask("timed.enqueue_bulk", n)
        return list(ids), float(seconds)

    async def latency(self, samples: int) -> list[float]:
        return [float(s) for s in await self.remote.ask("timed.latency", samples)]


def bullmq() -> RemoteSubject:
    """BullMQ's Python port: needs redis-py >= 6.2, which arq refuses."""
    return RemoteSubject("bullmq", "peers.bullmq_subject:BullmqSubject")


def oban() -> RemoteSubject:
    """Oban for Python: needs Python >= 3.12."""
    return RemoteSubject("oban", "peers.oban_subject:ObanSubject")


async def serve(ref: str, requests: IO[str], replies: IO[str]) -> None:
    """The child's loop: one JSON request per line until EOF, one JSON reply each."""
    from harness import Timed

    module, _, cls = ref.partition(":")
    subject = getattr(importlib.import_module(module), cls)()
    timed = Timed(subject)

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply(
        {
            "result": {
                "name": subject.name,
                "has_burst": getattr(subject, "has_burst", True),
                "notes": list(getattr(subject, "notes", [])),
            }
        }
    )
    while line := await asyncio.to_thread(requests.readline):
        request = json.loads(line)
        method: str = request["method"]
        try:
            if method == "echo":  # the bridge's own round trip, for README's figure
                result = request["args"]
            else:
                owner, _, name = method.rpartition(".")
                result = getattr(timed if owner == "timed" else subject, name)(*request["args"])
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            reply({"error": str(exc), "type": type(exc).__name__})
        else:
            reply({"result": result})


def main() -> None:
    # The protocol owns the real stdout; anything the subject prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    asyncio.run(serve(sys.argv[1], sys.stdin, replies))


if __name__ == "__main__":
    main()
