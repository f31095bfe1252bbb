"""First-party plugins: discoverable by entry point, and cheap to discover."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from omniq.registry import ENTRY_POINT_GROUP, FIRST_PARTY, registry

HEAVY = ["aiosqlite", "asyncpg", "redis", "nats", "fsspec", "gevent", "s3fs"]


def first_party_entry_points():
    return sorted(
        (
            ep
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.name in FIRST_PARTY
        ),
        key=lambda ep: ep.name,
    )


def test_every_first_party_plugin_is_installed_in_the_dev_environment():
    assert {ep.name for ep in first_party_entry_points()} == set(FIRST_PARTY)


@pytest.mark.parametrize("ep", first_party_entry_points(), ids=lambda ep: ep.name)
def test_plugin_module_imports_no_client_library(ep):
    code = (
        "import json, sys, importlib; importlib.import_module(sys.argv[1]); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[2:])))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, ep.value, *HEAVY],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(run.stdout) == [], f"{ep.value} imports heavy modules at discovery"


def test_registry_lists_every_first_party_plugin_without_errors():
    from omniq.registry import PluginRegistry

    infos = {i.name: i for i in PluginRegistry().plugins()}
    for name in FIRST_PARTY:
        assert infos[name].error is None, infos[name].error
    backends = PluginRegistry().backends()
    for name, (_dist, _extra, schemes) in FIRST_PARTY.items():
        if name != "gevent":
            assert set(schemes) <= set(backends[name].schemes), name


def test_an_unknown_pool_is_told_how_pools_register():
    """A mistyped ``--pool`` named backends as what plugins register; a pool is one."""
    from omniq.errors import UnknownBackendError

    with pytest.raises(UnknownBackendError) as caught:
        registry.pool("procss")
    message = str(caught.value)
    assert "Did you mean 'process'?" in message
    assert "Third-party worker pools register" in message, message
    assert "backends" not in message, message


def test_a_disabled_plugin_is_listed_as_disabled_and_a_mistyped_name_warns(monkeypatch, caplog):
    """An operator turning tracing off could not tell it worked (the plugin vanished from
    ``omniq plugins``), nor that a typo disabled nothing (it said nothing)."""
    from omniq.registry import PluginRegistry

    monkeypatch.setenv("OMNIQ_DISABLE_PLUGINS", "opentelemtry")
    with caplog.at_level("WARNING", logger="omniq"):
        infos = {i.name: i for i in PluginRegistry().plugins()}
    [record] = [r for r in caplog.records if "OMNIQ_DISABLE_PLUGINS" in r.getMessage()]
    assert "disabled nothing; did you mean 'opentelemetry'?" in record.getMessage()
    assert "opentelemetry" in infos and not infos["opentelemetry"].disabled
    monkeypatch.setenv("OMNIQ_DISABLE_PLUGINS", "opentelemetry")
    run = subprocess.run(
        [sys.executable, "-m", "omniq.cli", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    [row] = [r for r in run.stdout.splitlines() if r.startswith("opentelemetry\t")]
    assert row.endswith("\tdisabled (OMNIQ_DISABLE_PLUGINS)"), row
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "omniq.cli", "plugins", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    [entry] = [e for e in listed if e["name"] == "opentelemetry"]
    assert entry["disabled"] is True and entry["hooks"] == []


def test_a_mistyped_disabled_plugin_warns_in_the_workers_log_format(tmp_path):
    """The CLI loads plugins before it sets up logging: the warning went out as a bare
    line, the one line that is not JSON in a `--log-format json` stream (a log pipeline
    parsing each line failed on it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    run = subprocess.run(
        [
            *(sys.executable, "-m", "omniq.cli", "--task-queue", f"sqlite:///{tmp_path / 'q.db'}"),
            *("worker", "--burst", "--log-format", "json", "--no-progress"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "OMNIQ_DISABLE_PLUGINS": "opentelemtry"},
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines()]  # every line is JSON
    [warning] = [e for e in lines if "OMNIQ_DISABLE_PLUGINS" in e["message"]]
    assert warning["level"] == "WARNING" and "did you mean 'opentelemetry'" in warning["message"]
