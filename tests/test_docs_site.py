"""The documentation site builds with no warning, and its generated pages match the code.

``mkdocs build --strict`` turns every warning (a broken link or anchor, a page missing from
the nav, an API reference naming nothing, a docstring griffe cannot read) into a failure,
so the site cannot rot unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    try:
        import material  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as exc:
        message = f"docs tools not installed ({exc}); python3 .ci/dev.py test installs them"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"(WARNING|ERROR)\b", line)]


def test_site_builds_strictly(tmp_path):
    built = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    output = built.stdout + built.stderr
    assert built.returncode == 0 and not _problems(output), (
        "mkdocs build --strict failed:\n" + "\n".join(_problems(output) or [output[-3000:]])
    )
    # The pages the API reference promises are there, rendered from the docstrings.
    models = (tmp_path / "site" / "reference" / "models" / "index.html").read_text()
    for name in ("TaskState", "READY_STATES", "TERMINAL_STATES", "lease_token", "catch_up"):
        assert name in models, f"the models reference does not show {name}"
    sqlite = (tmp_path / "site" / "backends" / "sqlite" / "index.html").read_text()
    assert "BEGIN IMMEDIATE" in sqlite, "the SQLite page does not show its crash windows"


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        ("[gone](no-such-page.md)", "no-such-page.md"),
        ("::: omniq.models.NoSuchModel", "NoSuchModel"),
    ],
    ids=["link", "api-reference"],
)
def test_a_broken_reference_fails_the_build(tmp_path, breakage, named):
    """The check above is only worth having if a broken link or API reference fails it.
    (A small site with the same settings: a copy of every page would double the time.)"""
    import yaml

    site = tmp_path / "repo"
    shutil.copytree(ROOT / "docs" / "_hooks", site / "docs" / "_hooks")
    (site / "omniq-core").mkdir()
    (site / "omniq-core" / "src").symlink_to(ROOT / "omniq-core" / "src")
    (site / "docs" / "index.md").write_text("# Home\n\n[the page](page.md)\n")
    page = site / "docs" / "page.md"
    page.write_text("# Page\n\n::: omniq.errors.OmniQError\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["nav"] = ["index.md", "page.md"]
    (site / "mkdocs.yml").write_text(yaml.safe_dump(config))
    unbroken = _mkdocs(site / "mkdocs.yml", tmp_path / "unbroken")
    assert unbroken.returncode == 0, unbroken.stdout + unbroken.stderr
    page.write_text(f"{page.read_text()}\n{breakage}\n")
    built = _mkdocs(site / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert named in "\n".join(_problems(built.stdout + built.stderr))


def test_configuration_page_shows_every_key_the_code_declares():
    """docs/configuration.md's table is rendered from OmniQConfig and WorkerConfig (their
    types, defaults and ``:ivar:`` docstring lines), so it cannot drift from the code."""
    from omniq.config_reference import config_table

    page = (ROOT / "docs" / "configuration.md").read_text()
    found = re.search(r"<!-- config:begin .*?-->\n(.*?)<!-- config:end -->", page, re.S)
    assert found, "docs/configuration.md has no generated key table"
    assert found[1] == config_table(), (
        "docs/configuration.md's key table differs from the code; paste the output of\n"
        'python -c "from omniq.config_reference import config_table; print(config_table())"'
    )


def test_every_config_key_is_described():
    from omniq.config import OmniQConfig, WorkerConfig
    from omniq.config_reference import field_docs

    for cls in (OmniQConfig, WorkerConfig):
        missing = set(cls.__struct_fields__) - set(field_docs(cls))
        assert not missing, (
            f"{cls.__name__} docstring lacks ':ivar NAME:' lines for {sorted(missing)}"
        )


def test_readme_links_into_the_site():
    readme = (ROOT / "README.md").read_text()
    assert "docs/index.md" in readme
