"""One error hierarchy, rooted at :class:`OmniQError`.

Every message names the thing, what was found and what to do next. Backends raise the
core categories (or subclasses of them that also derive from their own base), so callers
can catch "any queue error" without knowing which backend is configured.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any


class OmniQError(Exception):
    """Base of every error OmniQ raises on purpose."""


class ConfigError(OmniQError, ValueError):
    """A configuration value or argument is invalid."""


class PluginError(OmniQError):
    """Something is wrong with a plugin or with finding one."""


class PluginLoadError(PluginError):
    """A plugin module raised while being imported or registered."""

    def __init__(self, name: str, distribution: str | None, cause: BaseException) -> None:
        self.name = name
        self.distribution = distribution
        self.cause = cause
        where = f" (distribution {distribution})" if distribution else ""
        super().__init__(
            f"plugin {name!r}{where} failed to load: {type(cause).__name__}: {cause}. "
            f"Other plugins were loaded; fix or uninstall this one, or disable it with "
            f"OMNIQ_DISABLE_PLUGINS={name}."
        )


class UnknownBackendError(PluginError, ConfigError):
    """No installed plugin provides the requested backend name or URL scheme."""


class BackendNotInstalledError(UnknownBackendError):
    """A first-party backend was asked for but its distribution is not installed."""


class AmbiguousBackendError(PluginError, ConfigError):
    """Two plugins claim the same backend name or URL scheme."""


class IncompatiblePluginError(PluginError):
    """A plugin registered something that does not implement the expected interface."""


class CapabilityError(ConfigError):
    """A feature was asked of a backend that does not declare it."""


class SerializationError(OmniQError):
    """A value could not be encoded, or a payload could not (or must not) be decoded."""


class SignatureError(SerializationError):
    """A payload's HMAC signature is missing, unknown or wrong."""


class BackendUnavailableError(OmniQError, ConnectionError):
    """A backend's server could not be reached (the message names it, password masked)."""


class PortalStoppedError(OmniQError, RuntimeError):
    """The event loop behind a blocking app (its portal, :mod:`omniq.sync`) stopped
    without being closed: its thread ended, as a ``SystemExit`` or ``KeyboardInterrupt``
    raised on the loop ends it. No blocking call can run there any more; the cause, when
    known, is chained (``__cause__``). Make a new app."""


class QueueError(OmniQError):
    """A task queue operation failed."""


class TaskNotFoundError(QueueError, KeyError):
    """No task with the given id exists (or it was cleaned up)."""

    def __init__(self, task_id: str, hint: str = "") -> None:
        self.task_id = task_id
        self.hint = hint
        super().__init__(f"no task with id {task_id!r}{hint}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])

    def __reduce__(self) -> tuple[type[TaskNotFoundError], tuple[str, str], dict[str, Any]]:
        # (its arguments, not its message: pickle and ``get_result`` build it again
        # from these; the message as ``task_id`` would be quoted into a new message)
        return type(self), (self.task_id, self.hint), self.__dict__


class UnknownTaskError(QueueError):
    """A message names a task this app does not know (never imported blindly)."""


class TaskFailedError(OmniQError):
    """A task ended without a value: raised by ``get_result`` when the original error
    type cannot be rebuilt, and for cancelled and expired tasks (which never ran)."""

    def __init__(
        self, task_id: str, state: str, error_type: str, message: str, traceback: str = ""
    ):
        self.task_id = task_id
        self.state = state
        self.error_type = error_type
        self.error_message = message
        self.remote_traceback = traceback
        super().__init__(f"task {task_id} {state}: {error_type}: {message}")

    def __reduce__(self) -> tuple[type[TaskFailedError], tuple[str, ...], dict[str, Any]]:
        # (its arguments: a task that lets it through on a process pool is pickled back
        # to the worker, and the default, its whole message, failed to unpickle)
        args = (self.task_id, self.state, self.error_type, self.error_message)
        return type(self), (*args, self.remote_traceback), self.__dict__


class TaskTimeoutError(OmniQError, TimeoutError):
    """A task ran longer than its timeout."""


class ResultTimeoutError(OmniQError, TimeoutError):
    """``get_result`` gave up waiting; the task may still finish later."""


class DependencyFailedError(OmniQError):
    """A task was cancelled because a task it depends on did not succeed.

    Every backend stores this type (module ``omniq.errors``) on such a task, with the
    message of :func:`omniq.lifecycle.dependency_message`: ``parent task '<id>' ended
    <state>``, naming the direct parent (a grandchild names its own parent, cancelled).
    """


class Retry(OmniQError):
    """Raised by task code to ask for another attempt: ``raise omniq.Retry(delay=30,
    reason="rate limited")``.

    It counts as an attempt and uses one of the task's ``retries`` (once they are used up
    the task fails with this error); it skips the ``retry_on``/``dont_retry_on`` filters.
    ``delay`` (seconds or a timedelta) is used as given; None lets the task's backoff
    schedule choose. The ``retrying`` event records ``reason`` and the delay.
    """

    def __init__(self, delay: float | timedelta | None = None, reason: str = "") -> None:
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if delay is not None and (
            isinstance(delay, bool)
            or not isinstance(delay, (int, float))
            or not 0 <= delay < float("inf")  # (also refuses NaN)
        ):
            raise ConfigError(
                f"Retry(delay=...) must be seconds >= 0 (a number or a timedelta) or None, "
                f"got {delay!r}"
            )
        if not isinstance(reason, str):
            raise ConfigError(f"Retry(reason=...) must be a string, got {reason!r}")
        self.delay: float | None = None if delay is None else float(delay)
        self.reason = reason
        super().__init__(reason or "retry requested")

    #: The task whose outcome this is, on a Retry rebuilt by ``get_result``: that task's
    #: failure, not a request of the task that reads it (which would retry it for
    #: another task's error, past its ``retry_on``).
    raised_by: str | None = None

    def __reduce__(self) -> tuple[type[Retry], tuple[float | None, str], dict[str, Any]]:
        # (a process pool pickles it back to the worker; the default would pass the
        # message as ``delay``)
        return type(self), (self.delay, self.reason), self.__dict__
