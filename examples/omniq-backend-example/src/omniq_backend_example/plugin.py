"""The module the ``omniq.plugins`` entry point names.

It only declares what the plugin provides. Classes are named as ``"module:Class"``
strings, so listing plugins (``omniq plugins``) never imports the stores or their
client libraries; keep this module's imports to ``omniq`` and the standard library.
"""

from __future__ import annotations

from collections.abc import Callable

from omniq import BackendSpec, hookimpl


@hookimpl
def omniq_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="example",
            schemes=("example",),
            task_queue="omniq_backend_example.queue:ExampleTaskQueue",
            result_storage="omniq_backend_example.results:ExampleResultStorage",
            event_storage="omniq_backend_example.events:ExampleEventStorage",
            description="in-memory stores of one process (a worked example for plugin authors)",
        )
    )
