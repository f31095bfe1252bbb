import pytest

from omniq.config import OmniQConfig, load_config, mask_url
from omniq.errors import ConfigError


def test_precedence_explicit_over_env_over_yaml_over_object(tmp_path):
    path = tmp_path / "omniq.yaml"
    path.write_text("lease: 30\nresult_ttl: 100\nworker:\n  concurrency: 3\n  pool: thread\n")
    env = {"OMNIQ_RESULT_TTL": "200", "OMNIQ_WORKER__CONCURRENCY": "5", "OMNIQ_CONFIG": str(path)}
    cfg = load_config(
        {"lease": 10, "dead_ttl": 50, "worker": {"queues": ["a", "b"]}}, environ=env, event_ttl=7
    )
    assert cfg.dead_ttl == 50  # only in the object
    assert cfg.lease == 30  # YAML over object
    assert cfg.result_ttl == 200  # env over YAML
    assert (
        cfg.worker.concurrency == 5
        and cfg.worker.pool == "thread"
        and cfg.worker.queues == ["a", "b"]
    )
    assert cfg.event_ttl == 7  # explicit over everything


def test_config_path_argument_and_object_with_attributes(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task_queue: sqlite:///x.db\n")
    # A relative SQLite path in a file means a file next to it, from any directory.
    assert load_config(str(path), environ={}).task_queue == f"sqlite:///{tmp_path}/x.db"

    class Settings:
        lease = 12.0
        default_queue = "mail"

    cfg = load_config(Settings(), environ={})
    assert cfg.lease == 12.0 and cfg.default_queue == "mail"


def test_env_lists_and_json_mappings():
    cfg = load_config(
        environ={
            "OMNIQ_WORKER__QUEUES": "a, b",
            "OMNIQ_IMPORTS": "x.tasks",
            "OMNIQ_TASK_QUEUE": '{"backend": "sqlite", "url": "sqlite:///q.db"}',
        }
    )
    assert cfg.worker.queues == ["a", "b"] and cfg.imports == ["x.tasks"]
    assert cfg.task_queue == {"backend": "sqlite", "url": "sqlite:///q.db"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"wrker": {}}, "unknown config key 'wrker' in the config object; did you mean 'worker'?"),
        ({"worker": {"concurency": 2}}, "did you mean 'worker.concurrency'?"),
        ({"lease": "soon"}, "config key 'lease'"),
        ({"lease": -1}, "must be a number > 0, got -1"),
        ({"worker": {"concurrency": 0}}, "'worker.concurrency': must be an integer >= 1"),
        ({"worker": {"queues": ["ok", "../etc"]}}, "invalid queue name '../etc'"),
        ({"lease": 30, "heartbeat": 20}, "more than half the lease"),
    ],
)
def test_bad_values_name_key_and_value(source, message):
    with pytest.raises(ConfigError) as info:
        load_config(source, environ={})
    assert message in str(info.value)


def test_bad_yaml_and_unknown_yaml_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lease: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad), environ={})
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("leese: 3\n")
    with pytest.raises(
        ConfigError, match=r"unknown config key 'leese' in config file .*did you mean 'lease'"
    ):
        load_config(str(unknown), environ={})


def test_env_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'worker.concurrency'.*'many'"):
        load_config(environ={"OMNIQ_WORKER__CONCURRENCY": "many"})


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://user:pw@db/test", "postgresql://user:***@db/test"),
        ("nats://host:4222?token=abc&x=1", "nats://host:4222?token=***&x=1"),
        ("sqlite:///omniq.db", "sqlite:///omniq.db"),
        ("bad_scheme!://user:hunter2@host/x.db", "bad_scheme!://user:***@host/x.db"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("nats://s3cretToken@host:4222", "nats://***@host:4222"),
        ("nats://u:p1@h1:4222,nats://u:p2@h2:4222", "nats://u:***@h1:4222,nats://u:***@h2:4222"),
        ("redis://:p@ss@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://:pa/ss@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:p@s/s:w@host/0", "redis://user:***@host/0"),
        (
            "postgresql://h/db?sslpassword=x&password=y&token=z&key_prefix=app",
            "postgresql://h/db?sslpassword=***&password=***&token=***&key_prefix=app",
        ),
        ("file:///var/lib/a@b", "file:///var/lib/a@b"),
        (
            "cannot connect to nats://tok@h:1: refused ('nats://u:pw@h:2')",
            "cannot connect to nats://***@h:1: refused ('nats://u:***@h:2')",
        ),
    ],
)
def test_mask_url_masks_every_form_of_secret(url, masked):
    assert mask_url(url) == masked


def test_repr_masks_secrets():
    cfg = load_config(
        environ={},
        task_queue="redis://:hunter2@h/0",
        secret_key="topsecret",
        result_storage={"backend": "postgres", "password": "pw"},
    )
    text = repr(cfg)
    assert "hunter2" not in text and "topsecret" not in text and "'pw'" not in text
    assert isinstance(cfg, OmniQConfig)
