"""The Django project's tests, run by ``test_project.py`` (Django 5.2 + django-tasks,
this interpreter) and ``test_django6.py`` (Django 6, Python 3.12) as
``python -m pytest project_checks.py`` in this directory, once per database.

Only the framework's public API is used (``task.enqueue()``, ``result.refresh()``,
``get_result``), against a real worker process (``manage.py omniq_worker`` or
``omniq worker --django``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import django
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["DJANGO_SETTINGS_MODULE"] = "djsite.settings"
django.setup()

from django.conf import settings  # noqa: E402
from django.core.checks import run_checks  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from shop.models import Order  # noqa: E402
from shop.tasks import add, echo, fail, mark_paid, slow_double, whoami  # noqa: E402

from omniq.testing import until  # noqa: E402
from omniq_django.compat import (  # noqa: E402
    FRAMEWORK,
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task_backends,
    task_enqueued,
)

DEADLINE = 20.0


def wait_finished(result: Any, timeout: float = DEADLINE) -> Any:
    """Refresh ``result`` until it finishes (polling with a deadline)."""

    def finished() -> bool:
        result.refresh()
        return bool(result.is_finished)

    until(
        finished,
        f"task {result.id} finished",
        deadline=timeout,
        interval=0.05,
        show=lambda: f"status {result.status}",
    )
    return result


def start(*argv: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=HERE, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(log.read_text(errors="replace"))


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[None]:
    """Django's tables (and, on PostgreSQL, a schema of their own for this run)."""
    schema = getattr(settings, "SCHEMA", None)
    if schema:
        with connection.cursor() as cur:
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    call_command("migrate", verbosity=0)
    yield
    if schema:
        with connection.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}_q" CASCADE')


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def worker(database: None, logs: Path) -> Iterator[None]:
    """``manage.py omniq_worker`` serving the default queue for the whole run."""
    log = logs / "worker.log"
    proc = start(sys.executable, "manage.py", "omniq_worker", "--queue", "default", log=log)
    yield
    stop(proc, log)


def test_runs_on_the_expected_framework() -> None:
    assert os.environ.get("OMNIQ_DJANGO_EXPECT_FRAMEWORK", FRAMEWORK) == FRAMEWORK


def test_result_of_a_task_run_by_the_worker(worker: None) -> None:
    result = add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY and result.enqueued_at is not None
    wait_finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1 and result.worker_ids
    assert result.started_at <= result.finished_at
    again = default_task_backend.get_result(result.id)
    assert (again.args, again.return_value, again.task.func) == ([2, 3], 5, add.func)
    assert add.get_result(result.id).return_value == 5


def test_failure_carries_the_exception(worker: None) -> None:
    result = wait_finished(fail.enqueue("boom"))
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class is ValueError
    assert "boom" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value


def test_context_names_the_result_and_attempt(worker: None) -> None:
    result = wait_finished(whoami.enqueue(7))
    assert result.return_value == {"id": result.id, "attempt": 1, "n": 7}


def test_async_task(worker: None) -> None:
    assert wait_finished(slow_double.enqueue(21)).return_value == 42


def test_run_after_defers_the_task(worker: None) -> None:
    run_after = timezone.now() + timedelta(seconds=1.5)
    result = echo.using(run_after=run_after).enqueue("later")
    assert default_task_backend.get_result(result.id).status == TaskResultStatus.READY
    wait_finished(result)
    assert result.return_value == "later"
    assert result.started_at >= run_after
    assert result.task.run_after == run_after


def test_enqueue_sends_the_frameworks_signal() -> None:
    seen: list[str] = []

    def receiver(sender: type, task_result: Any, **kwargs: Any) -> None:
        seen.append(task_result.id)

    task_enqueued.connect(receiver)
    try:
        result = echo.enqueue("signalled")
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [result.id]


def test_unknown_result_id() -> None:
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("no-such-task")


def test_validation() -> None:
    with pytest.raises(InvalidTask):  # not in the backend's QUEUES
        add.using(queue_name="elsewhere")
    with pytest.raises(InvalidTask):  # any queue name, but one OmniQ accepts
        mark_paid.using(queue_name="no spaces/please")
    with pytest.raises(InvalidTask):
        add.using(priority=101)
    backend = task_backends["default"]
    assert (
        backend.supports_defer,
        backend.supports_async_task,
        backend.supports_get_result,
        backend.supports_priority,
    ) == (True, True, True, True)


def test_check_reports_a_configuration_omniq_refuses() -> None:
    broken = {"BACKEND": "omniq_django.OmniQBackend", "OPTIONS": {"task_queue": "nosuch://x"}}
    with override_settings(TASKS={**settings.TASKS, "broken": broken}):
        [error] = [m for m in run_checks() if m.id == "omniq_django.E001"]
    assert "TASKS['broken']" in error.msg and "nosuch" in error.msg


def test_enqueue_on_commit_waits_for_the_commit(worker: None) -> None:
    backend = task_backends["oncommit"]
    with transaction.atomic():
        order = Order.objects.create()
        result = mark_paid.enqueue(order.id)
        with pytest.raises(TaskResultDoesNotExist):  # not stored before the commit
            backend.get_result(result.id)
    assert wait_finished(result).return_value == "paid"
    order.refresh_from_db()
    assert order.paid


def test_enqueue_on_commit_drops_the_task_on_rollback(worker: None) -> None:
    class Rollback(Exception):
        pass

    # The enqueue and the exception that rolls it back belong in one atomic block.
    with pytest.raises(Rollback), transaction.atomic():  # noqa: PT012
        result = mark_paid.enqueue(Order.objects.create().id)
        raise Rollback
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["oncommit"].get_result(result.id)


def test_without_on_commit_enqueue_is_immediate() -> None:
    with transaction.atomic():
        result = echo.enqueue("now")
        assert default_task_backend.get_result(result.id).id == result.id  # stored already


def test_priority_order_through_the_omniq_cli(database: None, logs: Path) -> None:
    low = echo.using(queue_name="prio", priority=-50).enqueue("low")
    high = echo.using(queue_name="prio", priority=50).enqueue("high")
    omniq = Path(sys.executable).with_name("omniq")
    log = logs / "cli-worker.log"
    proc = start(
        str(omniq),
        "worker",
        "--django",
        "djsite.settings",
        "--queue",
        "prio",
        "--concurrency",
        "1",
        "--burst",
        "--no-progress",
        log=log,
    )
    try:
        assert proc.wait(DEADLINE) == 0
    finally:
        stop(proc, log)
    wait_finished(low, 1)
    wait_finished(high, 1)
    assert high.finished_at <= low.started_at
