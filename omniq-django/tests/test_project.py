"""The Django project's tests on this interpreter (Django 5.2 with the django-tasks
backport on Python 3.11), on SQLite and on PostgreSQL, against real worker processes."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from omniq_django.compat import FRAMEWORK


@pytest.mark.slow
@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_django_project(run_project: Callable[..., None], db: str) -> None:
    run_project(sys.executable, db, FRAMEWORK)
