"""The worker's outcome records are what ``makeRecord`` and ``logging.Formatter`` make,
though built for less (omniq.worker.outcomes._new_record, TextFormatter's plain path)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from omniq.logs import TextFormatter
from omniq.models import Task, now
from omniq.worker import outcomes
from omniq.worker.outcomes import log_outcome

#: Attributes that differ between any two records (the time they were made).
_TIMES = {"created", "msecs", "relativeCreated"}


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[_Keep]:
    logger = logging.getLogger("omniq.task")
    handler, level = _Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    outcomes._templates.clear()
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _task(i: int) -> Task:
    return Task(id=f"t{i}", name="jobs.add", queue="default", attempts=1, payload=b"")


def _made(record: logging.LogRecord) -> dict[str, Any]:
    """What ``makeRecord`` makes of the same call (extras taken out)."""
    reference = logging.getLogger("omniq.task").makeRecord(
        "omniq.task",
        record.levelno,
        outcomes.__file__,
        outcomes._LINE,
        outcomes._MESSAGE,
        record.args,
        None,
        "log_outcome",
    )
    return reference.__dict__


def test_every_outcome_record_has_the_attributes_make_record_gives(kept: _Keep) -> None:
    started = now()
    for i in range(3):  # the first is made by makeRecord, the next from its template
        log_outcome("w1", _task(i), "succeeded", started)
    log_outcome("w1", _task(9), "failed", started, ValueError("boom"))
    done = threading.Thread(target=log_outcome, args=("w1", _task(10), "succeeded", started))
    done.start()
    done.join()
    assert len(kept.records) == 5
    for n, record in enumerate(kept.records):
        made = _made(record)  # (in this thread: the fifth record was made in another)
        skip = _TIMES | ({"thread", "threadName"} if n == 4 else set())
        same = {k: v for k, v in record.__dict__.items() if k in made and k not in skip}
        assert same == {k: v for k, v in made.items() if k not in skip}
        assert abs(record.created - made["created"]) < 5
        assert record.msecs == int((record.created - int(record.created)) * 1000)
        assert abs(record.relativeCreated - made["relativeCreated"]) < 5000
    assert kept.records[1].getMessage().startswith("task jobs.add t1 succeeded queue=default")
    assert kept.records[3].levelno == logging.ERROR
    assert kept.records[4].threadName == done.name
    assert kept.records[4].thread != kept.records[0].thread
    assert kept.records[2].task_id == "t2"  # type: ignore[attr-defined]
    assert kept.records[2].worker_id == "w1"  # type: ignore[attr-defined]


def test_a_custom_record_factory_makes_every_outcome_record(kept: _Keep) -> None:
    factory = logging.getLogRecordFactory()

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.tag = "mine"
        return record

    logging.setLogRecordFactory(tagged)
    try:
        for i in range(2):
            log_outcome("w1", _task(i), "succeeded", now())
    finally:
        logging.setLogRecordFactory(factory)
    assert [getattr(r, "tag", None) for r in kept.records] == ["mine", "mine"]


@pytest.mark.parametrize("exc_info", [False, True], ids=["plain", "with a traceback"])
def test_text_formatter_writes_what_logging_formatter_writes(exc_info: bool) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("omniq.x").makeRecord(
            "omniq.x", logging.INFO, __file__, 1, "a %s b", ("c",), None
        )
        if exc_info:
            record.exc_info = sys.exc_info()
    ours = TextFormatter().format(record)
    theirs = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record)
    assert ours == theirs
    assert record.message == "a c b"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_its_own_records(kept: _Keep) -> None:
    log_outcome("w1", _task(1), "succeeded", now())
    assert outcomes._templates  # the parent's template
    pid = os.fork()
    if pid == 0:  # the child: its records name its own process
        code = 1
        try:
            if not outcomes._templates:
                log_outcome("w1", _task(2), "succeeded", now())
                code = 0 if kept.records[-1].process == os.getpid() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
