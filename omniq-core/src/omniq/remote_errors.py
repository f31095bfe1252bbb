"""A task's exception across processes: recorded as :class:`~omniq.models.ErrorInfo` by
the worker, raised again by ``get_result``.

The worker records the exception's constructor arguments (what ``__reduce__`` gives,
as pickle would call the class) when they are plain values that every store keeps
as they are; the reader calls the class with them. Nothing is imported on a store's
say-so: the class must be a builtin exception or live in a module the reader has
already imported, and the rebuilt exception must say what the original said, else the
reader gets :class:`~omniq.errors.TaskFailedError` with the type name and message.
"""

from __future__ import annotations

import builtins
import math
import sys
import traceback
from typing import Any

import msgspec

from .errors import Retry, TaskFailedError
from .models import ErrorInfo

__all__ = ["ARGS_MAX_BYTES", "error_args", "error_info", "rebuild_error"]

#: Largest recorded arguments (their JSON): an error record stays small; larger ones
#: are not kept and the exception is rebuilt from its message alone.
ARGS_MAX_BYTES = 1024
#: Nesting kept in recorded arguments (lists and dicts inside the arguments).
_MAX_DEPTH = 4
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # (what msgpack encodes)
#: Floats from here on are written in exponent form and jsonb gives them back as integers.
_FLOAT_EXACT = 1e16
_json = msgspec.json.Encoder()


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` reads back equal from every store's encoding (JSON, jsonb,
    msgpack): no bytes (JSON gives back base64 text), no NaN (null), no NUL (jsonb
    refuses it), no lone surrogate (no encoder takes it), no float past 1e16, no
    objects. Tuples come back as lists."""
    kind = type(value)
    if value is None or kind is bool:
        return True
    if kind is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if kind is float:  # (jsonb gives 1e16 and up back as integers, -0.0 as 0.0)
        exact = -_FLOAT_EXACT < value < _FLOAT_EXACT
        return exact and (value != 0 or math.copysign(1.0, value) > 0)
    if kind is str:  # (a lone surrogate, an undecodable file name's, encodes nowhere)
        return "\x00" not in value and (value.isascii() or _utf8(value))
    if depth >= _MAX_DEPTH:
        return False
    if kind is list or kind is tuple:
        return all(_plain(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(k) is str and _plain(k) and _plain(v, depth + 1) for k, v in value.items())
    return False


def error_args(exc: BaseException, message: str) -> tuple[Any, ...] | None:
    """The arguments that build ``exc`` again, or None when the message alone does
    (the common ``ValueError("text")``) or they cannot be kept (not plain, too large, or
    its ``__reduce__`` does not call its own class)."""
    try:
        reduced = exc.__reduce__()
    except Exception:  # (a user's __reduce__: anything may go wrong)
        return None
    if not isinstance(reduced, tuple) or len(reduced) < 2 or reduced[0] is not type(exc):
        return None
    args = reduced[1]
    # (plain first: only plain values are compared, a user's object's __eq__ may raise)
    if type(args) is not tuple or not _keepable(args) or args == (message,):
        return None
    return args


def _keepable(args: tuple[Any, ...]) -> bool:
    """Whether ``args`` are plain values of at most :data:`ARGS_MAX_BYTES` of JSON: the
    worker's rule for recording them, checked again by the reader (a record written
    into the store behind the app's back, which no HMAC covers, does not pass a class
    anything a worker would not have recorded)."""
    return _plain(args) and len(_json.encode(args)) <= ARGS_MAX_BYTES


def error_info(exc: BaseException) -> ErrorInfo:
    """How a worker records the exception an attempt raised."""
    message = str(exc)
    return ErrorInfo(
        type=type(exc).__name__,
        module=type(exc).__module__,
        message=message,
        traceback="".join(traceback.format_exception(exc, limit=20)),
        args=error_args(exc, message),
    )


def _build(cls: type[Exception], err: ErrorInfo) -> Exception:
    if err.args is not None and _keepable(err.args):
        return cls(*err.args)
    if issubclass(cls, Retry):  # (a Retry's first argument is its delay)
        return cls(reason=err.message)
    return cls(err.message)


def rebuild_error(task_id: str, state: str, err: ErrorInfo) -> BaseException:
    """The task's exception as its own type when that type is a builtin exception or
    lives in a module already imported here (nothing is imported on a store's say-so),
    built with its recorded arguments (a record without them, from an older worker or
    with arguments that could not be kept: with its message) and saying what it said;
    else :class:`~omniq.errors.TaskFailedError` with the type name and message."""
    module = sys.modules.get(err.module) if err.module not in ("", "builtins") else builtins
    cls = getattr(module, err.type, None) if module is not None else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            exc = _build(cls, err)
            if str(exc) == err.message:  # (else its arguments meant something else)
                if isinstance(exc, Retry):  # (this task's failure, not the reader's request)
                    exc.raised_by = task_id
                exc.__notes__ = [f"raised by task {task_id} ({state})", err.traceback]
                return exc
        except Exception:
            pass
    return TaskFailedError(task_id, state, err.type, err.message, err.traceback)
