"""``conveyor worker --health-port``: what an orchestrator's probes see."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from conftest import Env, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(port: int, path: str) -> tuple[int, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
    except OSError:
        return None


def test_a_healthy_worker_is_live_and_ready(env: Env, app) -> None:
    port = free_port()
    worker = env.worker("--processes", "2", "--health-port", str(port), "--health-host", "127.0.0.1")
    _, body = wait_until(lambda: (r := probe(port, "/readyz")) and r[0] == 200 and r, 30, "ready")
    assert body == {"ok": True, "store": "ok", "workers": 2, "expected_workers": 2,
                    "stopping": False}
    live = probe(port, "/livez")
    assert live is not None and live[0] == 200
    assert live[1]["workers"] == 2 and live[1]["supervisor"].startswith("s-")
    assert (probe(port, "/metrics") or (0,))[0] == 404
    assert env.stop(worker)[0] == 0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the URL is replaced anyway
def test_a_worker_waiting_for_its_database_is_live_but_not_ready(env: Env) -> None:
    env.vars["CONVEYOR_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/nowhere"
    port = free_port()
    worker = env.worker("--health-port", str(port), "--health-host", "127.0.0.1")
    live = wait_until(lambda: probe(port, "/livez"), 30, "/livez answers")
    assert live[0] == 200
    status, body = probe(port, "/readyz") or (0, {})
    assert status == 503 and body["store"] == "unavailable" and body["ok"] is False
    assert env.stop(worker)[0] == 0
