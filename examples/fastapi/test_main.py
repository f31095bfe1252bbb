"""The FastAPI recipe: enqueue through the API, run a real ``omniq worker`` on the same
stores, read the result through the API."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

HERE = Path(__file__).resolve().parent


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``main.py`` imported with its stores in a temporary SQLite file (as the environment
    would configure them in production)."""
    monkeypatch.setenv("OMNIQ_TASK_QUEUE", f"sqlite:///{tmp_path / 'omniq.db'}")
    spec = importlib.util.spec_from_file_location("fastapi_recipe", HERE / "main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_enqueue_run_and_read(recipe: ModuleType) -> None:
    with TestClient(recipe.app) as client:
        created = client.post("/add", params={"a": 2, "b": 3})
        assert created.status_code == 202
        task_id = created.json()["id"]
        assert client.get(f"/tasks/{task_id}").json() == {"id": task_id, "state": "pending"}

        worker = subprocess.run(
            [
                str(Path(sys.executable).with_name("omniq")),
                "worker",
                "--app",
                "main:omniq",
                "--burst",
                "--no-progress",
            ],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert worker.returncode == 0, worker.stderr

        assert client.get(f"/tasks/{task_id}").json() == {
            "id": task_id,
            "state": "succeeded",
            "result": 5,
        }
        assert client.get("/tasks/no-such-task").status_code == 404


def test_docs_show_the_recipe_verbatim() -> None:
    doc = (HERE.parents[1] / "docs" / "integrations.md").read_text()
    assert f"```python\n{(HERE / 'main.py').read_text()}```" in doc
