"""Settings of the test project: Django and OmniQ on the same database engine.

``OMNIQ_DJANGO_DB`` picks it: ``sqlite`` (files under ``OMNIQ_DJANGO_DIR``) or
``postgres`` (``OMNIQ_DJANGO_PG_URL``; Django's tables in schema ``OMNIQ_DJANGO_SCHEMA``,
OmniQ's in that schema's name plus ``_q``).
"""

import importlib.util
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

SECRET_KEY = "omniq-django-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = ["omniq_django", "shop"]
if importlib.util.find_spec("django.tasks") is None:  # Django 5.2: the backport
    INSTALLED_APPS.insert(0, "django_tasks")

ENGINE = os.environ.get("OMNIQ_DJANGO_DB", "sqlite")
if ENGINE == "postgres":
    PG_URL = os.environ.get("OMNIQ_DJANGO_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    SCHEMA = os.environ["OMNIQ_DJANGO_SCHEMA"]
    PG = urlsplit(PG_URL)  # Django's connection and OmniQ's store on the same database
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": PG.path.lstrip("/") or "postgres",
            "USER": unquote(PG.username or "postgres"),
            "PASSWORD": unquote(PG.password or ""),
            "HOST": PG.hostname or "127.0.0.1",
            "PORT": str(PG.port or 5432),
            "OPTIONS": {"options": f"-c search_path={SCHEMA}"},
        }
    }
    STORE = {"backend": "postgres", "url": PG_URL, "schema": f"{SCHEMA}_q"}
else:
    DIR = Path(os.environ["OMNIQ_DJANGO_DIR"])
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DIR / "django.sqlite3")}
    }
    STORE = f"sqlite:///{DIR / 'omniq.db'}"

OMNIQ = {"task_queue": STORE}
TASKS = {
    "default": {
        "BACKEND": "omniq_django.OmniQBackend",
        "QUEUES": ["default", "prio"],
        "OPTIONS": OMNIQ,
    },
    # Same stores; enqueues inside a transaction wait for its commit; any queue name.
    "oncommit": {
        "BACKEND": "omniq_django.OmniQBackend",
        "QUEUES": [],
        "ENQUEUE_ON_COMMIT": True,
        "OPTIONS": OMNIQ,
    },
}
