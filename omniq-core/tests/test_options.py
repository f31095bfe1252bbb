"""The option schema backends declare their options with (omniq.options)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from omniq.errors import ConfigError
from omniq.options import Option, OptionSchema, check_ports, options_table

SCHEMA = OptionSchema(
    "demo",
    (
        Option("prefix", "str", "omniq", "Key prefix."),
        Option("replicas", "int", 1, "Copies kept.", minimum=1, maximum=5),
        Option("ratio", "float", 0.5, "A share.", minimum=0, maximum=1),
        Option("lease", "duration", 60.0, "A lease.", minimum=0, above=True),
        Option("fsync", "bool", False, "Flush."),
        Option("mode", "enum", "NORMAL", "Sync mode.", choices=("NORMAL", "FULL")),
        Option("cap", "int", 100, "A cap.", minimum=1, optional=True, off=(0, "0")),
        Option("token", "str", None, "A token.", optional=True, secret=True),
    ),
)
URL = "demo://user:pw-S3CRET@host:1/x"


def test_query_and_keywords_merge_keywords_win_and_values_are_converted() -> None:
    parsed = SCHEMA.parse(
        f"{URL}?replicas=3&lease=5m&fsync=yes&mode=full&cap=0&ratio=.25", {"replicas": 4}
    )
    assert parsed.values == {
        "prefix": "omniq",
        "replicas": 4,
        "ratio": 0.25,
        "lease": 300.0,
        "fsync": True,
        "mode": "FULL",
        "cap": None,
        "token": None,
    }
    assert parsed.url == URL  # the options leave the URL the driver gets
    assert SCHEMA.parse(URL, {"lease": timedelta(seconds=90)})["lease"] == 90.0


def test_unknown_option_names_the_closest_match_the_valid_names_and_masks_the_url() -> None:
    with pytest.raises(ConfigError) as info:
        SCHEMA.parse(URL, {"replica": 2})
    text = str(info.value)
    assert "unknown option 'replica'" in text and "did you mean 'replicas'?" in text, text
    assert "Valid options: prefix, replicas, ratio, lease, fsync, mode, cap, token" in text
    assert "pw-S3CRET" not in text and "'demo://user:***@host:1/x'" in text, text
    with pytest.raises(ConfigError, match="unknown option 'replica'"):
        SCHEMA.parse(f"{URL}?replica=2", {})


def test_query_parameters_for_the_driver_pass_through_when_the_schema_says_so() -> None:
    schema = OptionSchema("demo", SCHEMA.options, passthrough="the driver")
    parsed = schema.parse(f"{URL}?sslmode=on&prefix=a", {})
    assert parsed["prefix"] == "a" and parsed.rest == [("sslmode", "on")]
    assert parsed.url == f"{URL}?sslmode=on"


def test_a_driver_parameter_that_looks_like_a_typo_of_an_option_is_refused() -> None:
    """``?max_sise=4`` on PostgreSQL reached the server as a setting, which refused it at
    connect time with "Check that the server is running"; it is a typo of an option."""
    schema = OptionSchema("demo", SCHEMA.options, passthrough="the driver")
    with pytest.raises(ConfigError) as info:
        schema.parse(f"{URL}?replicaz=2&sslmode=on", {})
    text = str(info.value)
    assert "unknown option 'replicaz'" in text and "did you mean 'replicas'?" in text, text
    assert "(other query parameters go to the driver)" in text and "pw-S3CRET" not in text
    assert schema.parse(f"{URL}?sslmode=on&application=x", {}).rest == [
        ("sslmode", "on"),
        ("application", "x"),
    ], "a parameter far from every option still passes"


@pytest.mark.parametrize(
    ("name", "value", "valid"),
    [
        ("replicas", "9", "an integer from 1 to 5"),
        ("replicas", True, "an integer from 1 to 5"),
        ("ratio", "nan", "a number from 0 to 1"),
        ("lease", "0", "seconds > 0"),
        ("lease", "soon", "seconds > 0"),
        ("lease", float("inf"), "seconds > 0"),
        ("fsync", "maybe", "true or false"),
        ("mode", "OFF", "one of NORMAL, FULL"),
        ("cap", -1, "an integer >= 1; none or 0 turns it off"),
        ("prefix", 3, "a text"),
    ],
)
def test_bad_value_names_the_option_and_what_is_valid(name: str, value: object, valid: str) -> None:
    with pytest.raises(ConfigError) as info:
        SCHEMA.parse(URL, {name: value})
    text = str(info.value)
    assert f"option {name}={value!r}" in text and f"expected {valid}" in text, text
    assert "pw-S3CRET" not in text and "demo://user:***@host" in text


def test_a_secret_option_value_is_never_shown() -> None:
    with pytest.raises(ConfigError) as info:
        SCHEMA.parse(URL, {"token": 12345})
    assert "12345" not in str(info.value) and "token=***" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw@h:99999/0",
        "redis://:pw@h:notaport/0",
        "nats://a:4222,b:0",
        "nats://a:1,nats://b:x",
    ],
)
def test_bad_port_names_the_store_and_the_masked_url(url: str) -> None:
    expected = r"^demo task queue: port .* expected a number from 1 to 65535"
    with pytest.raises(ConfigError, match=expected):
        check_ports(url, "demo task queue", "nats")
    check_ports("redis://:pw@[::1]:6379/0,h2:6380", "x", "redis")  # valid ones pass


def test_the_table_renders_as_markdown_and_says_which_stores_differ() -> None:
    other = SCHEMA.extend(Option("lease", "duration", 30.0, "A lease.", minimum=0, above=True))
    table = options_table({"task queue": SCHEMA, "event storage": other})
    lines = table.splitlines()
    assert lines[0].startswith("| Option | Type | Default |")
    assert "| `replicas` | int | `1` | an integer from 1 to 5 | all | Copies kept. |" in lines
    assert "| `lease` | duration | `60` s | seconds > 0 | task queue | A lease. |" in lines
    assert "| `lease` | duration | `30` s | seconds > 0 | event storage | A lease. |" in lines
