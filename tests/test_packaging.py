"""What every distribution ships besides code: the license, a readme and the metadata an
index page shows (classifiers, project URLs).

Each distribution builds from its own folder, so each folder holds its own copy of the
root LICENSE; the slow test builds every sdist, then the wheel from that sdist (what
``pip install`` of an sdist does), and reads the archives themselves.
"""

from __future__ import annotations

import email.parser
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = [
    ROOT,
    *sorted(p.parent for p in ROOT.glob("omniq-*/pyproject.toml")),
    ROOT / "examples" / "omniq-backend-example",
]
PYTHONS = {"3.11", "3.12", "3.13"}
URLS = {"Source", "Documentation", "Changelog"}


def _id(folder: Path) -> str:
    return folder.name if folder != ROOT else "omniq"


def _project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]


def _check_metadata(meta: Message, where: str) -> None:
    classifiers = set(meta.get_all("Classifier") or [])
    assert meta["License-Expression"] == "MIT", where
    assert meta.get_all("License-File") == ["LICENSE"], where
    assert {"Framework :: AsyncIO", "Typing :: Typed"} <= classifiers, where
    assert {f"Programming Language :: Python :: {v}" for v in PYTHONS} <= classifiers, where
    assert meta["Description-Content-Type"] == "text/markdown", where
    assert meta.get_payload().startswith("# "), f"{where}: no readme in the metadata"
    labels = {url.split(",", 1)[0] for url in meta.get_all("Project-URL") or []}
    assert labels >= URLS, where


@pytest.mark.parametrize("folder", DISTRIBUTIONS, ids=_id)
def test_each_distribution_folder_holds_the_root_license_and_a_readme(folder: Path) -> None:
    assert (folder / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    project = _project(folder)
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (folder / project["readme"]).is_file()
    assert set(project["urls"]) >= URLS
    for label, url in project["urls"].items():
        assert url.startswith("https://github.com/omniq-dev/omniq"), (label, url)


def test_the_changelog_has_an_unreleased_section_above_the_released_ones() -> None:
    headings = [
        line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")
    ]
    assert headings[0] == "## [Unreleased]"
    assert "## [0.1.0]" in " ".join(headings)


def _build(folder: Path, dest: Path) -> tuple[Path, Path]:
    """The distribution's sdist, and the wheel built from that sdist."""
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dest), str(folder)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (sdist,), (wheel,) = dest.glob("*.tar.gz"), dest.glob("*.whl")
    return sdist, wheel


@pytest.mark.slow
@pytest.mark.parametrize("folder", DISTRIBUTIONS, ids=_id)
def test_every_wheel_and_sdist_ships_the_license_readme_and_classifiers(
    folder: Path, tmp_path: Path
) -> None:
    sdist, wheel = _build(folder, tmp_path)
    license_text = (ROOT / "LICENSE").read_text()
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = set(tar.getnames())
        assert f"{top}/LICENSE" in names and f"{top}/{_project(folder)['readme']}" in names
        assert tar.extractfile(f"{top}/LICENSE").read().decode() == license_text
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    _check_metadata(email.parser.Parser().parsestr(pkg_info), sdist.name)
    with zipfile.ZipFile(wheel) as whl:
        info = next(n.split("/")[0] for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        assert whl.read(f"{info}/licenses/LICENSE").decode() == license_text
        metadata = whl.read(f"{info}/METADATA").decode()
    _check_metadata(email.parser.Parser().parsestr(metadata), wheel.name)
