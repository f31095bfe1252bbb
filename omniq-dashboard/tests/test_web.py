"""The dashboard over HTTP (no browser): escaping, CSRF, read-only, auth, paging,
mounting, and the command's refusal to serve other machines without auth."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from omniq.cli.root import cli
from omniq.models import TaskState
from omniq.testing import until
from omniq_dashboard import create_app

HOSTILE_ARG = "<script>window.__pwned = 1</script>"


def csrf(client: TestClient, path: str = "/dead") -> str:
    """The token the page's forms carry (also sets the cookie)."""
    page = client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "the page has no CSRF field"
    return match.group(1)


def test_every_page_renders(shop: Any) -> None:
    shop.dead("one")
    shop.send_mail.delay("a@example.com")
    with TestClient(create_app(shop.app)) as client:
        for path in ["/", "/tasks", "/dead", "/schedules", "/plugins", "/live/overview"]:
            page = client.get(path)
            assert page.status_code == 200, (path, page.text[:500])
        assert "<svg" in client.get("/").text, "the overview draws its charts server-side"


def test_store_strings_are_escaped(shop: Any) -> None:
    ref = shop.flaky.delay(HOSTILE_ARG)
    shop.work()
    with TestClient(create_app(shop.app)) as client:
        page = client.get(f"/tasks/{ref.id}").text
    assert HOSTILE_ARG not in page, "a task argument reached the page as markup"
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "cannot send &lt;script&gt;" in page, "the error message is escaped too"


def test_an_action_without_the_csrf_token_is_refused(shop: Any) -> None:
    dead = shop.dead("csrf")
    with TestClient(create_app(shop.app)) as client:
        token = csrf(client)
        missing = client.post("/dead/requeue", data={"task_id": dead}, follow_redirects=False)
        wrong = client.post(
            "/dead/requeue", data={"task_id": dead, "csrf_token": "x" * 43}, follow_redirects=False
        )
        assert (missing.status_code, wrong.status_code) == (403, 403)
        assert len(shop.app.list_tasks(queue="mail")) == 1, "a refused action changed nothing"
        done = client.post(
            "/dead/requeue", data={"task_id": dead, "csrf_token": token}, follow_redirects=False
        )
        assert done.status_code == 303
    states = sorted(t.state.value for t in shop.app.list_tasks(queue="mail"))
    assert states == ["dead", "pending"]


def test_read_only_offers_and_accepts_no_action(shop: Any) -> None:
    dead = shop.dead("ro")
    with TestClient(create_app(shop.app, read_only=True)) as client:
        page = client.get("/dead").text
        assert "Requeue selected" not in page and "read-only" in page
        assert "Requeue</button>" not in client.get(f"/tasks/{dead}").text
        token = csrf(client)
        answer = client.post("/dead/requeue", data={"task_id": dead, "csrf_token": token})
        assert answer.status_code == 403
    assert len(shop.app.list_tasks(queue="mail")) == 1


@pytest.mark.parametrize("spec", ["admin:s3cret-pw", "tok3n-abcdef"])
def test_auth_is_required_when_configured(shop: Any, spec: str) -> None:
    user, _, password = spec.rpartition(":")
    with TestClient(create_app(shop.app, auth=spec)) as client:
        refused = client.get("/")
        assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
        assert client.get("/", auth=(user or "any", "wrong")).status_code == 401
        assert client.get("/", auth=(user or "any", password)).status_code == 200
        bearer = client.get("/", headers={"Authorization": f"Bearer {password}"})
        assert bearer.status_code == (401 if user else 200), "a token also works as a bearer"


def test_command_refuses_another_address_without_auth() -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 2, result.output
    assert "--auth" in result.output and "0.0.0.0" in result.output


def test_task_list_pages_by_cursor_and_filters(shop: Any, task_rows: Any) -> None:
    refs = shop.app.enqueue_many(shop.send_mail, [(f"u{i}@example.com",) for i in range(120)])
    shop.report.delay(1)
    with TestClient(create_app(shop.app)) as client:
        seen: list[str] = []
        path = "/tasks?queue=mail"
        while path:
            page = client.get(path).text
            seen += task_rows(page)
            nxt = re.search(r'id="next-page" href="([^"]+)"', page)
            path = nxt.group(1).replace("&amp;", "&") if nxt else ""
        assert seen == [r.id for r in reversed(refs)], "every task once, newest first"
        named = task_rows(client.get("/tasks?name=shop.report").text)
        assert len(named) == 1
        later = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 120))
        earlier = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 120))
        assert task_rows(client.get(f"/tasks?since={later}").text) == []
        assert len(task_rows(client.get(f"/tasks?since={earlier}&until={later}").text)) == 50
        bad = client.get("/tasks?cursor=<b>nope")
        assert bad.status_code == 400 and "&lt;b&gt;nope" in bad.text
        assert client.get("/tasks?since=yesterday").status_code == 400


