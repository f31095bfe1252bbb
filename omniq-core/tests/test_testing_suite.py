"""Runs :mod:`omniq.testing` against the in-memory reference implementation (proving the
suite can pass) and against deliberately broken variants in a pytest subprocess (proving
it fails, and fails where it should). See ``omniq_suite_reference.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # the reference module; spawn children inherit sys.path

import omniq_suite_reference as reference  # noqa: E402

from omniq import register_plugin  # noqa: E402
from omniq.registry import registry  # noqa: E402
from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def suite_memory_plugin() -> Iterator[None]:
    register_plugin(reference.Plugin(), name=reference.BACKEND)
    yield
    registry.unregister_plugin(reference.BACKEND)


def fresh_ref() -> str:
    return f"{reference.BACKEND}://{uuid.uuid4().hex}"


class TestMemoryTaskQueue(TaskQueueContract):
    corrupt_task = reference.corrupt_task
    corrupt_schedule = reference.corrupt_schedule

    @pytest.fixture
    def task_queue_ref(self) -> str:
        return fresh_ref()


class TestMemoryResultStorage(ResultStorageContract):
    corrupt_result = reference.corrupt_result

    @pytest.fixture
    def result_storage_ref(self) -> str:
        return fresh_ref()


class TestMemoryEventStorage(EventStorageContract):
    corrupt_event = reference.corrupt_event

    @pytest.fixture
    def event_storage_ref(self) -> str:
        return fresh_ref()


class TestFileTaskQueue(TaskQueueContract):
    """The CROSS_PROCESS variant: exercises the subprocess test and "module:Class" refs."""

    corrupt_task = reference.corrupt_task
    corrupt_schedule = reference.corrupt_schedule

    @pytest.fixture
    def task_queue_ref(self, tmp_path: Path) -> dict[str, str]:
        return {
            "url": "omniq_suite_reference:FileTaskQueue",
            "path": str(tmp_path / "queue.pickle"),
        }


# -- the suite must fail on broken stores ---------------------------------------------------------

#: A test module as a third party would write it, one class per broken variant. Refs use the
#: "module:Class" form, so the subprocess needs no plugin registration.
BROKEN_MODULE = """
import uuid
import pytest
from omniq.testing import EventStorageContract, ResultStorageContract, TaskQueueContract
from omniq_suite_reference import corrupt_event, corrupt_result, corrupt_schedule, corrupt_task

def ref(cls):
    return {"url": f"omniq_suite_reference:{cls}", "namespace": uuid.uuid4().hex}

class TestReserveIgnoresPriority(TaskQueueContract):
    corrupt_task = corrupt_task
    corrupt_schedule = corrupt_schedule

    @pytest.fixture
    def task_queue_ref(self):
        return ref("ReserveIgnoresPriority")

class TestCompleteIgnoresToken(TaskQueueContract):
    corrupt_task = corrupt_task
    corrupt_schedule = corrupt_schedule

    @pytest.fixture
    def task_queue_ref(self):
        return ref("CompleteIgnoresToken")

class TestCompleteAcceptsAnyEnd(TaskQueueContract):
    corrupt_task = corrupt_task
    corrupt_schedule = corrupt_schedule
    @pytest.fixture
    def task_queue_ref(self):
        return ref("CompleteAcceptsAnyEnd")

class TestFinishWritesBeforeFencing(TaskQueueContract):
    corrupt_task = corrupt_task
    corrupt_schedule = corrupt_schedule
    @pytest.fixture
    def task_queue_ref(self):
        return ref("FinishWritesBeforeFencing")

class TestLapseIgnoresRetries(TaskQueueContract):
    corrupt_task = corrupt_task
    corrupt_schedule = corrupt_schedule
    @pytest.fixture
    def task_queue_ref(self):
        return ref("LapseIgnoresRetries")

class TestDependentsOnlyWaiting(TaskQueueContract):
    corrupt_task = corrupt_task
    corrupt_schedule = corrupt_schedule

    @pytest.fixture
    def task_queue_ref(self):
        return ref("DependentsOnlyWaiting")

class TestReserveNotAtomic(TaskQueueContract):
    corrupt_task = corrupt_task
    corrupt_schedule = corrupt_schedule

    @pytest.fixture
    def task_queue_ref(self):
        return ref("ReserveNotAtomic")

class TestResultsIgnoreExpiry(ResultStorageContract):
    corrupt_result = corrupt_result

    @pytest.fixture
    def result_storage_ref(self):
        return ref("ResultsIgnoreExpiry")

