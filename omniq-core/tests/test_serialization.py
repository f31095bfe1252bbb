import enum
import threading
from datetime import UTC, datetime

import pytest

from omniq.errors import SerializationError, SignatureError
from omniq.serialization import Serializer, binding


def test_plain_data_round_trips_as_msgpack():
    s = Serializer()
    when = datetime(2026, 1, 2, tzinfo=UTC)
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
    naive = datetime(2026, 1, 2)  # noqa: DTZ001 - a naive datetime must round-trip as one
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


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        Color.RED,
        Name("x"),
        {1, 2},
        {True: 1},
        {2**64: "a key msgpack cannot carry"},
        {-(2**63) - 1: "nor this one"},
        {"k": [datetime(2026, 1, 2)]},  # noqa: DTZ001 - naive on purpose
        nested(70),
    ],
)
def test_values_msgpack_would_change_go_by_dill(value):
    """What msgpack would carry but not give back as it was (a subclass comes back as its
    base, a set as a list) travels by dill, and comes back equal."""
    s = Serializer()
    data = s.dumps(value)
    assert data[2] & 1
    assert s.loads(data, local_only=True) == value


@pytest.mark.parametrize(
    "value", [2**64 - 1, -(2**63), nested(60), {1: (2, 3)}, {2**64 - 1: 0, -(2**63): 1}]
)
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


class Opaque:
    pass


def test_refused_unsigned_dill_names_the_argument_and_its_type():
    s = Serializer()
    with pytest.raises(SerializationError) as info:
        s.dumps_call([1, Opaque()], {}, local_only=False)
    assert str(info.value).startswith(
        f"task argument 2: {__name__}.Opaque needs dill, and unsigned dill is refused"
    )
    with pytest.raises(SerializationError) as info:
        s.dumps_call([1], {"lock": threading.Lock()}, local_only=False)
    assert str(info.value).startswith("task keyword 'lock': _thread.lock needs dill")


def test_refused_unsigned_function_names_the_function():
    with pytest.raises(SerializationError) as info:
        Serializer().dumps_call([], {}, lambda: 1, local_only=False)
    assert str(info.value).startswith(
        f"task function {__name__}.test_refused_unsigned_function_names_the_function."
        f"<locals>.<lambda> is not registered, so it would travel by dill"
    )


def test_payload_limit_is_enforced_when_reading_too():
    big = Serializer(payload_limit=10_000).dumps_call(["x" * 5000], {})
    with pytest.raises(SerializationError) as info:
        Serializer(payload_limit=1000).loads_call(big, local_only=True, origin="task t1")
    assert str(info.value) == (
        f"payload from task t1 is {len(big)} bytes, over the limit of 1000 bytes "
        f"(config key payload_limit); refused unread"
    )


def test_a_signed_call_runs_only_as_the_task_it_was_signed_for():
    s = Serializer({"k": b"secret"})
    blob = s.dumps_call([1], {}, bind=binding("app:pay", "default", "t1"))
    assert s.loads_call(blob, local_only=False, bind=binding("app:pay", "default", "t1"))[0] == [1]
    for other in [
        ("app:wipe", "default", "t1"),
        ("app:pay", "other", "t1"),
        ("app:pay", "default", "t2"),
    ]:
        with pytest.raises(SignatureError, match="signed for another task name, queue or id"):
            s.loads_call(blob, local_only=False, bind=binding(*other))
    value = s.dumps([[1], {}])  # a signed value (a result) is not a call of any task
    with pytest.raises(SignatureError, match="signed without the task it belongs to"):
        s.loads_call(value, local_only=False, bind=binding("app:pay", "default", "t1"))


def test_rotation_keeps_bound_calls_valid_and_rebind_moves_only_what_was_signed():
    old = Serializer({"k1": b"one"})
    new = Serializer({"k1": b"one", "k2": b"two"}, signing_key="k2")
    t1, t2 = binding("app:pay", "q", "t1"), binding("app:pay", "q", "t2")
    blob = old.dumps_call([1], {}, bind=t1)
    assert new.loads_call(blob, local_only=False, bind=t1)[0] == [1]
    moved = new.rebind(blob, t1, t2)
    assert new.loads_call(moved, local_only=False, bind=t2)[0] == [1]
    with pytest.raises(SignatureError):
        new.rebind(blob, t2, t1)


def test_dumps_calls_gives_the_bytes_of_dumps_call_for_each_call():
    """The batch's written-out unsigned path and the signed and dill ones store what one
    call at a time does."""
    lock = threading.Lock()
    calls = [(), (1, "a"), {"x": [1, 2]}, [3, (4,)], (lock,), {"k": lock}, ((1 << 70),)]
    shapes = [(), (1, "a"), (), (3, (4,)), (lock,), (), ((1 << 70),)]
    kwargs = [{}, {}, {"x": [1, 2]}, {}, {}, {"k": lock}, {}]
    for s in (Serializer(), Serializer({"k": b"secret"})):
        binds = [binding("app:f", "default", f"t{i}") for i in range(len(calls))]
        got = s.dumps_calls(calls, local_only=True, binds=binds if s.signing_key else None)
        for data, args, kw, bind in zip(got, shapes, kwargs, binds, strict=True):
            bound = bind if s.signing_key else None
            if lock in args or lock in kw.values():  # dill: compare what comes back
                back = s.loads_call(data, local_only=True, bind=bound)
                assert len(back[0]) == len(args) and back[1].keys() == kw.keys()
            else:
                assert data == s.dumps_call(args, kw, local_only=True, bind=bound)


def test_dumps_calls_refuses_what_dumps_call_refuses():
    with pytest.raises(SerializationError, match="exceeds the limit of 1000 bytes"):
        Serializer(payload_limit=1000).dumps_calls([("x" * 5000,)])
    with pytest.raises(SerializationError, match="needs dill, and unsigned dill is refused"):
        Serializer().dumps_calls([(1,), (threading.Lock(),)], local_only=False)


def test_dumps_calls_refuses_binds_that_do_not_match_its_calls():
    """A bind a call: a shorter list would leave calls without their payloads."""
    serializer = Serializer({"k1": b"k" * 32})
    with pytest.raises(ValueError, match="1 binds for 2 calls"):
        serializer.dumps_calls([(1,), (2,)], binds=[b"a"])
    assert len(serializer.dumps_calls([(1,), (2,)], binds=[b"a", b"b"])) == 2
