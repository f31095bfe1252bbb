"""Checked by mypy in tests/test_typing.py: task signatures survive decoration."""

from typing import assert_type

from omniq import AsyncOmniQ, OmniQ, TaskRef

app = OmniQ()
aapp = AsyncOmniQ()


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(retries=2)
def greet(name: str) -> str:
    return f"hi {name}"


@aapp.task
async def fetch(url: str) -> bytes:
    return url.encode()


ref: TaskRef[int] = add.delay(1, 2)
total: int = app.get_result(ref)
text: str = app.get_result(greet.delay("x"))
direct: int = add(1, 2)


async def main() -> None:
    r: TaskRef[bytes] = await fetch.delay("http://x")
    body: bytes = await aapp.get_result(r)
    print(body)


add.delay(1, "x")  # E: wrong argument type
greet.delay(3)  # E: wrong argument type
bad: str = app.get_result(ref)  # E: int is not str

# `with` gives the blocking app, not the async one behind it.
with OmniQ() as blocking_app:
    assert_type(blocking_app, OmniQ)
    blocking_total: int = blocking_app.get_result(ref)
