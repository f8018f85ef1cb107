"""Every protection of the dashboard, each with a test that fails if it breaks: closed without
credentials, Bearer without CSRF, the login cookie with CSRF, cross-site refusal, read-only
roles, loopback-only without auth, a nonce-based CSP, and escaped hostile text."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from conveyor import Conveyor
from conveyor.web import Role, TokenAuth
from tests.web.conftest import BASE, TOKEN, connect, insert, make_dead

BEARER = {"authorization": f"Bearer {TOKEN}"}
SAME = {"origin": BASE, "sec-fetch-site": "same-origin"}
X = "<script>alert(1)</script>"
SENTINEL = "sentinel-7f3a"
OPEN_PATHS = ("/login", "/logout")


def routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every route but login/logout."""
    out = []
    for route in client.app.routes:
        if isinstance(route, Route) and route.path not in OPEN_PATHS:
            path = route.path.replace("{id}", "1").replace("{name}", "default")
            for method in sorted((route.methods or set()) - {"HEAD"}):
                out.append((method, path))
    return out


def pages(client: TestClient) -> list[str]:
    return [p for m, p in routes(client)
            if m == "GET" and not p.startswith("/api") and p != "/metrics"]


def action_routes(client: TestClient) -> list[str]:
    return [p for m, p in routes(client) if m == "POST"]


def with_data(app: Conveyor) -> int:
    [job] = make_dead(app, name=SENTINEL, queue=SENTINEL, message=SENTINEL)
    return job


def request(client: TestClient, method: str, path: str, **kw: Any) -> Any:
    return client.request(method, path, **kw)


def assert_shut(client: TestClient, expect: set[int], **kw: Any) -> None:
    routes_seen = routes(client)
    assert len(routes_seen) > 15
    for method, path in routes_seen:
        response = request(client, method, path, **kw)
        assert response.status_code in expect, (method, path, response.status_code)
        assert SENTINEL not in response.text, (method, path)
        if response.status_code == 303:
            assert response.headers["location"].startswith("/login?next="), path


# --- closed without credentials --------------------------------------------------------------------
def test_token_auth_shows_nothing_without_the_token(web_app: Conveyor) -> None:
    with_data(web_app)
    client = connect(web_app, auth=TOKEN)
    assert_shut(client, {401, 303})
    for path in ("/api/jobs", "/metrics", "/api/openapi.json"):
        response = client.get(path)
        assert response.status_code == 401 and response.json() == {"error": "authentication required"}
    assert client.get("/queues").headers["location"] == "/login?next=/queues"
    assert_shut(client, {401, 303}, headers={"authorization": "Bearer wrong-token-xyz"})
    client.cookies.set("conveyor_session", "e30.forged")
    assert_shut(client, {401, 303})


def test_basic_auth_challenges_and_admits_the_right_user(web_app: Conveyor) -> None:
    with_data(web_app)
    client = connect(web_app, auth=("ada", "correct horse"))
    assert_shut(client, {401})
    assert client.get("/").headers["www-authenticate"].startswith("Basic realm=")
    good = {"authorization": "Basic " + base64.b64encode(b"ada:correct horse").decode()}
    bad = {"authorization": "Basic " + base64.b64encode(b"ada:wrong").decode()}
    assert client.get("/api/jobs", headers=good).status_code == 200
    assert client.get("/api/jobs", headers=bad).status_code == 401
    # a browser's basic credentials are ambient: its state changes need the CSRF token
    assert client.post("/api/queues/default/pause", headers={**good, **SAME}).status_code == 403
    assert client.post("/api/queues/default/pause", headers=good).status_code == 200  # a script


def test_callable_auth_decides_roles(web_app: Conveyor) -> None:
    with_data(web_app)
    roles = {"ops": "operator", "bob": "viewer"}
    client = connect(web_app, auth=lambda request: roles.get(request.headers.get("x-user", "")))
    assert_shut(client, {401})
    assert client.get("/api/jobs", headers={"x-user": "bob"}).status_code == 200
    assert client.post("/api/queues/default/pause", headers={"x-user": "bob"}).status_code == 403
    assert client.post("/api/queues/default/pause", headers={"x-user": "ops", **SAME}).status_code == 403
    assert client.post("/api/queues/default/pause", headers={"x-user": "ops"}).status_code == 200


def test_no_auth_answers_loopback_only(web_app: Conveyor) -> None:
    with_data(web_app)
    assert connect(web_app).get("/api/jobs").status_code == 200
    remote = connect(web_app, client=("10.1.2.3", 40000), base_url="http://10.0.0.1:8000")
    assert_shut(remote, {403})
    assert "no auth configured" in remote.get("/api/jobs").json()["error"]
    local = connect(web_app)
    for proxy in ({"x-forwarded-for": "1.2.3.4"}, {"forwarded": "for=1.2.3.4"}, {"x-real-ip": "1.2.3.4"}):
        assert_shut(local, {403}, headers=proxy)
    assert_shut(local, {403}, headers={"host": "attacker.example:8000"})  # DNS rebinding


