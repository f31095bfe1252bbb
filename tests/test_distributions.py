"""The monorepo's distributions: lockstep versions, extras, and a wheelhouse install."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = sorted(p.parent for p in ROOT.glob("omniq-*/pyproject.toml"))


def project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]


def dist_name(req: str) -> str:
    return re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].strip().lower()


def test_versions_move_in_lockstep_and_the_meta_package_pins_them():
    meta = project(ROOT)
    versions = {project(m)["name"]: project(m)["version"] for m in MEMBERS}
    assert set(versions.values()) == {meta["version"]}, versions
    pins = [
        *meta["dependencies"],
        *(r for reqs in meta["optional-dependencies"].values() for r in reqs),
    ]
    for req in pins:
        name = dist_name(req)
        if name != "omniq":
            assert name in versions, f"{req} names no workspace member"
            assert f"=={meta['version']}" in req, f"{req} is not pinned to {meta['version']}"


def test_every_member_is_reachable_from_the_all_extra_and_each_plugin_has_an_entry_point():
    meta = project(ROOT)
    extras = meta["optional-dependencies"]
    parts = (
        "sqlite",
        "postgres",
        "redis",
        "nats",
        "fsspec",
        "gevent",
        "django",
        "dashboard",
        "prometheus",
        "opentelemetry",
    )
    reachable = {dist_name(r) for name in parts for r in extras[name]}
    assert reachable | {"omniq-core"} == {project(m)["name"] for m in MEMBERS}
    assert f"omniq[{','.join(parts)}]" in extras["all"]
    for member in MEMBERS:
        if member.name != "omniq-core":
            assert project(member)["entry-points"]["omniq.plugins"], member.name


def _deps_of(members: list[str]) -> list[str]:
    return [
        req
        for name in members
        for req in project(ROOT / name)["dependencies"]
        if not dist_name(req).startswith("omniq")
    ]


@pytest.mark.slow
def test_wheelhouse_installs_exactly_the_asked_extras(tmp_path):
    wheelhouse = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # First-party wheels, built offline with the hatchling of this environment.
    subprocess.run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheelhouse),
            *map(str, MEMBERS),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    # Third-party wheels for what [redis,postgres] needs (by name, never an omniq* name).
    wanted = ["omniq-core", "omniq-backend-sqlite", "omniq-backend-redis", "omniq-backend-postgres"]
    subprocess.run(
        [*pip, "download", "-d", str(wheelhouse), *_deps_of(wanted)], check=True, timeout=300
    )

    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env)
    py = str(env / "bin" / "python")
    subprocess.run(
        [
            py,
            "-m",
            "pip",
            "-q",
            "install",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            "omniq[redis,postgres]",
        ],
        check=True,
        timeout=300,
    )
    listed = json.loads(
        subprocess.run(
            [py, "-m", "pip", "list", "--format", "json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    names = {p["name"].lower() for p in listed}
    assert {n for n in names if n.startswith("omniq")} == {"omniq", *wanted}
    assert {"redis", "asyncpg", "aiosqlite", "msgspec", "pluggy"} <= names
    assert not names & {"nats-py", "fsspec", "gevent"}
    found = subprocess.run(
        [py, "-c", "from omniq.registry import registry; print(sorted(registry.backends()))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert found.strip() == "['postgres', 'redis', 'sqlite']"
