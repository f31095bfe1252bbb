"""Entry point of the ``fsspec`` plugin: declares the backend, imports nothing heavy."""

from __future__ import annotations

from collections.abc import Callable

from omniq import BackendSpec, hookimpl


@hookimpl
def omniq_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="fsspec",
            schemes=("file", "memory", "s3", "gs", "gcs", "az", "abfs"),
            task_queue="omniq_backend_fsspec.queue:FsspecTaskQueue",
            result_storage="omniq_backend_fsspec.results:FsspecResultStorage",
            event_storage="omniq_backend_fsspec.events:FsspecEventStorage",
            description="files under a base directory: local disk, memory, S3, GCS, Azure (fsspec)",
        )
    )
