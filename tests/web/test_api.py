"""The JSON API on both stores: reads with keyset pages and search, enqueue by name, actions on
jobs, queues and schedules (each audited), one-line errors that store nothing, and bulk
operations that run in the background with progress."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from conveyor import Conveyor
from conveyor.models import JobState, ProcessRecord
from conveyor.web import bulk
from conveyor.web.auth import Identity, Role
from tests.web.conftest import BASE, connect, insert, job_ids, make_dead


def one_line_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and body["error"], body
    return str(body["error"])


def actions(app: Conveyor) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.target) for e in app.store.audit_list(limit=1000)]


# --- reading jobs -------------------------------------------------------------------------------
def test_a_job_reads_as_spec_says_and_an_unknown_id_is_404(web_app: Conveyor) -> None:
    api = connect(web_app)
    [dead] = make_dead(web_app, message="no luck", traceback="Traceback: line 1")
    body = api.get(f"/api/jobs/{dead}").json()
    for key in ("id", "name", "queue", "state", "attempt", "result", "errors", "attempts", "logs"):
        assert key in body
    assert (body["id"], body["state"], body["attempt"]) == (dead, "dead", 1)
    assert body["errors"][0]["message"] == "no luck"
    assert body["errors"][0]["traceback"] == "Traceback: line 1"
    assert "no job" in one_line_error(api.get("/api/jobs/999999"), 404)
    one_line_error(api.get("/api/jobs/abc"), 400)
    one_line_error(api.get("/api/jobs/99999999999999999999999"), 400)


def test_lists_page_by_keyset_newest_first_with_filters(web_app: Conveyor) -> None:
    api = connect(web_app)
    ids = insert(web_app, 23) + insert(web_app, 4, queue="other", name="echo")
    seen: list[int] = []
    before: int | None = None
    while True:
        page = api.get("/api/jobs", params={"limit": 10, **({"before": before} if before else {})})
        body = page.json()
        seen += [j["id"] for j in body["jobs"]]
        before = body["next"]
        if before is None:
            break
    assert seen == sorted(ids, reverse=True)
    other = api.get("/api/jobs", params={"queue": "other"}).json()["jobs"]
    assert [j["name"] for j in other] == ["echo"] * 4
    assert len(api.get("/api/jobs", params={"name": "add", "state": "ready"}).json()["jobs"]) == 23
    assert api.get("/api/jobs", params={"state": "dead"}).json() == {"jobs": [], "next": None}
    for bad in ({"state": "sleeping"}, {"limit": 0}, {"limit": 100000}, {"before": "x"}):
        one_line_error(api.get("/api/jobs", params=bad), 400)


def test_search_finds_arguments_and_errors_a_page_at_a_time(web_app: Conveyor) -> None:
    api = connect(web_app)
    insert(web_app, 30)
    wanted = insert(web_app, 3, args='["order-NEEDLE-7"]')
    failed = make_dead(web_app, message="card declined: needle 100%")
    insert(web_app, 30)
    found = api.get("/api/jobs", params={"q": "needle"}).json()
    assert {j["id"] for j in found["jobs"]} == {*wanted, *failed}
    assert api.get("/api/jobs", params={"q": "100%"}).json()["jobs"][0]["id"] == failed[0]
    seen: list[int] = []
    params: dict[str, Any] = {"q": "needle", "limit": 2}
    for _ in range(10):
        body = api.get("/api/jobs", params=params).json()
        seen += [j["id"] for j in body["jobs"]]
        if body["next"] is None:
            break
        params["before"] = body["next"]
    assert sorted(seen) == sorted([*wanted, *failed])


# --- enqueue by name --------------------------------------------------------------------------
def test_enqueue_by_name_stores_the_job_and_audits_it(web_app: Conveyor) -> None:
    api = connect(web_app)
    created = api.post("/api/jobs", json={"name": "echo", "args": [1, "a"], "kwargs": {"k": 2},
                                          "priority": 5})
    assert created.status_code == 201, created.text
    job = web_app.client.get(created.json()["id"])
    assert (job.name, job.queue, job.priority, job.state) == ("echo", "mail", 5, JobState.READY)
    later = api.post("/api/jobs", json={"name": "add", "args": [1, 2], "queue": "slow", "delay": 60})
    assert web_app.client.get(later.json()["id"]).state is JobState.SCHEDULED
    assert ("local", "enqueue", f"job {job.id}") in actions(web_app)


@pytest.mark.parametrize("body", [
    b"{not json", b"[1, 2]", b'{"args": [1]}', b'{"name": "nope:missing", "args": []}',
    b'{"name": "add", "args": {"a": 1}}', b'{"name": "add", "args": [1]}',
    b'{"name": "add", "args": [1, 2], "kwargs": [1]}',
    b'{"name": "add", "args": [1, 2], "priority": "hi"}',
    b'{"name": "add", "args": [1, 2], "queue": "bad:queue"}',
    b'{"name": "add", "args": [1, 2], "delay": "soon"}',
    b'{"name": "add", "args": [1, 2], "kwargs": {"connection": 1}}',
    b'{"name": "os:system", "args": ["true"]}',
])
def test_bad_enqueue_is_400_in_one_line_and_stores_nothing(web_app: Conveyor, body: bytes) -> None:
    api = connect(web_app)
    response = api.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    one_line_error(response, 400)
    assert job_ids(web_app) == []
    assert actions(web_app) == []


def test_enqueue_can_be_turned_off_and_needs_an_operator(web_app: Conveyor) -> None:
    off = connect(web_app, enqueue=False).post("/api/jobs", json={"name": "add", "args": [1, 2]})
    assert "turned off" in one_line_error(off, 403)
    viewer = connect(web_app, read_only=True).post("/api/jobs", json={"name": "add", "args": [1, 2]})
    one_line_error(viewer, 403)
    assert job_ids(web_app) == []


# --- acting on jobs -------------------------------------------------------------------------------
def test_retry_discard_cancel_answer_by_the_jobs_state(web_app: Conveyor) -> None:
    api = connect(web_app)
    dead, gone = make_dead(web_app, 2)
    [waiting] = insert(web_app)
    assert api.post(f"/api/jobs/{dead}/retry").json() == {"id": dead, "retry": "done"}
    assert web_app.client.get(dead).state is JobState.READY
    assert "only dead" in one_line_error(api.post(f"/api/jobs/{dead}/retry"), 409)
    assert api.post(f"/api/jobs/{gone}/discard").status_code == 200
    one_line_error(api.post(f"/api/jobs/{gone}/discard"), 404)
    one_line_error(api.post(f"/api/jobs/{gone}/retry"), 404)
    assert api.post(f"/api/jobs/{waiting}/cancel").json()["state"] == "cancelled"
    one_line_error(api.post("/api/jobs/424242/cancel"), 404)
    one_line_error(api.post("/api/jobs/x/cancel"), 400)
    [claimed] = web_app.store.job_claim("w-test", "dead-q", 10)
    assert claimed.id == dead
    assert "running" in one_line_error(api.post(f"/api/jobs/{dead}/discard"), 409)
    done = actions(web_app)
    for entry in (("local", "retry", f"job {dead}"), ("local", "discard", f"job {gone}"),
                  ("local", "cancel", f"job {waiting}")):
        assert entry in done
    assert len(done) == 3  # refused actions are not recorded as done


def test_a_page_form_post_needs_csrf_and_goes_back_to_next(web_app: Conveyor) -> None:
    asgi_client = connect(web_app)
    [dead] = make_dead(web_app)
    form = {"next": "/dead?queue=x"}
    browser = {"origin": BASE, "sec-fetch-site": "same-origin"}
    refused = asgi_client.post(f"/api/jobs/{dead}/retry", data=form, headers=browser)
    assert refused.status_code == 403
    csrf = asgi_client.app.state.web.gate.csrf_token(Identity("local", Role.OPERATOR, "loopback"))
    done = asgi_client.post(f"/api/jobs/{dead}/retry", data={**form, "csrf": csrf}, headers=browser)
    assert done.status_code == 303 and done.headers["location"] == "/dead?queue=x"
    offsite = asgi_client.post(f"/api/jobs/{dead}/cancel",
                               data={"next": "//evil.example/", "csrf": csrf}, headers=browser)
    assert offsite.headers["location"] == "/"


# --- queues, workers, schedules, doctor, history, audit ------------------------------------------------
def test_queues_pause_and_resume(web_app: Conveyor) -> None:
    api = connect(web_app)
    insert(web_app, 3, queue="mail")
    assert api.post("/api/queues/mail/pause").json() == {"queue": "mail", "paused": True}
    [mail] = [q for q in api.get("/api/queues").json()["queues"] if q["queue"] == "mail"]
    assert mail["paused"] and mail["ready"] == 3
    api.post("/api/queues/mail/resume")
    assert not next(q for q in api.get("/api/queues").json()["queues"] if q["queue"] == "mail")["paused"]
    one_line_error(api.post("/api/queues/bad:name/pause"), 400)
    assert ("local", "pause", "queue mail") in actions(web_app)
    assert ("local", "resume", "queue mail") in actions(web_app)


def test_workers_show_their_running_jobs(web_app: Conveyor) -> None:
    now = datetime.now(UTC)
    web_app.store.process_register(ProcessRecord(
        id="w-test", kind="worker", host="box-1", pid=42, started_at=now, heartbeat_at=now,
        queues=("default",), concurrency=4))
    insert(web_app, 2)
    running = sorted(j.id for j in web_app.store.job_claim("w-test", "default", 10))
    [worker] = connect(web_app).get("/api/workers").json()["workers"]
    assert (worker["host"], worker["pid"], sorted(worker["jobs"])) == ("box-1", 42, running)


def test_schedules_list_run_pause_resume(web_app: Conveyor) -> None:
    @web_app.cron("@hourly", name="hourly-report")
    def report() -> None:
        pass

    api = connect(web_app)
    [schedule] = api.get("/api/schedules").json()["schedules"]
    assert schedule["name"] == "hourly-report"
    ran = api.post("/api/schedules/hourly-report/run").json()
    assert web_app.client.get(ran["id"]).state is JobState.READY
    api.post("/api/schedules/hourly-report/pause")
    assert api.get("/api/schedules").json()["schedules"][0]["state"] == "paused"
    api.post("/api/schedules/hourly-report/resume")
    assert api.get("/api/schedules").json()["schedules"][0]["state"] == "active"
    one_line_error(api.post("/api/schedules/nothing/run"), 404)
    assert ("local", "schedule run", "schedule hourly-report") in actions(web_app)


def test_doctor_history_and_audit(web_app: Conveyor) -> None:
    api = connect(web_app)
    insert(web_app, 5)
    assert api.get("/api/doctor").json()["status"] in ("warnings", "problems")
    web_app.store.history_sample(datetime.now(UTC))
    history = api.get("/api/history", params={"minutes": 10}).json()["history"]
    assert sum(m["enqueued"] for m in history) == 5
    one_line_error(api.get("/api/history", params={"minutes": 0}), 400)
    for n in range(3):
        api.post(f"/api/queues/q{n}/pause")
    first = api.get("/api/audit", params={"limit": 2}).json()
    assert [e["target"] for e in first["entries"]] == ["queue q2", "queue q1"]
    rest = api.get("/api/audit", params={"limit": 2, "before": first["next"]}).json()
    assert [e["target"] for e in rest["entries"]] == ["queue q0"] and rest["next"] is None


# --- bulk operations -----------------------------------------------------------------------------------
def wait_done(api: Any, op_id: int, timeout: float = 120) -> list[dict[str, Any]]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = api.get(f"/api/operations/{op_id}").json()
        seen.append(op)
        if op["state"] != "running":
            return seen
        time.sleep(0.01)
    raise AssertionError(f"operation {op_id} still running after {timeout}s: {seen[-1]}")


def test_bulk_discard_of_ten_thousand_dead_jobs_shows_progress(
    web_app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK_PAUSE", 0.05)  # slow enough to watch it go
    api = connect(web_app)
    make_dead(web_app, 10_000)
    keep = make_dead(web_app, 5, queue="keep")
    [ready] = insert(web_app, queue="dead-q")
    started = time.monotonic()
    answer = api.post("/api/jobs/bulk", json={"action": "discard", "state": "dead", "queue": "dead-q"})
    assert answer.status_code == 202 and time.monotonic() - started < 2
    op = answer.json()["operation"]
    assert op["state"] == "running" and op["action"] == "discard"
    seen = wait_done(api, op["id"])
    done = [s["done"] for s in seen]
    assert done == sorted(done) and any(0 < d < 10_000 for d in done), done[:20]
    last = seen[-1]
    assert (last["state"], last["done"], last["total"], last["changed"]) == ("done", 10_000, 10_000, 10_000)
    assert job_ids(web_app, states=(JobState.DEAD,)) == sorted(keep, reverse=True)
    assert job_ids(web_app, queue="dead-q") == [ready]
    assert ("local", "bulk discard", f"operation {op['id']}") in actions(web_app)
    assert api.get("/api/operations").json()["operations"][0]["id"] == op["id"]


def test_bulk_retry_by_ids_or_search(web_app: Conveyor) -> None:
    api = connect(web_app)
    chosen = make_dead(web_app, 3)
    matching = make_dead(web_app, 2, message="timeout talking to bank")
    op = api.post("/api/jobs/bulk", json={"action": "retry", "ids": chosen[:2]}).json()["operation"]
    assert wait_done(api, op["id"])[-1]["changed"] == 2
    op = api.post("/api/jobs/bulk", json={"action": "retry", "state": "dead", "q": "bank"}).json()
    assert wait_done(api, op["operation"]["id"])[-1]["changed"] == 2
    assert job_ids(web_app, states=(JobState.DEAD,)) == [chosen[2]]
    assert set(job_ids(web_app, states=(JobState.READY,))) == {*chosen[:2], *matching}


def test_the_bulk_thread_ends_when_idle_and_comes_back(
    web_app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "IDLE_EXIT", 0.05)
    api = connect(web_app)
    for _ in range(2):
        make_dead(web_app, 3)
        op = api.post("/api/jobs/bulk", json={"action": "discard", "state": "dead"}).json()
        assert wait_done(api, op["operation"]["id"])[-1]["changed"] == 3
        runner = api.app.state.web.extras["bulk"]
        deadline = time.monotonic() + 10
        while runner._thread is not None:
            assert time.monotonic() < deadline, "the idle bulk thread did not end"
            time.sleep(0.02)


@pytest.mark.parametrize("body", [
    {"action": "explode", "state": "dead"}, {"action": "discard"}, {"action": "retry", "ids": "1,2"},
    {"action": "retry", "ids": ["x"]}, {"action": "retry", "state": "nope"},
])
def test_bad_bulk_requests_are_400(web_app: Conveyor, body: dict[str, Any]) -> None:
    api = connect(web_app)
    one_line_error(api.post("/api/jobs/bulk", json=body), 400)
    assert api.get("/api/operations").json() == {"operations": []}
    one_line_error(api.get("/api/operations/7"), 404)



# --- redaction ------------------------------------------------------------------------------------
def test_sensitive_arguments_never_leave_through_the_api(web_app: Conveyor) -> None:
    secret = "hunter2-Zq9"
    [job] = insert(web_app, name="echo", sensitive=("password", "card"),
                   args=f'[{{"card": "{secret}", "n": 1}}]',
                   kwargs=f'{{"password": "{secret}", "user": "ada", "nested": {{"card": "{secret}"}}}}')
    api = connect(web_app)
    shown = [api.get("/api/jobs").text, api.get(f"/api/jobs/{job}").text,
             api.get("/api/jobs", params={"q": secret}).text,
             api.get("/api/jobs", params={"q": "hunter2"}).text]
    assert sum(text.count(secret) for text in shown) == 0
    assert api.get("/api/jobs", params={"q": "hunter2"}).json()["jobs"] == []
    assert [j["id"] for j in api.get("/api/jobs", params={"q": "ada"}).json()["jobs"]] == [job]
    assert api.get(f"/api/jobs/{job}").json()["kwargs"]["user"] == "ada"


def test_a_corrupted_row_is_one_line_in_the_api_and_the_page(web_app: Conveyor) -> None:
    """A row edited by hand into something this code cannot read: one line saying which job
    and why, status 500, and the other jobs still listed."""
    bad, good = make_dead(web_app, 2)
    set_outcome(web_app, bad, "exploded")
    web = connect(web_app)
    answer = web.get(f"/api/jobs/{bad}")
    assert answer.status_code == 500
    assert answer.json()["error"].startswith(f"job {bad}: its attempt 1 cannot be read")
    page = web.get(f"/jobs/{bad}")
    assert page.status_code == 500 and "\n" not in page.text.strip() and "exploded" in page.text
    assert web.get(f"/api/jobs/{good}").status_code == 200
    assert {j["id"] for j in web.get("/api/jobs?state=dead").json()["jobs"]} == {bad, good}
    set_outcome(web_app, bad, "error")  # mended by hand: nothing was lost
    assert web.get(f"/api/jobs/{bad}").json()["errors"][0]["error_class"] == "ValueError"


def set_outcome(app: Conveyor, job_id: int, outcome: str) -> None:
    url = app.store.url
    if url.startswith("sqlite"):
        import sqlite3

        from conveyor.store.sqlite import sqlite_path

        with sqlite3.connect(sqlite_path(url)) as conn:
            conn.execute("UPDATE conveyor_attempts SET outcome = ? WHERE job_id = ?", (outcome, job_id))
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE conveyor_attempts SET outcome = %s WHERE job_id = %s", (outcome, job_id))


def test_unknown_fields_paths_and_methods_are_one_line_json(web_app: Conveyor) -> None:
    api = connect(web_app)
    typo = api.post("/api/jobs", json={"name": "add", "args": [1, 2], "queu": "x"})
    assert typo.status_code == 400 and "unknown field 'queu'" in typo.json()["error"]
    assert job_ids(web_app) == []  # nothing stored
    assert api.get("/api/nothing").json() == {"error": "nothing at /api/nothing"}
    wrong = api.delete("/api/jobs/1")
    assert wrong.status_code == 405 and wrong.json()["error"] == "DELETE is not allowed on /api/jobs/1"
    assert "GET" in wrong.headers["allow"]


def test_basic_auth_dashboards_in_several_processes_accept_each_others_csrf_tokens(
    web_app: Conveyor,
) -> None:
    from conveyor.web.auth import Gate

    one, two = Gate(("admin", "pw")), Gate(("admin", "pw"))
    who = Identity("admin", Role.OPERATOR, "basic")
    assert two.csrf_ok(who, one.csrf_token(who))
    assert not Gate(("admin", "other")).csrf_ok(who, one.csrf_token(who))


def test_a_unique_jobs_key_never_shows_a_hash_of_its_sensitive_arguments(web_app: Conveyor) -> None:
    """The default unique key hashes every argument: shown, it would let a viewer test
    guesses of a password offline."""
    job = web_app.job(name="login", sensitive=["password"], unique=True)(lambda user, password: None)
    handle = job.enqueue("ann", "hunter2")
    key = web_app.client.get(handle.id).unique_key
    assert key  # the store still has it: uniqueness works
    shown = connect(web_app).get(f"/api/jobs/{handle.id}").json()
    assert shown["unique_key"] == "[redacted]" and shown["args"] == ["ann", "[redacted]"]
    assert key.rsplit(":", 1)[-1] not in connect(web_app).get(f"/jobs/{handle.id}").text


def test_a_nul_in_a_search_or_filter_is_bad_input_not_an_outage(web_app: Conveyor) -> None:
    web = connect(web_app)
    for query in ({"q": "a\x00"}, {"name": "a\x00"}, {"queue": "\x00"}):
        answer = web.get("/api/jobs", params=query)
        assert answer.status_code == 400 and "NUL" in answer.json()["error"]
        page = web.get("/jobs", params=query)
        assert page.status_code == 400 and "NUL" in page.text


def test_an_operation_is_found_only_in_the_process_that_runs_it(web_app: Conveyor) -> None:
    """Two processes serving one dashboard (uvicorn --workers 2): asking the other one for an
    operation answers 404, never with an operation of its own that has the same number."""
    from conveyor.web import dashboard

    make_dead(web_app, 3)
    one = connect(web_app)
    two = TestClient(dashboard(web_app), base_url=BASE, client=("127.0.0.1", 5556))
    first = one.post("/api/jobs/bulk", json={"action": "retry", "state": "dead"}).json()["operation"]
    second = two.post("/api/jobs/bulk", json={"action": "discard", "state": "dead"}).json()["operation"]
    assert first["id"] != second["id"]
    assert two.get(f"/api/operations/{first['id']}").status_code == 404
    assert one.get(f"/api/operations/{first['id']}").json()["action"] == "retry"
