"""The project's tasks, declared with the framework's ``@task`` only."""

import asyncio

try:  # Django 6
    from django.tasks import TaskContext, task
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import TaskContext, task

from .models import Order


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def whoami(context: TaskContext, n: int) -> dict:
    return {"id": context.task_result.id, "attempt": context.attempt, "n": n}


@task
async def slow_double(n: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * n


@task
def echo(label: str) -> str:
    return label


@task(backend="oncommit")
def mark_paid(order_id: int) -> str:
    """Runs only once the order it is given is committed (the task reads it)."""
    order = Order.objects.get(pk=order_id)
    order.paid = True
    order.save()
    return "paid"
