"""The worker's outcome records are what ``makeRecord`` and ``logging.Formatter`` make,
though built for less (omniq.worker.outcomes._new_record, TextFormatter's plain path)."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from omniq.cli.ui import _StderrHandler
from omniq.context import TaskLogFilter
from omniq.logs import JsonFormatter, TextFormatter
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
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
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


@pytest.fixture
def cli_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[logging.Handler, io.StringIO]]:
    """The command line's handler as ``omniq worker`` installs it, and the string it
    writes to once :func:`_alone` has put it alone on the root."""
    stream = io.StringIO()
    handler = _StderrHandler()
    handler.setFormatter(TextFormatter())
    handler.addFilter(TaskLogFilter())
    task_log = logging.getLogger("omniq.task")
    level = task_log.level
    task_log.setLevel(logging.INFO)
    try:
        yield handler, stream
    finally:
        task_log.setLevel(level)


def _alone(monkeypatch: pytest.MonkeyPatch, handler: logging.Handler, stream: io.StringIO) -> None:
    """``handler`` the root's only one, writing to ``stream`` (in the test itself: pytest
    sets its own handlers and ``sys.stderr`` for each phase)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    monkeypatch.setattr(sys, "stderr", stream)


def _lines(handler: logging.Handler, stream: io.StringIO) -> list[str]:
    handler.flush()
    return stream.getvalue().splitlines()


#: (outcome, error, extra fields, the time the line is made): the second's edges included.
_CALLS: list[tuple[str, BaseException | None, dict[str, Any], float]] = [
    ("succeeded", None, {}, 1_700_000_000.25),
    ("failed", ValueError("it's 'quoted'"), {}, 1_700_000_000.999),
    ("retrying", ValueError("x"), {"retry_in": 2.0}, 1_700_000_001.0),
    ("dead", None, {}, 1_700_000_001.0005),
]


def _log_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    for i, (outcome, error, extra, at) in enumerate(_CALLS):
        # (LogRecord reads time.time_ns() since Python 3.13, time.time() before)
        monkeypatch.setattr(time, "time", lambda at=at: at)
        monkeypatch.setattr(time, "time_ns", lambda at=at: round(at * 1e6) * 1000)
        log_outcome("w1", _task(i), outcome, at - 1.5, error, **extra)
    monkeypatch.setattr(time, "time", _TIME)
    monkeypatch.setattr(time, "time_ns", _TIME_NS)


_TIME, _TIME_NS = time.time, time.time_ns


def test_a_line_written_without_a_record_is_the_line_a_record_gives(
    cli_handler: tuple[logging.Handler, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, stream = cli_handler
    _alone(monkeypatch, handler, stream)
    with monkeypatch.context() as m:
        m.setattr(outcomes, "_new_record", None)  # a record would be an error
        _log_calls(monkeypatch)
    direct = _lines(handler, stream)

    task_log = logging.getLogger("omniq.task")
    other = _Keep()  # a second handler: the records are made and formatted as before
    task_log.addHandler(other)
    try:
        _log_calls(monkeypatch)
    finally:
        task_log.removeHandler(other)
    assert len(other.records) == 4
    assert direct == _lines(handler, stream)[4:]
    assert direct[0] == (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_700_000_000))
        + ",250 INFO omniq.task: task jobs.add t0 succeeded queue=default attempt=1"
        " duration=1.500s"
    )
    assert direct[1].endswith(
        ",999 ERROR omniq.task: task jobs.add t1 failed queue=default"
        " attempt=1 duration=1.500s error=\"ValueError: it's 'quoted'\""
    )
    assert " WARNING omniq.task: task jobs.add t2 retrying " in direct[2]
    assert direct[2].endswith(" retry_in=2.0 error='ValueError: x'")
    assert ",000 ERROR omniq.task: task jobs.add t3 dead " in direct[3]


def test_another_handler_or_filter_gets_a_record(
    cli_handler: tuple[logging.Handler, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, stream = cli_handler
    _alone(monkeypatch, handler, stream)
    task_log = logging.getLogger("omniq.task")
    seen: list[Any] = []

    def note(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    task_log.addFilter(note)
    try:
        log_outcome("w1", _task(1), "succeeded", now())
    finally:
        task_log.removeFilter(note)
    handler.addFilter(note)
    try:
        log_outcome("w1", _task(2), "succeeded", now())
    finally:
        handler.removeFilter(note)
    quiet = _Keep()
    quiet.setLevel(logging.ERROR)  # does not take an INFO line: not another reader
    task_log.addHandler(quiet)
    try:
        with monkeypatch.context() as m:
            m.setattr(outcomes, "_new_record", None)  # no record: the handler writes it
            log_outcome("w1", _task(3), "succeeded", now())
    finally:
        task_log.removeHandler(quiet)
    assert [r.task_id for r in seen] == ["t1", "t2"]
    lines = _lines(handler, stream)
    assert [line.split(" succeeded")[0][-2:] for line in lines] == ["t1", "t2", "t3"]


def test_the_json_format_gets_a_record(
    cli_handler: tuple[logging.Handler, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, stream = cli_handler
    _alone(monkeypatch, handler, stream)
    handler.setFormatter(JsonFormatter())
    assert not handler.takes_lines  # type: ignore[attr-defined]
    log_outcome("w1", _task(1), "succeeded", now())
    (line,) = _lines(handler, stream)
    assert json.loads(line)["worker_id"] == "w1"  # an extra: made from a record
