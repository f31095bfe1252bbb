"""What both taskiq subjects read back: taskiq stores no timestamps, so their no-op
returns its finish time and the start is that minus taskiq's ``execution_time``."""

from __future__ import annotations

from typing import Any

from taskiq import AsyncResultBackend

from . import map_chunked, window


async def taskiq_window(
    backend: AsyncResultBackend[Any], task_ids: list[str]
) -> tuple[float, float]:
    """The processing window from the results of ``task_ids``."""

    async def span(task_id: str) -> tuple[float, float] | None:
        if not await backend.is_result_ready(task_id):
            return None
        result = await backend.get_result(task_id)
        if result.is_err:
            return None
        return result.return_value - result.execution_time, result.return_value

    return window(await map_chunked(span, task_ids), task_ids)
