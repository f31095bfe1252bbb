"""The plugin API is a product: every hook and every interface method is documented
(datasette's meta-tests)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from omniq import hookspecs
from omniq.interfaces import BaseEventStorage, BasePool, BaseResultStorage, BaseTaskQueue

PLUGINS_DOC = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
HOOKS = [
    name
    for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("omniq_")
]
METHODS = sorted(
    {
        name
        for cls in (BaseTaskQueue, BaseResultStorage, BaseEventStorage, BasePool)
        for name, member in vars(cls).items()
        if callable(member) or isinstance(member, classmethod)
        if not name.startswith("_")
    }
)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    assert re.search(rf"\b{hook}\b", PLUGINS_DOC), f"docs/plugins.md does not mention {hook}"


@pytest.mark.parametrize("method", METHODS)
def test_every_interface_method_is_documented(method):
    assert re.search(rf"`{method}\b", PLUGINS_DOC), f"docs/plugins.md does not document {method}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 40, f"{hook} needs a docstring that says what it is for"


@pytest.mark.parametrize("backend", ["fsspec", "nats", "postgres", "redis", "sqlite"])
def test_backend_docs_show_the_option_table_the_code_declares(backend):
    """The option table of docs/backends/<backend>.md is rendered from the stores'
    option_schema, so the page cannot drift from the code."""
    pytest.importorskip(f"omniq_backend_{backend}")
    from omniq.registry import registry

    docs = Path(__file__).resolve().parent.parent / "docs"
    page = (docs / "backends" / f"{backend}.md").read_text()
    table = rf"<!-- options:begin {backend} .*?-->\n(.*?)<!-- options:end -->"
    found = re.search(table, page, re.S)
    assert found, f"docs/backends/{backend}.md has no generated option table"
    assert found[1] == registry.option_table(backend), (
        f"docs/backends/{backend}.md's option table differs from the code; paste the output of\n"
        f'python -c "from omniq.registry import registry; '
        f"print(registry.option_table('{backend}'))\""
    )