class TestEventsUntilInclusive(EventStorageContract):
    corrupt_event = corrupt_event

    @pytest.fixture
    def event_storage_ref(self):
        return ref("EventsUntilInclusive")

class TestForgotTheRef(EventStorageContract):
    corrupt_event = corrupt_event

    pass

class TestQuietOverride(ResultStorageContract):
    corrupt_result = corrupt_result

    @pytest.fixture
    def result_storage_ref(self):
        return ref("MemoryResultStorage")

    async def test_delete(self):
        pass

class TestDeclaredOverride(ResultStorageContract):
    corrupt_result = corrupt_result

    @pytest.fixture
    def result_storage_ref(self):
        return ref("MemoryResultStorage")

    @pytest.mark.xfail(reason="documented gap")
    async def test_delete(self):
        raise AssertionError("gap")
"""

#: For each class: exactly the tests that must fail (every other test passes or skips).
EXPECTED_FAILURES = {
    "TestReserveIgnoresPriority": {
        "test_reserve_orders_by_priority_then_fifo",
        "test_reserve_priority_spans_the_queues_asked",
    },
    "TestCompleteIgnoresToken": {
        "test_complete_with_stale_token_changes_nothing",
        "test_complete_many",
        "test_stale_holder_is_fenced_after_redelivery",
        "test_finish_many_with_stores_of_another_backend",
    },
    "TestCompleteAcceptsAnyEnd": {
        "test_complete_refuses_states_other_than_succeeded_and_cancelled",
        "test_complete_refuses_a_state_that_does_not_complete",
    },
    "TestFinishWritesBeforeFencing": {
        "test_finish_many_with_stores_of_another_backend",
        "test_zombie_finish_leaves_nothing_with_stores_of_another_backend",
    },
    "TestLapseIgnoresRetries": {
        "test_lapsed_lease_dead_letters_after_max_deliveries",
        "test_lapses_dead_letter_exactly_at_the_attempts_allowed",
    },
    "TestReserveNotAtomic": {"test_concurrent_reservers_never_share_a_task"},
    "TestDependentsOnlyWaiting": {
        "test_dependents_lists_the_tasks_that_depend_on_a_task",
        "test_dependents_of_a_failed_parent_list_the_cancelled_ones",
    },
    "TestResultsIgnoreExpiry": {
        "test_expired_result_is_invisible",
        "test_cleanup_deletes_expired_results",
    },
    "TestEventsUntilInclusive": {
        "test_query_since_inclusive_until_exclusive",
        "test_counts_bucket_events_by_time_queue_and_type",  # the default counts what query finds
    },
    "TestQuietOverride": {"test_contract_tests_are_not_overridden"},
    "TestDeclaredOverride": set(),
}


def run_suite(tmp_path: Path) -> ET.Element:
    (tmp_path / "test_broken_backends.py").write_text(textwrap.dedent(BROKEN_MODULE))
    report = tmp_path / "report.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tmp_path / "test_broken_backends.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            "--import-mode=importlib",
            "-o",
            "junit_family=xunit2",
            f"--junitxml={report}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert report.exists(), f"pytest did not run:\n{proc.stdout}\n{proc.stderr}"
    return ET.parse(report).getroot()


@pytest.mark.slow
def test_suite_fails_exactly_where_a_rule_is_broken(tmp_path: Path) -> None:
    root = run_suite(tmp_path)
    outcomes: dict[str, dict[str, str]] = {}
    messages: dict[str, list[str]] = {}
    for case in root.iter("testcase"):
        cls = case.get("classname", "").rpartition(".")[2]
        name = case.get("name", "").partition("[")[0]
        bad = case.find("failure")
        err = case.find("error")
        outcome = "failed" if bad is not None else "error" if err is not None else "ok"
        if outcomes.setdefault(cls, {}).get(name) in ("failed", "error"):
            continue  # a parametrized test fails if any of its cases does
        outcomes[cls][name] = outcome
        if err is not None:
            messages.setdefault(cls, []).append(err.get("message", "") + (err.text or ""))
    for cls, expected in EXPECTED_FAILURES.items():
        failed = {n for n, o in outcomes[cls].items() if o != "ok"}
        assert failed == expected, f"{cls}: failed {sorted(failed)}, expected {sorted(expected)}"
    passed = {n for n, o in outcomes["TestForgotTheRef"].items() if o == "ok"}
    assert passed == {"test_contract_tests_are_not_overridden"}, "a class without a ref must error"
    assert all(
        "override event_storage_ref in your test class" in m for m in messages["TestForgotTheRef"]
    )
