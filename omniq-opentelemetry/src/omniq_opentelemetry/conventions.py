"""The span names and attributes, after OpenTelemetry's messaging semantic conventions
(a task queue is a messaging system: a task is a message, its queue the destination).

The conventions' own attributes (``messaging.*``) say what every messaging system says;
what only OmniQ has goes under ``messaging.omniq.*``, the namespace the conventions give
a system for its own attributes.
"""

from __future__ import annotations

__all__ = [
    "ATTEMPT",
    "DESTINATION",
    "MESSAGE_ID",
    "NEXT_ATTEMPT",
    "OPERATION_NAME",
    "OPERATION_TYPE",
    "OUTCOME",
    "RETRY_EVENT",
    "START_DELAY",
    "SYSTEM",
    "SYSTEM_NAME",
    "TASK_NAME",
]

#: ``messaging.system``: the messaging system, as the conventions name it.
SYSTEM = "messaging.system"
SYSTEM_NAME = "omniq"
#: ``send`` (the enqueue) or ``process`` (an attempt).
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
#: The queue.
DESTINATION = "messaging.destination.name"
#: The task id.
MESSAGE_ID = "messaging.message.id"

#: The registered task name.
TASK_NAME = "messaging.omniq.task.name"
#: The attempt a ``process`` span runs, from 1.
ATTEMPT = "messaging.omniq.task.attempt"
#: Seconds from the worker handing the attempt to the process pool to its body's start in
#: the child (a new child's start-up, the import of the task's module, loading the call):
#: the span starts with the body, this tells what came before it. Process pool only.
START_DELAY = "messaging.omniq.task.start_delay"
#: How the attempt ended: succeeded, retried, failed or interrupted (the ``outcome`` of
#: omniq-prometheus's ``omniq_tasks_total``).
OUTCOME = "messaging.omniq.task.outcome"

#: The event on an attempt's span when the task will run again.
RETRY_EVENT = "retry"
#: Its attribute: the attempt that follows.
NEXT_ATTEMPT = "messaging.omniq.task.next_attempt"