def test_masks_secrets_of_store_urls(shop: Any) -> None:
    from omniq import AsyncOmniQ

    app = AsyncOmniQ(
        task_queue=shop.url, event_storage="redis://ops:hunter2-secret@127.0.0.1:6379/3"
    )
    with TestClient(create_app(app)) as client:
        page = client.get("/plugins").text
    assert "hunter2-secret" not in page and "redis://ops:***@127.0.0.1:6379/3" in page


def test_mounts_under_a_prefix(shop: Any) -> None:
    shop.send_mail.delay("x")
    outer = Starlette(routes=[Mount("/ops/queues", app=create_app(shop.app))])
    with TestClient(outer) as client:
        page = client.get("/ops/queues/tasks").text
        link = re.search(r'href="(/ops/queues/tasks/[^"]+)"', page)
        assert link, "links carry the mount prefix"
        assert client.get(link.group(1)).status_code == 200
        assert client.get("/ops/queues/static/live.js").status_code == 200


def test_requeue_records_who_and_the_new_task(shop: Any) -> None:
    dead = shop.dead("who")
    new = shop.app.requeue(dead, by="ops@example")
    assert new.state is TaskState.PENDING and new.attempts == 0
    requeued = [e for e in shop.app.events(task_id=dead) if e.type.value == "requeued"]
    assert [(e.detail["by"], e.detail["to"]) for e in requeued] == [("ops@example", new.id)]


def test_requeue_many_records_the_user(shop: Any) -> None:
    dead = [shop.dead("one"), shop.dead("two")]
    with TestClient(create_app(shop.app, auth="ops:pa55")) as client:
        client.auth = ("ops", "pa55")
        token = csrf(client)
        done = client.post("/dead/requeue", data={"task_id": dead, "csrf_token": token})
        assert done.status_code == 200 and "Requeued 2 task(s)" in done.text
        for task_id in dead:
            assert f'<tr data-task="{task_id}">' in done.text, "the dead tasks stay, linked"
    states = sorted(t.state.value for t in shop.app.list_tasks(queue="mail"))
    assert states == ["dead", "dead", "pending", "pending"]
    events = [e for t in dead for e in shop.app.events(task_id=t) if e.type.value == "requeued"]
    assert [e.detail["by"] for e in events] == ["dashboard user ops (testclient)"] * 2


def test_the_workers_page_lists_the_registry_escaped(shop: Any) -> None:
    from omniq import AsyncOmniQ
    from omniq.models import WorkerInfo

    with TestClient(create_app(shop.app)) as client:
        assert "No live worker" in client.get("/workers").text
        info = WorkerInfo(
            id="w-dash-1",
            host=HOSTILE_ARG,
            pid=4242,
            pool="thread",
            concurrency=8,
            queues=("mail", "reports"),
            started_at=time.time() - 60,
            heartbeat_at=time.time(),
            in_flight=3,
            version="9.9.9",
        )

        async def register() -> None:  # as a worker process would, through its own app
            async with AsyncOmniQ(task_queue=shop.url) as worker_app:
                await worker_app.task_queue.register_worker(info, 60.0)

        asyncio.run(register())
        page = client.get("/workers").text
    assert "w-dash-1" in page and "4242" in page and "mail, reports" in page
    assert HOSTILE_ARG not in page and "&lt;script&gt;" in page


def test_the_overview_shows_states_a_task_can_be_in(shop: Any) -> None:
    """A task never ends ``failed`` (its last failed attempt leaves it ``dead``): a
    ``failed`` column of zeros beside the dead ones read as "nothing failed"."""
    shop.dead("gone")
    with TestClient(create_app(shop.app)) as client:
        page = client.get("/").text
        tasks = client.get("/tasks").text
    assert 'data-state="dead"' in page and 'data-state="failed"' not in page
    assert '<option value="dead"' in tasks and '<option value="failed"' not in tasks
    assert "no worker registry" not in page, "the stores keep one: the Workers page"
    assert 'href="/workers"' in page