# --- acting: bearer, cookie + CSRF, cross-site --------------------------------------------------------
def test_bearer_acts_without_csrf(web_app: Conveyor) -> None:
    client = connect(web_app, auth=TOKEN)
    assert client.post("/api/queues/mail/pause", headers=BEARER).json() == {"queue": "mail", "paused": True}
    assert web_app.store.audit_list()[0].actor == "token"


def test_login_form_sets_a_strict_cookie_and_cookie_posts_need_csrf(web_app: Conveyor) -> None:
    client = connect(web_app, auth=TOKEN)
    assert client.get("/login").status_code == 200
    wrong = client.post("/login", data={"token": "nope-nope-nope", "next": "/queues"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    cross = client.post("/login", data={"token": TOKEN}, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403 and "set-cookie" not in cross.headers
    signed_in = client.post("/login", data={"token": TOKEN, "next": "/queues"})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/queues"
    cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "conveyor_session=" in cookie
    assert client.get("/api/queues").status_code == 200  # the cookie is kept by the client
    assert client.post("/api/queues/mail/pause", headers=SAME).status_code == 403
    assert client.post("/api/queues/mail/pause").status_code == 403  # no CSRF, no Origin either
    csrf = client.app.state.web.gate.csrf_token(client.app.state.web.gate.session(
        client.cookies["conveyor_session"]))
    assert client.post("/api/queues/mail/pause", headers={**SAME, "x-csrf-token": csrf}).status_code == 200
    for foreign in ({"sec-fetch-site": "cross-site"}, {"origin": "http://evil.example"},
                    {"origin": "null"}, {"sec-fetch-site": "same-site"}):
        refused = client.post("/api/queues/mail/resume", headers={"x-csrf-token": csrf, **foreign})
        assert refused.status_code == 403, foreign
    assert [e.action for e in web_app.store.audit_list()] == ["pause"]


def test_cross_site_is_refused_even_with_the_bearer_token(web_app: Conveyor) -> None:
    client = connect(web_app, auth=TOKEN)
    for foreign in ({"sec-fetch-site": "cross-site"}, {"origin": "http://evil.example"}):
        for path in action_routes(client):
            assert client.post(path, headers={**BEARER, **foreign}).status_code == 403, path
    assert web_app.store.audit_list() == []


@pytest.mark.parametrize("options", [
    {"auth": TOKEN, "read_only": True}, {"auth": TokenAuth(TOKEN, role=Role.VIEWER)},
])
def test_viewers_may_not_act(web_app: Conveyor, options: dict[str, Any]) -> None:
    [dead] = make_dead(web_app)
    client = connect(web_app, **options)
    assert client.get("/api/jobs", headers=BEARER).status_code == 200
    for path in action_routes(client):
        response = client.post(path.replace("/jobs/1/", f"/jobs/{dead}/"), headers=BEARER,
                               json={"name": "add", "args": [1, 2], "action": "retry", "ids": [dead]})
        assert response.status_code == 403, path
        assert "read-only" in response.json()["error"]
    assert web_app.store.audit_list() == [] and web_app.client.get(dead).state == "dead"


# --- what a browser is given ----------------------------------------------------------------------------
def test_every_html_response_has_a_nonce_csp_and_no_inline_code(web_app: Conveyor) -> None:
    job = with_data(web_app)
    client = connect(web_app)
    paths = [p.replace("/jobs/1", f"/jobs/{job}") for p in pages(client)] + ["/login"]
    html_seen = 0
    for path in paths:
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        if not response.headers.get("content-type", "").startswith("text/html"):
            continue
        html_seen += 1
        nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
        assert nonce, csp
        assert "unsafe-inline" not in csp
        for tag in re.findall(r"<script\b[^>]*>", response.text):
            assert f'nonce="{nonce.group(1)}"' in tag and "src=" in tag, (path, tag)
        assert not re.search(r"\son[a-z]+\s*=", response.text), path
        assert not re.search(r"\sstyle\s*=", response.text), path
        assert response.headers["x-frame-options"] == "DENY"
    assert html_seen >= 8
    assert connect(web_app).get("/api/jobs").headers["content-security-policy"]


def test_hostile_text_is_escaped_in_the_api_and_the_pages(web_app: Conveyor) -> None:
    insert(web_app, name=X, queue=X, args=f'["{X}"]', kwargs=f'{{"{X}": "{X}"}}')
    [dead] = make_dead(web_app, name=X, queue="dead-q", args=f'["{X}"]', message=X, traceback=X,
                       error_class=X)
    web_app.store.audit_add(X, X, X, X)
    client = connect(web_app)
    for path in ("/api/jobs", f"/api/jobs/{dead}", "/api/queues", "/api/audit",
                 f"/api/jobs?q={X}", "/api/operations"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "<script>alert(1)" not in response.text, path
    detail = client.get(f"/api/jobs/{dead}").json()
    assert detail["name"] == X and detail["args"] == [X] and detail["errors"][0]["message"] == X
    assert X in {q["queue"] for q in client.get("/api/queues").json()["queues"]}
    for path in [p.replace("/jobs/1", f"/jobs/{dead}") for p in pages(client)]:
        page = client.get(path)
        assert "<script>alert(1)" not in page.text, path
    assert "&lt;script&gt;alert(1)" in client.get(f"/jobs/{dead}").text
