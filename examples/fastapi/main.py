"""OmniQ in a FastAPI application: one ``AsyncOmniQ`` opened and closed by the lifespan,
an endpoint that enqueues, one that reads the task back.

    uvicorn main:app                      # the web application
    omniq worker --app main:omniq         # a worker (same module, same stores)

The stores come from the configuration (``omniq.yaml``, ``OMNIQ_TASK_QUEUE``, ...), so
the web process and the worker agree on them; the default is ``sqlite:///omniq.db``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

from omniq import AsyncOmniQ, TaskNotFoundError, TaskState

omniq = AsyncOmniQ()


# An explicit name: the worker imports this module as `main`, a test under another name,
# and both must call the task the same.
@omniq.task(name="add", retries=2)
async def add(a: int, b: int) -> int:
    return a + b


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await omniq.open()  # connect at startup, not on the first request
    try:
        yield
    finally:
        await omniq.close()  # and release the connections at shutdown


app = FastAPI(lifespan=lifespan)


@app.post("/add", status_code=202)
async def enqueue_add(a: int, b: int, priority: int = 0) -> dict[str, str]:
    ref = await add.apply((a, b), priority=priority)
    return {"id": ref.id, "state": ref.state.value}


@app.get("/tasks/{task_id}")
async def read_task(task_id: str) -> dict[str, Any]:
    """The task's state, and its value once it succeeded (never waits for it)."""
    try:
        task = await omniq.get_task(task_id)
    except TaskNotFoundError:
        raise HTTPException(404, f"no task {task_id}") from None
    body: dict[str, Any] = {"id": task.id, "state": task.state.value}
    if task.state is TaskState.SUCCEEDED:
        body["result"] = await omniq.get_result(task_id, timeout=0)
    elif task.error is not None:
        body["error"] = f"{task.error.type}: {task.error.message}"
    return body
