"""The dashboard's pages on both stores: each renders real data, lists page and search, hostile
text comes out escaped, and the read-only role sees no button."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

from starlette.testclient import TestClient

from conveyor import Conveyor
from conveyor.models import JobState, ProcessRecord
from tests.web.conftest import connect, insert, make_dead

PAGES = ("/", "/queues", "/jobs", "/dead", "/scheduled", "/schedules", "/workers", "/doctor",
         "/audit")
X = "<script>alert(1)</script>"


def ids_on(html: str) -> list[int]:
    """Job ids linked from a page's job table, in order."""
    table = html[html.find("<tbody>"):]
    return [int(i) for i in re.findall(r'<td><a href="/jobs/(\d+)">#', table)]


def older_link(html: str) -> str | None:
    found = re.search(r'<a class="older" href="([^"]+)"', html)
    return unescape(found.group(1)) if found else None


def forms(html: str, action_part: str) -> list[dict[str, str]]:
    """The POST forms whose action contains ``action_part``: action and hidden fields."""
    out = []
    for action, body in re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', html, re.S):
        if action_part in action:
            fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', body))
            out.append({"action": unescape(action), **{k: unescape(v) for k, v in fields.items()}})
    return out


def a_worker(app: Conveyor, queues: tuple[str, ...] = ("default",)) -> ProcessRecord:
    now = datetime.now(UTC)
    worker = ProcessRecord(id="w-page", kind="worker", host="web-host", pid=4242, started_at=now,
                           heartbeat_at=now, queues=queues, concurrency=4)
    app.store.process_register(worker)
    return worker


def test_every_page_renders_real_data(web_app: Conveyor) -> None:
    insert(web_app, 3, name="add", args="[1, 2]")
    scheduled = insert(web_app, 1, name="echo", queue="mail",
                       run_at=datetime.now(UTC) + timedelta(hours=1))[0]
    dead = make_dead(web_app, 2, message="card declined")
    web_app.cron("@hourly", web_app.registry.get("add"), name="hourly-add", args=(1, 2))
    a_worker(web_app)
    web_app.store.audit_add("ada", "pause", "queue mail")
    web_app.store.history_sample(datetime.now(UTC))
    web = connect(web_app)
    expected = {
        "/": ["Throughput", "Queue depth", "Latency", "dead-q", "<polyline"],
        "/queues": ["mail", "dead-q", "Pause"],
        "/jobs": [f"#{dead[0]}", "add", "echo"],
        "/dead": ["card declined", "Retry all matching", "Discard all matching"],
        "/scheduled": [f"#{scheduled}", "echo"],
        "/schedules": ["hourly-add", "Run now", "Pause"],
        "/workers": ["web-host", "4242", "default"],
        "/doctor": ["Doctor"],
        "/audit": ["ada", "pause", "queue mail"],
    }
    for path, needles in expected.items():
        page = web.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        for needle in needles:
            assert needle in page.text, f"{path} should show {needle!r}"
    assert ids_on(web.get("/scheduled").text) == [scheduled]
    assert ids_on(web.get("/dead").text) == sorted(dead, reverse=True)


def test_a_job_page_shows_every_attempt_its_keys_and_logs(web_app: Conveyor) -> None:
    [job_id] = make_dead(web_app, 1, message="card declined", traceback="Traceback: line 7",
                         unique_key="order-9", concurrency_key="acct-1", concurrency_max=2)
    web_app.store.job_log(job_id, 1, "charging the card")
    page = connect(web_app).get(f"/jobs/{job_id}")
    assert page.status_code == 200
    for needle in ("card declined", "Traceback: line 7", "order-9", "acct-1", "charging the card",
                   "Attempt 1", 'data-field="state">dead<', "Retry", "Discard"):
        assert needle in page.text, needle
    assert "/cancel" not in page.text, "a dead job cannot be cancelled"


def test_a_running_job_shows_its_progress_and_can_be_cancelled(web_app: Conveyor) -> None:
    [job_id] = insert(web_app, 1)
    [claimed] = web_app.store.job_claim("w-page", "default", 1)
    web_app.store.job_progress(job_id, claimed.lease or "", 42.5, "almost halfway")
    page = connect(web_app).get(f"/jobs/{job_id}").text
    assert 'aria-valuenow="42.5"' in page and "almost halfway" in page
    assert f"/api/jobs/{job_id}/cancel" in page
    assert f"/api/jobs/{job_id}/discard" not in page, "a running job cannot be discarded"


