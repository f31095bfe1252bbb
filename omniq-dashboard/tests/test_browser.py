"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through
the system chromedriver (no browser or driver is downloaded; selenium-manager never
runs because both paths are given). Each test saves a screenshot of the pages it
visits to $OMNIQ_DASHBOARD_SCREENSHOTS, or to a temporary folder it prints.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq_dashboard import create_app

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTILE_ARG = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"


# Module-level test functions: pytest-xdist's ``--dist loadscope`` (.ci/dev.py) runs
# them on one worker, with one Chromium, not one per worker.


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        message = f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("OMNIQ_DASHBOARD_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {path}")
    return path


def wait(driver: Any, condition: Any, what: str, timeout: float = 10) -> Any:
    """Poll ``condition`` to a deadline; the live refresh may replace an element while
    it is being read, so a stale element means: look again."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: condition(d), message=what)


def click(driver: Any, css: str) -> None:
    """Click the element at ``css``, finding it again if a live refresh replaced it."""

    def clicked(d: Any) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    wait(driver, clicked, f"could not click {css}")


def cell(driver: Any, queue: str, state: str) -> str:
    css = f'tr[data-queue="{queue}"] td[data-state="{state}"]'
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return str(found[0].text) if found else ""
    except StaleElementReferenceException:
        return ""


def listed(driver: Any, expected: list[str], what: str) -> None:
    """Wait until the task rows are ``expected``, in that order."""

    def rows(d: Any) -> list[str]:
        return [
            e.get_attribute("data-task") for e in d.find_elements(By.CSS_SELECTOR, "tr[data-task]")
        ]

    wait(driver, lambda d: rows(d) == expected, f"{what}: expected {expected}")


def test_requeue_a_dead_task_and_see_it_run(
    shop: Any, served: Any, browser: Any, shots: Path
) -> None:
    dead = shop.dead("invoice 7")
    shop.send_mail.delay("ann@example.com")
    shop.report.delay(3)
    shop.work()
    with served(create_app(shop.app)) as base:
        browser.get(f"{base}/dead")
        row = f'tr[data-task="{dead}"]'
        wait(
            browser,
            lambda d: "cannot send invoice 7" in d.find_element(By.CSS_SELECTOR, row).text,
            "the dead task is not listed with its error",
        )
        click(browser, f"{row} input[name=task_id]")
        browser.save_screenshot(str(shots / "dead-letters.png"))
        browser.find_element(By.ID, "requeue-selected").click()
        assert (
            "Requeued 1 task(s)"
            in wait(browser, lambda d: d.find_element(By.ID, "done"), "no notice").text
        )
        browser.get(f"{base}/")
        assert (cell(browser, "mail", "pending"), cell(browser, "mail", "succeeded")) == ("1", "1")
        shop.fix()
        shop.work()
        # No reload: the counts refresh by themselves.
        wait(
            browser,
            lambda d: cell(d, "mail", "succeeded") == "2",
            "the overview never showed the rerun",
        )
        assert cell(browser, "mail", "pending") == "0"
        browser.save_screenshot(str(shots / "overview.png"))
        browser.get(f"{base}/dead")
        click(browser, f'tr[data-task="{dead}"] td:last-child a')
        assert (
            wait(browser, lambda d: d.find_element(By.ID, "task-state"), "no task page").text
            == "succeeded"
        )


def test_pause_a_schedule_and_see_no_firing(
    shop: Any, served: Any, browser: Any, shots: Path
) -> None:
    import time

    sched = shop.app.schedule(shop.report, args=[1], interval=3600, start_at=time.time() - 5)
    with served(create_app(shop.app)) as base:
        browser.get(f"{base}/schedules")
        row = f'tr[data-schedule="{sched}"]'
        assert browser.find_element(By.CSS_SELECTOR, f"{row} .schedule-state").text == "active"
        browser.find_element(By.CSS_SELECTOR, f"{row} button.pause").click()
        wait(
            browser,
            lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .schedule-state").text == "paused",
            "the schedule never showed as paused",
        )
        browser.save_screenshot(str(shots / "schedules.png"))
        assert shop.app.run_due_schedules() == [], "a paused schedule fired"
        assert shop.app.list_tasks(queue="reports") == []
        browser.find_element(By.CSS_SELECTOR, f"{row} button.resume").click()
        wait(
            browser,
            lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .schedule-state").text == "active",
            "the schedule never showed as resumed",
        )


def test_filter_the_task_list(shop: Any, served: Any, browser: Any, shots: Path) -> None:
    mails = [shop.send_mail.delay(f"u{i}@example.com").id for i in range(3)]
    reports = [shop.report.delay(i).id for i in range(2)]
    with served(create_app(shop.app)) as base:
        browser.get(f"{base}/tasks")
        listed(browser, [*reports[::-1], *mails[::-1]], "every task, newest first")
        Select(browser.find_element(By.NAME, "queue")).select_by_value("reports")
        browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        wait(browser, lambda d: "queue=reports" in d.current_url, "the filter was not applied")
        listed(browser, reports[::-1], "only the queue's tasks, newest first")
        Select(browser.find_element(By.NAME, "queue")).select_by_value("")
        name = browser.find_element(By.NAME, "name")
        name.send_keys("shop.send_mail")
        name.submit()
        wait(
            browser,
            lambda d: "name=shop.send_mail" in d.current_url,
            "the name filter was not applied",
        )
        listed(browser, mails[::-1], "only the tasks of that name")
        browser.save_screenshot(str(shots / "tasks.png"))


def test_open_a_task_timeline_with_a_hostile_argument(
    shop: Any, served: Any, browser: Any, shots: Path
) -> None:
    ref = shop.flaky.delay(HOSTILE_ARG)
    shop.work()
    with served(create_app(shop.app)) as base:
        browser.get(f"{base}/tasks")
        click(browser, f'tr[data-task="{ref.id}"] a')
        wait(browser, lambda d: d.find_elements(By.ID, "timeline"), "no task page")
        events = [
            r.find_elements(By.TAG_NAME, "td")[1].text
            for r in browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
        ]
        assert events[0] == "enqueued" and "started" in events and events[-1] == "dead", events
        assert HOSTILE_ARG in browser.find_element(By.ID, "args").text, "the argument shows as text"
        assert browser.execute_script("return window.__pwned === undefined"), "the argument ran"
        assert "RuntimeError" in browser.find_element(By.ID, "traceback").text
        browser.save_screenshot(str(shots / "task.png"))
        browser.get(f"{base}/plugins")
        assert "dashboard" in browser.find_element(By.ID, "plugins").text
        browser.save_screenshot(str(shots / "plugins.png"))


def test_a_task_page_lists_its_parents_and_dependents(
    shop: Any, served: Any, browser: Any, shots: Path
) -> None:
    parent = shop.report.delay(1)
    mail = shop.send_mail.apply(["ann@example.com"], depends_on=[parent.id])
    other = shop.report.apply([2], depends_on=[parent.id])
    with served(create_app(shop.app)) as base:
        browser.get(f"{base}/tasks/{parent.id}")
        wait(browser, lambda d: d.find_elements(By.ID, "dependents"), "no dependents listed")
        rows = browser.find_elements(By.CSS_SELECTOR, "#dependents tr")
        assert sorted(r.find_elements(By.TAG_NAME, "td")[0].text for r in rows) == sorted(
            [mail.id, other.id]
        )
        assert {r.find_elements(By.TAG_NAME, "td")[2].text for r in rows} == {"waiting"}
        browser.save_screenshot(str(shots / "task-dependents.png"))
        click(browser, f'#dependents a[href$="{mail.id}"]')
        wait(browser, lambda d: mail.id in d.current_url, "the dependent's page did not open")
        assert parent.id in browser.find_element(By.CSS_SELECTOR, "main").text, "its parent shows"
        shop.work()
        browser.get(f"{base}/tasks/{parent.id}")
        wait(
            browser,
            lambda d: (
                {
                    r.find_elements(By.TAG_NAME, "td")[2].text
                    for r in d.find_elements(By.CSS_SELECTOR, "#dependents tr")
                }
                == {"succeeded"}
            ),
            "the dependents ran after their parent and still show",
        )


def test_the_workers_page_shows_a_registered_worker(
    shop: Any, served: Any, browser: Any, shots: Path
) -> None:
    import asyncio
    import time

    from omniq import AsyncOmniQ
    from omniq.models import WorkerInfo

    now = time.time()
    info = WorkerInfo(
        id="w-browser-1", host="build-7", pid=321, pool="async", concurrency=10,
        queues=("default",), started_at=now - 30, heartbeat_at=now, in_flight=2, version="0.1.0",
    )  # fmt: skip

    async def register() -> None:  # as a worker process does, through its own app
        async with AsyncOmniQ(task_queue=shop.url) as worker_app:
            await worker_app.task_queue.register_worker(info, 120.0)

    asyncio.run(register())
    with served(create_app(shop.app)) as base:
        browser.get(f"{base}/")
        click(browser, 'header a[href$="/workers"]')
        table = wait(browser, lambda d: d.find_elements(By.ID, "workers"), "no workers table")
        assert "w-browser-1" in table[0].text and "build-7" in table[0].text
        browser.save_screenshot(str(shots / "workers.png"))
