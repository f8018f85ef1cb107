"""The OpenAPI document lists every API route with its full path and sits behind auth."""

from __future__ import annotations

from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from conveyor import Conveyor
from conveyor.web import dashboard
from tests.web.conftest import BASE, LOOPBACK, TOKEN, connect


def test_every_api_route_is_in_the_document_with_its_full_path(web_app: Conveyor) -> None:
    client = connect(web_app)
    doc = client.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    api_routes = [r for r in client.app.routes if isinstance(r, Route) and r.path.startswith("/api")]
    assert len(api_routes) >= 20
    for route in api_routes:
        assert route.path in doc["paths"], route.path
        for method in (route.methods or set()) - {"HEAD"}:
            operation = doc["paths"][route.path][method.lower()]
            assert operation["summary"] and operation["responses"], (method, route.path)
    assert "/api/jobs/{id}" in doc["paths"] and "get" in doc["paths"]["/api/jobs/{id}"]
    assert "/metrics" in doc["paths"]
    for stream in ("/api/jobs/{id}/events", "/api/events"):
        assert "text/event-stream" in doc["paths"][stream]["get"]["responses"]["200"]["content"]
    ids = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    enqueue = doc["paths"]["/api/jobs"]["post"]
    assert enqueue["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]
    assert {p["name"] for p in doc["paths"]["/api/jobs"]["get"]["parameters"]} >= {"q", "before", "limit"}


def test_the_document_needs_auth_like_everything_else(web_app: Conveyor) -> None:
    client = connect(web_app, auth=TOKEN)
    assert client.get("/api/openapi.json").status_code == 401
    signed = client.get("/api/openapi.json", headers={"authorization": f"Bearer {TOKEN}"})
    assert signed.status_code == 200 and signed.json()["paths"]
    assert connect(web_app, client=("10.9.9.9", 1), base_url="http://10.0.0.1").get(
        "/api/openapi.json").status_code == 403


def test_mounted_under_a_prefix_the_document_names_its_server(web_app: Conveyor) -> None:
    from starlette.applications import Starlette

    host = Starlette(routes=[Mount("/ops/jobs", dashboard(web_app))])
    client = TestClient(host, client=LOOPBACK, base_url=BASE)
    doc = client.get("/ops/jobs/api/openapi.json").json()
    assert doc["servers"] == [{"url": "/ops/jobs"}] and "/api/jobs/{id}" in doc["paths"]
    assert client.get("/ops/jobs/api/jobs").json() == {"jobs": [], "next": None}
