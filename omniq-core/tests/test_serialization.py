import enum
from datetime import datetime, timezone

import pytest

from omniq.errors import SerializationError, SignatureError
from omniq.serialization import Serializer


def test_plain_data_round_trips_as_msgpack():
    s = Serializer()
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    data = s.dumps_call([1, "a", b"b", 2.5, None, True, when, {"k": [1, 2]}], {"x": (1, 2)})
    assert data[2] == 0  # no dill flag
    args, kwargs, func = s.loads_call(data, local_only=False)
    assert args == [1, "a", b"b", 2.5, None, True, when, {"k": [1, 2]}]
    assert kwargs == {"x": [1, 2]} and func is None


def test_what_msgpack_cannot_carry_goes_by_dill_locally():
    s = Serializer()
    offset = 10
    data = s.dumps_call([3], {}, lambda x: x + offset)
    assert data[2] & 1  # dill flag
    args, _, func = s.loads_call(data, local_only=True)
    assert func(*args) == 13
    naive = datetime(2026, 1, 2)
    assert s.loads(s.dumps(naive), local_only=True) == naive


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, Color.RED, Name("x"), {1, 2}, {True: 1},
                                   {"k": [datetime(2026, 1, 2)]}, nested(70)])
def test_values_msgpack_would_change_go_by_dill(value):
    """What msgpack would carry but not give back as it was (a subclass comes back as its
    base, a set as a list) travels by dill, and comes back equal."""
    s = Serializer()
    data = s.dumps(value)
    assert data[2] & 1
    assert s.loads(data, local_only=True) == value


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), nested(60), {1: (2, 3)}])
def test_edges_msgpack_carries_stay_plain(value):
    assert Serializer().dumps(value)[2] == 0


def test_unsigned_dill_is_refused_from_network_stores_with_a_fix():
    s = Serializer()
    with pytest.raises(SerializationError, match="configure secret_key"):
        s.dumps(object(), local_only=False)
    blob = s.dumps({1, 2}, local_only=True)  # written by a local producer
    with pytest.raises(SerializationError, match="refusing to decode an unsigned dill payload"):
        s.loads(blob, local_only=False)
    assert Serializer(allow_unsigned_dill=True).loads(blob, local_only=False) == {1, 2}


def test_signed_payloads_verify_and_keys_rotate():
    old = Serializer({"k1": b"one"})
    new = Serializer({"k1": b"one", "k2": b"two"}, signing_key="k2")
    blob = old.dumps({1, 2}, local_only=False)  # dill allowed when signed
    assert new.loads(blob, local_only=False) == {1, 2}
    with pytest.raises(SignatureError, match="key id 'k2', which is not configured"):
        old.loads(new.dumps([1]), local_only=False)


def test_tampered_and_unsigned_payloads_are_refused_when_keys_are_set():
    s = Serializer({"k": b"secret"})
    blob = bytearray(s.dumps([1, 2, 3]))
    blob[-1] ^= 0xFF
    with pytest.raises(SignatureError, match="bad signature"):
        s.loads(bytes(blob), local_only=True)
    with pytest.raises(SignatureError, match="unsigned payload"):
        s.loads(Serializer().dumps([1]), local_only=True)


def test_payload_limit_and_garbage():
    s = Serializer(payload_limit=100)
    with pytest.raises(SerializationError, match="exceeds the limit of 100 bytes"):
        s.dumps("x" * 200)
    with pytest.raises(SerializationError, match="not an OmniQ envelope"):
        s.loads(b"garbage", local_only=True)
    with pytest.raises(SerializationError, match="cannot be decoded"):
        s.loads(b"OQ\x00\xc1", local_only=True)


def test_unserializable_argument_names_the_problem():
    gen = (x for x in range(3))
    with pytest.raises(SerializationError, match="task arguments cannot be serialized"):
        Serializer().dumps_call([gen], {})
