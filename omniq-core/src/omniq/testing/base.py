"""What the three contracts share: fixtures, store opening, and the suite's own rules.

A contract is a plain pytest class of tests. A backend's test module subclasses it and
overrides one fixture returning a *ref* (a URL string or a mapping, exactly what a user
would put in a config) for an empty, isolated namespace. The suite resolves that ref with
:meth:`omniq.registry.PluginRegistry.resolve`, the way an app does, so the backend is
tested through its plugin registration, and it resolves the same ref again (in this
process and, for ``CROSS_PROCESS`` stores, in others) to check concurrent access.
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from ..config import mask_url
from ..errors import ConfigError, IncompatiblePluginError, UnknownBackendError
from ..interfaces import BaseStore, Capability
from ..options import OptionSchema

if TYPE_CHECKING:
    from ..app import AsyncOmniQ
from ..registry import STORE_BASES, StoreKind, registry

__all__ = ["StoreContract", "open_app", "open_store", "open_stores"]

#: An option no backend has; ``from_url`` must refuse it by name.
UNKNOWN_OPTION = "omniq_conformance_no_such_option"
#: A password the option tests put into the ref's URL; no message may show it.
SECRET = "omniq-conformance-s3cret"


def with_secret(ref: Any, **options: Any) -> tuple[dict[str, Any], str | None]:
    """``ref`` as a mapping plus ``options``, its URL (if it has one) carrying a user and
    :data:`SECRET` as password: what the option tests resolve, and that URL."""
    out = dict(ref) if isinstance(ref, Mapping) else {"url": ref}
    url = out.get("url")
    if isinstance(url, str) and "://" in url:
        scheme, rest = url.split("://", 1)
        out["url"] = url = f"{scheme}://omniq:{SECRET}@{rest}"
    else:
        url = None
    out.update(options)
    return out, url


@asynccontextmanager
async def open_store(kind: StoreKind, ref: Any) -> AsyncIterator[Any]:
    """Resolve ``ref`` to a ``kind`` store, open it, and close it on exit."""
    store = registry.resolve(kind, ref)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def open_stores(kind: StoreKind, ref: Any, count: int) -> AsyncIterator[list[Any]]:
    """``count`` independent instances built from the same ref (several workers' view)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_store(kind, ref)) for _ in range(count)]


@asynccontextmanager
async def open_app(ref: Any, **settings: Any) -> AsyncIterator[AsyncOmniQ]:
    """An app on ``ref`` for all three stores (what the tests that run a worker or declare
    schedules use); skips a backend without sibling result and event stores."""
    from ..app import AsyncOmniQ

    try:
        app = AsyncOmniQ(task_queue=ref, result_storage=ref, event_storage=ref, **settings)
    except (UnknownBackendError, IncompatiblePluginError) as exc:
        pytest.skip(f"the backend has no sibling stores: {exc}")
    async with app:
        yield app


def abstract_ref(kind: StoreKind, example: str) -> NotImplementedError:
    """The error an abstract ref fixture raises, saying what to write instead."""
    return NotImplementedError(
        f"override {kind}_ref in your test class: a fixture returning a URL string or a "
        f"mapping {{'backend': ..., 'url': ..., **options}} for an EMPTY, isolated namespace "
        f"(plain data: other processes resolve it too), e.g.\n\n"
        f"    @pytest.fixture\n    def {kind}_ref(self, tmp_path):\n        return {example}\n"
    )


class StoreContract:
    """Base of the contracts. Not collected by itself (its name does not start with Test)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]
    #: Which store the contract checks; also names the ref fixture (``<kind>_ref``).
    kind: ClassVar[StoreKind]

    @pytest.fixture
    def anyio_backend(self) -> str:
        """The stores are asyncio code (their clients are); run every test on asyncio."""
        return "asyncio"

    @pytest.fixture
    def store_ref(self, request: pytest.FixtureRequest) -> Any:
        """The subclass's ``<kind>_ref`` under one name, for the shared tests below."""
        return request.getfixturevalue(f"{self.kind}_ref")

    # -- rules of the suite itself -----------------------------------------------------

    def test_contract_tests_are_not_overridden(self) -> None:
        """A backend may not quietly replace or delete a contract test.

        Overriding one is allowed only with ``@pytest.mark.xfail(reason=...)`` so the
        gap shows in every test report (langchain-tests has the same rule). Capabilities
        the store lacks are skipped automatically and need no override.
        """
        cls = type(self)
        offenders = []
        for base in cls.__mro__:
            if not base.__module__.startswith(__package__ + "."):
                continue
            for name, original in vars(base).items():
                if not name.startswith("test_"):
                    continue
                current = getattr(cls, name, None)
                if current is original:
                    continue
                marks = getattr(current, "pytestmark", [])
                if not any(m.name == "xfail" and m.kwargs.get("reason") for m in marks):
                    offenders.append(name)
        assert not offenders, (
            f"{cls.__qualname__} overrides contract tests without "
            f"@pytest.mark.xfail(reason=...): {', '.join(sorted(set(offenders)))}"
        )

    def test_ref_is_plain_data(self, store_ref: Any) -> None:
        """The ref is resolved again in other processes, so it must be picklable data."""
        assert isinstance(store_ref, (str, Mapping)), (
            f"{self.kind}_ref must return a URL string or a mapping, got {type(store_ref).__name__}"
        )
        assert pickle.loads(pickle.dumps(store_ref)) == store_ref, (
            f"{self.kind}_ref does not pickle"
        )

    def test_ref_resolves_to_a_store_of_this_kind(self, store_ref: Any) -> None:
        store = registry.resolve(self.kind, store_ref)
        base = STORE_BASES[self.kind]
        assert isinstance(store, base), f"{type(store).__name__} is not a {base.__name__}"
        caps = type(store).capabilities
        assert isinstance(caps, frozenset) and all(isinstance(c, Capability) for c in caps), (
            f"{type(store).__name__}.capabilities must be a frozenset of Capability, got {caps!r}"
        )

    def test_unknown_option_is_refused_by_name(self, store_ref: Any) -> None:
        """``from_url`` raises ConfigError naming an option it does not know."""
        ref = dict(store_ref) if isinstance(store_ref, Mapping) else {"url": store_ref}
        ref[UNKNOWN_OPTION] = 1
        with pytest.raises(ConfigError) as info:
            registry.resolve(self.kind, ref)
        assert UNKNOWN_OPTION in str(info.value), (
            f"the ConfigError should name the unknown option {UNKNOWN_OPTION!r}: {info.value}"
        )

    def test_options_are_declared_in_a_schema(self, store_ref: Any) -> None:
        """``option_schema`` is the table ``from_url`` parses with (docs render it)."""
        cls = type(registry.resolve(self.kind, store_ref))
        assert isinstance(cls.option_schema, OptionSchema), (
            f"{cls.__name__}.option_schema must be an omniq.options.OptionSchema"
        )

    def test_misspelt_option_names_the_closest_match_and_the_valid_names(
        self, store_ref: Any
    ) -> None:
        """A typo gets the option meant and the list of valid names; the URL is shown
        with its password masked."""
        schema = type(registry.resolve(self.kind, store_ref)).option_schema
        names = [n for n in schema.names() if len(n) > 3]
        if not names:
            pytest.skip("the store declares no options")
        typo = names[0][:-1]
        ref, url = with_secret(store_ref, **{typo: "1"})
        with pytest.raises(ConfigError) as info:
            registry.resolve(self.kind, ref)
        text = str(info.value)
        assert repr(typo) in text and f"did you mean {names[0]!r}" in text, text
        missing = [n for n in schema.names() if n not in text]
        assert not missing, f"the error should list every valid option, misses {missing}: {text}"
        assert SECRET not in text, f"the error shows the URL's password: {text}"
        if url is not None:
            assert mask_url(url) in text, f"the error should show the masked URL: {text}"

    def test_bad_option_value_names_the_option_and_what_is_valid(self, store_ref: Any) -> None:
        schema = type(registry.resolve(self.kind, store_ref)).option_schema
        numbers = [o for o in schema.options if o.type in ("int", "float", "duration")]
        if not numbers:
            pytest.skip("the store declares no number options")
        option = numbers[0]
        ref, _ = with_secret(store_ref, **{option.name: "not-a-number"})
        with pytest.raises(ConfigError) as info:
            registry.resolve(self.kind, ref)
        text = str(info.value)
        assert option.name in text and "not-a-number" in text, text
        assert option.valid() in text, (
            f"the error should say what is valid ({option.valid()}): {text}"
        )
        assert SECRET not in text, f"the error shows the URL's password: {text}"

    async def test_open_and_close_are_idempotent(self, store_ref: Any) -> None:
        store: BaseStore = registry.resolve(self.kind, store_ref)
        await store.open()
        await store.open()
        await store.close()
        await store.close()

    async def test_now_is_a_float_epoch(self, store_ref: Any) -> None:
        """``now()`` is the clock leases and TTLs are judged by: UTC epoch seconds."""
        async with open_store(self.kind, store_ref) as store:
            now = await store.now()
        assert isinstance(now, float) and now > 1_600_000_000, f"now() returned {now!r}"