def test_unknown_job_and_operation_pages_answer_404(web_app: Conveyor) -> None:
    web = connect(web_app)
    assert web.get("/jobs/123456").status_code == 404
    assert web.get("/jobs/nope").status_code == 404
    assert web.get("/operations/77").status_code == 404


def test_hostile_names_arguments_errors_and_queues_come_out_escaped(web_app: Conveyor) -> None:
    insert(web_app, 1, name=X, queue="mail", args=f'["{X}"]', kwargs=f'{{"note": "{X}"}}')
    hostile_queue = make_dead(web_app, 1, name=X, queue="evil<q>", message=X,
                              traceback=f"Traceback\n  {X}", args=f'["{X}"]')[0]
    web_app.store.audit_add(X, X, X, X)
    web = connect(web_app)
    for path in (*PAGES, f"/jobs/{hostile_queue}", f"/jobs?q={X}", "/jobs?queue=evil%3Cq%3E"):
        page = web.get(path)
        assert page.status_code == 200, path
        assert X not in page.text, f"{path} shows the script unescaped"
        assert "<q>" not in page.text, f"{path} shows a queue name unescaped"
    detail = web.get(f"/jobs/{hostile_queue}").text
    assert detail.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # name, args, error, traceback


def test_jobs_page_by_id_with_older_links(web_app: Conveyor) -> None:
    ids = insert(web_app, 120)
    web, seen = connect(web_app), []
    path: str | None = "/jobs"
    pages = 0
    while path is not None:
        page = web.get(path).text
        seen += ids_on(page)
        path = older_link(page)
        pages += 1
    assert pages == 3
    assert seen == sorted(ids, reverse=True)
    assert "before=" in (older_link(web.get("/jobs?limit=10").text) or "")


def test_filters_by_state_queue_and_name(web_app: Conveyor) -> None:
    adds = insert(web_app, 2, name="add")
    dead = make_dead(web_app, 1, queue="mail")  # claims every ready job of its queue: first
    mails = insert(web_app, 2, name="echo", queue="mail")
    web = connect(web_app)
    assert ids_on(web.get("/jobs?queue=mail").text) == sorted(mails + dead, reverse=True)
    assert ids_on(web.get("/jobs?name=add&state=ready").text) == sorted(adds, reverse=True)
    assert ids_on(web.get("/jobs?state=dead").text) == dead
    unknown = web.get("/jobs?state=nonsense")
    assert unknown.status_code == 200 and "no state" in unknown.text


def test_search_finds_by_argument_error_and_id_and_goes_on_older(web_app: Conveyor) -> None:
    insert(web_app, 5, args='["nothing here"]')
    needles = []
    for _ in range(5):
        needles += insert(web_app, 1, args='["order-NEEDLE-7"]')
        insert(web_app, 1, args="[0]")
    [failed] = make_dead(web_app, 1, message="gateway TIMEOUT at 3am")
    web = connect(web_app)
    assert ids_on(web.get("/jobs?q=needle").text) == sorted(needles, reverse=True)
    assert ids_on(web.get("/jobs?q=timeout at").text) == [failed]
    assert ids_on(web.get(f"/jobs?q={needles[0]}").text)[0] == needles[0]
    seen, path = [], "/jobs?q=needle&limit=2"
    while path:
        page = web.get(path).text
        seen += ids_on(page)
        path = older_link(page) or ""
    assert seen == sorted(needles, reverse=True)
    assert "Search older" in web.get("/jobs?q=needle&limit=2").text


def test_read_only_viewers_see_no_buttons(web_app: Conveyor) -> None:
    [dead] = make_dead(web_app, 1)
    web_app.cron("@hourly", web_app.registry.get("add"), name="hourly-add", args=(1, 2))
    operator, viewer = connect(web_app), connect(web_app, read_only=True)
    for path in ("/queues", "/dead", f"/jobs/{dead}", "/schedules"):
        assert forms(operator.get(path).text, "/api/"), f"an operator gets buttons on {path}"
        page = viewer.get(path)
        assert page.status_code == 200
        assert not forms(page.text, "/api/"), f"a viewer sees a button on {path}"
        assert 'type="checkbox"' not in page.text
    assert "read-only" in viewer.get("/").text