def test_a_paused_schedule_shows_no_next_run(shop: Any) -> None:
    """Paused, it does not fire at its stored next run (`omniq schedules list` shows
    '-'); its time zone shows beside the cron expression."""
    shop.app.schedule(shop.report, name="nightly", args=(1,), cron="30 2 * * *", tz="Europe/Berlin")
    shop.app.pause_schedule("nightly")
    with TestClient(create_app(shop.app)) as client:
        page = client.get("/schedules").text
    row = re.search(r'<tr data-schedule="nightly">(.*?)</tr>', page, re.S)
    assert row, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert "Europe/Berlin" in cells[3], cells
    assert cells[4].strip() == "-" and "paused" in cells[6], cells


def test_a_stuck_task_shows_its_lapsed_lease_and_passed_ttl(shop: Any) -> None:
    """The task page named the worker of a running task but not its lease, so a task
    whose worker died read as running normally; a passed ttl did not show at all."""
    from omniq.registry import registry

    async def reserve_briefly() -> Any:
        async with registry.resolve("task_queue", shop.url) as queue:
            return await queue.reserve(["mail"], "gone-worker", 0.2)

    shop.send_mail.delay("held")
    [held] = asyncio.run(reserve_briefly())
    late = shop.app.enqueue("shop.report", queue="later", ttl=0.05)
    expires = shop.app.get_task(late.id).expires_at
    until(
        lambda: time.time() > max(held.lease_deadline, expires) + 0.1,
        "the lease and the ttl passed",
    )
    with TestClient(create_app(shop.app)) as client:
        running = client.get(f"/tasks/{held.id}").text
        waiting = client.get(f"/tasks/{late.id}").text
    assert re.search(r"gone-worker.*lease ran out at [\d: -]+ UTC, [\d.]+ s ago", running), running
    assert re.search(r"<dt>Expires</dt><dd>[\d: -]+ UTC \(passed", waiting), waiting
    assert "it will not run" in waiting


def test_a_store_that_does_not_answer_is_a_503_with_its_url_masked() -> None:
    """A PostgreSQL that is down answered 400 (the request's fault) to a monitor."""
    from omniq import AsyncOmniQ

    app = AsyncOmniQ(task_queue="postgresql://ops:hunter2-pw@127.0.0.1:1/x?connect_timeout=2")
    with TestClient(create_app(app)) as client:
        page = client.get("/")
    assert page.status_code == 503, page.status_code
    assert "cannot connect to PostgreSQL" in page.text and "hunter2-pw" not in page.text


def test_a_store_that_stops_answering_is_a_503(tmp_path: Any) -> None:
    """A PostgreSQL that hangs once the dashboard has connected (a stalled server, a
    network partition): new connections time out, which was a 500 (an internal error)
    instead of the outage's 503."""
    import os
    import socket
    import uuid

    pytest.importorskip("omniq_backend_postgres")
    from omniq import AsyncOmniQ
    from omniq.testing.proxies import forwarding
    from omniq.testing.services import require_service

    base = os.environ.get("OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    require_service("PostgreSQL", base)
    schema = f"dash_{uuid.uuid4().hex[:10]}"
    with forwarding(base) as proxy:
        host = base.split("@", 1)[1].split("/", 1)
        url = base.replace(host[0], f"127.0.0.1:{proxy.port}")
        # max_size=1: the store retries a failed connection at once max_size + 1 times
        # before its outage deadline starts, each up to connect_timeout against the silent
        # server; the default pool of 10 made this page take 13 s to say the same.
        options = "connect_timeout=1&outage_timeout=2&max_size=1"
        app = AsyncOmniQ(task_queue=f"{url}?schema={schema}&{options}")
        with TestClient(create_app(app), raise_server_exceptions=False) as client:
            assert client.get("/tasks").status_code == 200
            proxy.kill()  # its connections reset; then a server that accepts, silent
            silent = socket.socket()
            silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            silent.bind(("127.0.0.1", proxy.port))
            silent.listen(16)
            try:
                page = client.get("/tasks")
            finally:
                silent.close()

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())
    assert page.status_code == 503, (page.status_code, page.text[-400:])
    # (the store retries a connection that times out until outage_timeout, then names
    # the server as for any outage)
    assert "cannot connect to PostgreSQL" in page.text, page.text[-400:]
