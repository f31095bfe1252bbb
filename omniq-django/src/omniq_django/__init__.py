"""OmniQ as a backend of Django's task framework.

    TASKS = {"default": {"BACKEND": "omniq_django.OmniQBackend",
                         "OPTIONS": {"task_queue": "postgresql://..."}}}

Names load lazily: the OmniQ plugin module of this package is imported by every OmniQ
process during plugin discovery, and must not pull Django in.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OmniQBackend"]


def __getattr__(name: str) -> Any:
    if name == "OmniQBackend":
        from .backend import OmniQBackend

        return OmniQBackend
    raise AttributeError(f"module 'omniq_django' has no attribute {name!r}")