def test_the_buttons_on_a_page_work(web_app: Conveyor) -> None:
    """Submit the forms as the page renders them: token, next, action."""
    insert(web_app, 1, queue="mail")
    [dead] = make_dead(web_app, 1)
    web = connect(web_app)
    [pause] = forms(web.get("/queues").text, "/api/queues/mail/pause")
    answer = web.post(pause.pop("action"), data=pause)
    assert answer.status_code == 303 and answer.headers["location"] == "/queues"
    assert [q.paused for q in web_app.client.queues() if q.queue == "mail"] == [True]
    [retry] = forms(web.get(f"/jobs/{dead}").text, f"/api/jobs/{dead}/retry")
    assert web.post(retry.pop("action"), data=retry).headers["location"] == f"/jobs/{dead}"
    assert web_app.client.get(dead).state is JobState.READY


def test_bulk_discard_of_all_matching_shows_the_operation(web_app: Conveyor) -> None:
    make_dead(web_app, 30, queue="q1")
    keep = make_dead(web_app, 3, queue="q2")
    web = connect(web_app)
    [bulk] = [f for f in forms(web.get("/dead?queue=q1").text, "/api/jobs/bulk") if "queue" in f]
    answer = web.post(bulk.pop("action"), data={**bulk, "action": "discard"})
    assert answer.status_code == 303
    operation = answer.headers["location"]
    assert operation.startswith("/operations/")
    page = wait_for_operation(web, operation)
    assert 'aria-valuenow="30"' in page and ">done<" in page
    assert ids_on(web.get("/dead").text) == sorted(keep, reverse=True)


def wait_for_operation(web: TestClient, path: str, timeout: float = 20.0) -> str:
    import time

    deadline = time.monotonic() + timeout
    while True:
        page = web.get(path)
        assert page.status_code == 200
        if ">running<" not in page.text or time.monotonic() > deadline:
            return page.text
        time.sleep(0.05)


def test_overview_charts_come_from_the_stored_history(web_app: Conveyor) -> None:
    now = datetime.now(UTC)
    web_app.store.history_sample(now - timedelta(minutes=2))
    insert(web_app, 7)
    web_app.store.history_sample(now)
    page = connect(web_app).get("/").text
    assert page.count("<polyline") == 4
    assert re.search(r"Queue depth.*?<strong[^>]*>7 ready</strong>", page, re.S)


def test_pages_under_a_mount_prefix_link_inside_it(web_app: Conveyor) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from conveyor.web import dashboard

    host: Any = Starlette(routes=[Mount("/ops", dashboard(web_app))])
    web = TestClient(host, client=("127.0.0.1", 5555), base_url="http://127.0.0.1:8000")
    [dead] = make_dead(web_app, 1)
    page = web.get(f"/ops/jobs/{dead}").text
    assert 'href="/ops/static/app.css"' in page and f'action="/ops/api/jobs/{dead}/retry"' in page
    assert all(not href.startswith("/jobs") for href in re.findall(r'href="([^"]+)"', page))


def test_sensitive_arguments_are_redacted_and_never_found(web_app: Conveyor) -> None:
    [job_id] = insert(web_app, 1, kwargs='{"user": "ada", "password": "hunter2-secret"}',
                      sensitive=("password",))
    web = connect(web_app)
    assert ids_on(web.get("/jobs?q=hunter2").text) == []
    assert ids_on(web.get("/jobs?q=ada").text) == [job_id]
    for path in ("/jobs", f"/jobs/{job_id}", "/jobs?q=ada"):
        page = web.get(path).text
        assert "hunter2" not in page and "ada" in page, path


def test_retry_of_a_selection_of_dead_jobs(web_app: Conveyor) -> None:
    dead = make_dead(web_app, 5)
    web = connect(web_app)
    page = web.get("/dead").text
    assert all(f'name="ids" form="bulk-selection" value="{i}"' in page for i in dead)
    selection = forms(page, "/api/jobs/bulk")[0]  # the selection form comes first
    answer = web.post(selection.pop("action"), data={**selection, "action": "retry",
                                                     "ids": [str(i) for i in dead[:2]]})
    assert answer.status_code == 303
    assert 'aria-valuenow="2"' in wait_for_operation(web, answer.headers["location"])
    assert sorted(ids_on(web.get("/jobs?state=ready").text)) == sorted(dead[:2])
