"""The plugin author's path, end to end, with examples/omniq-backend-example.

The example is installed into a throwaway virtualenv made once per session, never into
the shared one (other test runs would see an extra plugin meanwhile). ``venv
--system-site-packages`` would expose the *base* interpreter's packages, not the shared
venv's, so the throwaway venv gets a ``.pth`` file adding the shared venv's
site-packages instead (``site.addsitedir``, so editable installs work too). Everything
that must see the plugin therefore runs in a subprocess of that venv's Python.

The error cases use real distributions too: a directory holding a ``*.dist-info`` with
an ``entry_points.txt``, put on ``PYTHONPATH``, is what ``importlib.metadata`` discovers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "omniq-backend-example"

# Module-level test functions only: pytest-xdist's ``--dist loadscope`` (.ci/dev.py) then
# runs them on one worker, so the session's venv is built once and the example's own
# directory (where it is built) is never built in by two workers at once.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv seeing the shared packages plus the example plugin, installed non-editable."""
    venv = tmp_path_factory.mktemp("example-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shared = sysconfig.get_paths()["purelib"]
    Path(purelib, "_omniq_shared_venv.pth").write_text(
        f"import site; site.addsitedir({shared!r})\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return python


def run(
    python: Path,
    *args: str,
    extra_path: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMNIQ_", "PYTHONPATH"))}
    if extra_path is not None:
        clean["PYTHONPATH"] = str(extra_path)
    clean.update(env or {})
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd or ROOT,
        env=clean,
    )


def plugins_json(python: Path, extra_path: Path | None = None) -> dict[str, dict]:
    done = run(python, "-m", "omniq.cli", "plugins", "--json", extra_path=extra_path)
    assert done.returncode == 0, done.stderr
    return {p["name"]: p for p in json.loads(done.stdout)}


def fake_distribution(where: Path, dist: str, plugin: str, source: str) -> Path:
    """A minimal installed distribution with one ``omniq.plugins`` entry point."""
    module = f"{dist.replace('-', '_')}_plugin"
    info = where / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[omniq.plugins]\n{plugin} = {module}\n")
    (where / f"{module}.py").write_text(textwrap.dedent(source))
    return where


# -- the happy path ------------------------------------------------------------------------


def test_the_shared_venv_does_not_see_the_example() -> None:
    from importlib.metadata import entry_points

    assert "example" not in {ep.name for ep in entry_points(group="omniq.plugins")}


def test_omniq_plugins_lists_the_example(venv_python: Path) -> None:
    example = plugins_json(venv_python)["example"]
    assert example["distribution"] == "omniq-backend-example" and example["version"] == "0.1.0"
    assert example["error"] is None and example["hooks"] == ["omniq_register_backends"]
    assert example["backends"] == [
        {
            "name": "example",
            "schemes": ["example"],
            "provides": ["task_queue", "result_storage", "event_storage"],
        }
    ]


END_TO_END = """
import asyncio
from omniq import AsyncOmniQ

app = AsyncOmniQ(task_queue="example")  # the entry-point name; results and events follow


@app.task
async def add(a, b):
    return a + b


async def main():
    async with app:
        assert type(app.task_queue).__module__ == "omniq_backend_example.queue"
        assert type(app.result_storage).__module__ == "omniq_backend_example.results"
        refs = [await add.delay(i, 10) for i in range(3)]
        assert await app.run_worker(burst=True) == "burst"
        print([await app.get_result(ref, timeout=10) for ref in refs])
        print(sorted({e.type.value for e in await app.events(task_id=refs[0].id)}))

asyncio.run(main())
"""


def test_a_config_naming_the_plugin_runs_tasks_end_to_end(venv_python: Path) -> None:
    done = run(venv_python, "-c", END_TO_END)
    assert done.returncode == 0, done.stderr
    results, events = done.stdout.strip().splitlines()
    assert results == "[10, 11, 12]"
    assert {"enqueued", "started", "succeeded"} <= set(json.loads(events.replace("'", '"')))


def test_the_example_passes_the_conformance_suite(venv_python: Path) -> None:
    """Its own tests/test_conformance.py, run the way docs/plugins.md tells an author to."""
    done = run(venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=EXAMPLE)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


# -- what a broken or conflicting plugin gets --------------------------------------------------


def test_a_plugin_with_a_broken_import_is_reported_and_the_others_load(
    venv_python: Path, tmp_path: Path
) -> None:
    path = fake_distribution(
        tmp_path,
        "omniq-backend-broken",
        "broken",
        """
        import omniq_no_such_client_library  # the dependency its author forgot to declare
    """,
    )
    listed = plugins_json(venv_python, path)
    error = listed["broken"]["error"]
    assert "omniq-backend-broken" in error and "omniq_no_such_client_library" in error
    assert "OMNIQ_DISABLE_PLUGINS=broken" in error
    assert listed["example"]["error"] is None and listed["fsspec"]["error"] is None
    done = run(
        venv_python,
        "-c",
        "from omniq.registry import registry; registry.resolve('task_queue', 'broken://x')",
        extra_path=path,
    )
    assert done.returncode != 0 and "Plugins that failed to load" in done.stderr
    assert "omniq_no_such_client_library" in done.stderr


def test_a_plugin_missing_its_hookimpl_marker_is_reported(
    venv_python: Path, tmp_path: Path
) -> None:
    path = fake_distribution(
        tmp_path,
        "omniq-backend-unmarked",
        "unmarked",
        """
        from omniq import BackendSpec

        def omniq_register_backends(register):  # @hookimpl forgotten
            register(BackendSpec(name="unmarked", schemes=("unmarked",)))
    """,
    )
    error = plugins_json(venv_python, path)["unmarked"]["error"]
    assert "implements no omniq hooks" in error and "@omniq.hookimpl" in error


CONTESTED = """
import sys
from omniq.errors import AmbiguousBackendError
from omniq.registry import registry

try:
    registry.resolve("task_queue", "example://x")
except AmbiguousBackendError as exc:
    print("ambiguous:", exc)
chosen = registry.resolve("task_queue", {"backend": sys.argv[1], "url": "example://x"})
print("chosen:", type(chosen).__module__)
"""


def test_a_contested_scheme_is_an_error_naming_both_until_one_is_chosen(
    venv_python: Path, tmp_path: Path
) -> None:
    path = fake_distribution(
        tmp_path,
        "omniq-backend-rival",
        "rival",
        """
        from omniq import BackendSpec, hookimpl

        @hookimpl
        def omniq_register_backends(register):
            # Never imported here: choosing "example" means the rival's class is not needed.
            register(
                BackendSpec(name="rival", schemes=("example",), task_queue="rival_store:Queue")
            )
    """,
    )
    done = run(venv_python, "-c", CONTESTED, "example", extra_path=path)
    assert done.returncode == 0, done.stderr
    ambiguous, chosen = done.stdout.strip().splitlines()
    assert "'example' is claimed by several plugins" in ambiguous
    assert (
        "example (omniq-backend-example)" in ambiguous
        and "rival (omniq-backend-rival)" in ambiguous
    )
    assert chosen == "chosen: omniq_backend_example.queue"
    # Disabling the rival makes the plain URL resolve again, deterministically.
    done = run(
        venv_python,
        "-c",
        "from omniq.registry import registry; "
        "print(type(registry.resolve('task_queue', 'example://x')).__name__)",
        extra_path=path,
        env={"OMNIQ_DISABLE_PLUGINS": "rival"},
    )
    assert done.stdout.strip() == "ExampleTaskQueue", done.stderr
