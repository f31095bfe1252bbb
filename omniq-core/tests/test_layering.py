"""Core modules form layers, not a circle: the import graph of ``omniq`` has no cycle,
library modules never import the command line, and the worker runtime writes events and
fires schedules through the modules that hold them, not through the app."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import omniq

PACKAGE = Path(omniq.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["omniq", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str) -> set[str]:
    """The ``omniq`` modules ``name`` imports when it runs: at the top and inside
    functions (a deferred import is still an import), not under ``if TYPE_CHECKING``."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in _walk(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module and module in MODULES:
                found.add(module)
            inner = (f"{module}.{a.name}" for a in node.names)  # from package import module
            found.update(m for m in inner if m in MODULES)
    found.discard(name)
    return found


def _walk(body: list[ast.stmt]) -> Any:
    for node in body:
        if isinstance(node, ast.If) and _type_checking_only(node):
            yield from _walk(node.orelse)
            continue
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _walk([child])
            elif isinstance(child, ast.excepthandler):
                yield from _walk(child.body)


GRAPH = {name: _imports(name) for name in MODULES}


def _cycle_from(start: str) -> list[str] | None:
    """A path start -> ... -> start through the graph, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(GRAPH[node]):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_walk_sees_deferred_imports_and_skips_type_checking_ones():
    assert "omniq.worker.runtime" in GRAPH["omniq.app"]  # deferred, in AsyncOmniQ.worker
    assert "omniq.app" not in GRAPH["omniq.worker.runtime"]  # only under TYPE_CHECKING
    assert "omniq.hookspecs" in GRAPH["omniq.registry"]  # from . import hookspecs


def test_no_import_cycle_among_omniq_modules():
    cycles = set()
    for name in GRAPH:
        path = _cycle_from(name)
        if path:
            ring = path[:-1]
            first = ring.index(min(ring))  # one spelling per cycle, whatever its start
            cycles.add(tuple(ring[first:] + ring[:first] + [ring[first]]))
    assert not cycles, (
        "import cycles (deferred imports count; TYPE_CHECKING ones do not):\n"
        + "\n".join(" -> ".join(c) for c in sorted(cycles))
    )


def test_library_modules_never_import_the_command_line():
    offenders = {
        name: sorted(m for m in deps if m == "omniq.cli" or m.startswith("omniq.cli."))
        for name, deps in GRAPH.items()
        if not name.startswith("omniq.cli")
    }
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize(
    "module",
    [
        "omniq.app",
        "omniq.worker.runtime",
        "omniq.registry",
        "omniq.hookspecs",
        "omniq.events",
        "omniq.schedules",
        "omniq.config",
        "omniq.options",
        "omniq.interfaces",
        "omniq.demo",
    ],
)
def test_each_core_module_imports_first_in_a_fresh_interpreter(module):
    run = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr


def test_the_worker_runs_tasks_without_the_apps_event_and_schedule_helpers(tmp_path):
    """The runtime builds and writes events and fires schedules itself: an app whose
    helpers refuse to be called still gets its task run and its events recorded."""
    from omniq import AsyncOmniQ

    class StrictApp(AsyncOmniQ):
        def event(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the worker called app.event")

        async def record_events(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("the worker called app.record_events")

        async def run_due_schedules(self) -> Any:
            raise AssertionError("the worker called app.run_due_schedules")

    async def main() -> tuple[int, list[str], str]:
        # reconnect_timeout=0: a worker that fails in its reserve loop stops at once
        async with StrictApp(
            task_queue=f"sqlite:///{tmp_path}/q.db", worker={"reconnect_timeout": 0}
        ) as app:

            @app.task
            def add(a: int, b: int) -> int:
                return a + b

            ref = await add.delay(2, 3)
            async with asyncio.timeout(20):  # on failure, a worker that hangs still fails
                reason = await app.run_worker(burst=True, grace_period=1)
            value = await app.get_result(ref, timeout=5)
            return value, [e.type.value for e in await app.events(task_id=ref.id)], reason

    value, types, reason = asyncio.run(main())
    assert (value, reason) == (5, "burst")
    assert types == ["enqueued", "started", "succeeded"]
