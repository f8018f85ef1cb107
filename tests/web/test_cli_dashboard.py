"""``conveyor dashboard`` and ``conveyor worker --metrics-port`` as real processes: they refuse to
start unsafely with one line, and serve over real sockets (uvicorn, the supervisor's loop)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.web.conftest import TOKEN

TOKEN_ENV = "CONVEYOR_DASHBOARD_TOKEN"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(store_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    return {**env, "CONVEYOR_DATABASE_URL": store_url, "PYTHONUNBUFFERED": "1", **extra}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=60)


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]


@contextmanager
def serving(args: list[str], env: dict[str, str], url: str, tmp_path: Path) -> Iterator[None]:
    """A conveyor process until the test is done with it: SIGTERM, and it must exit 0."""
    output = tmp_path / "server.out"
    with output.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "conveyor", *args], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"not serving {url}: {output.read_text()}") from None
                time.sleep(0.1)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    assert code == 0, output.read_text()


# --- refusing to start -----------------------------------------------------------------------------
def test_off_loopback_without_a_token_it_refuses_in_one_line(store_url: str) -> None:
    done = run(["-m", "conveyor", "dashboard", "--host", "0.0.0.0"], environment(store_url))
    assert_one_line_error(done, 2, TOKEN_ENV, "0.0.0.0")


def test_without_the_extra_it_says_what_to_install(store_url: str) -> None:
    code = ("import sys; sys.modules['starlette'] = None; from conveyor.cli import main;"
            " sys.exit(main(['dashboard']))")
    assert_one_line_error(run(["-c", code], environment(store_url)), 2, "pip install 'conveyor[dashboard]'")


def test_a_taken_port_is_one_line(store_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run(["-m", "conveyor", "dashboard", "--port", port], environment(store_url))
        assert_one_line_error(done, 2, "--port")
        worker = run(["-m", "conveyor", "worker", "--metrics-port", port, "--metrics-host", "127.0.0.1"],
                     environment(store_url))
        assert_one_line_error(worker, 2, "--metrics-port")


def test_a_short_token_is_refused(store_url: str) -> None:
    done = run(["-m", "conveyor", "dashboard"], environment(store_url, **{TOKEN_ENV: "short"}))
    assert_one_line_error(done, 2, "8+ characters")


# --- serving ---------------------------------------------------------------------------------------
def test_with_a_token_it_serves_everywhere_and_requires_it(store_url: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = environment(store_url, **{TOKEN_ENV: TOKEN})
    with serving(["dashboard", "--host", "0.0.0.0", "--port", str(port)], env, base, tmp_path):
        assert httpx.get(f"{base}/api/jobs").status_code == 401
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/queues").status_code == 303
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{base}/api/jobs", headers=bearer).json() == {"jobs": [], "next": None}
        assert httpx.post(f"{base}/api/queues/mail/pause", headers=bearer).status_code == 200
        cross = {**bearer, "sec-fetch-site": "cross-site"}
        assert httpx.post(f"{base}/api/queues/mail/resume", headers=cross).status_code == 403
        with httpx.Client(base_url=base) as browser:
            login = browser.post("/login", data={"token": TOKEN, "next": "/queues"})
            assert login.status_code == 303 and "conveyor_session" in browser.cookies
            page = browser.get("/queues")
            assert page.status_code == 200 and "mail" in page.text
            assert "nonce-" in page.headers["content-security-policy"]
            assert browser.post("/api/queues/mail/resume").status_code == 403  # no CSRF token


def test_on_loopback_without_a_token_and_read_only(store_url: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(["dashboard", "--port", str(port), "--read-only"], environment(store_url), base,
                 tmp_path):
        assert httpx.get(f"{base}/api/queues").status_code == 200
        assert httpx.get(f"{base}/api/openapi.json").json()["paths"]
        refused = httpx.post(f"{base}/api/queues/mail/pause")
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        proxied = httpx.get(f"{base}/api/queues", headers={"x-forwarded-for": "203.0.113.9"})
        assert proxied.status_code == 403


@pytest.mark.timeout(120)
def test_worker_metrics_port_serves_every_hosts_metrics(store_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    args = ["worker", "--concurrency", "1", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    with serving(args, environment(store_url), url, tmp_path):
        deadline = time.monotonic() + 30
        while True:
            answer = httpx.get(url, timeout=5)
            workers = [s for f in text_string_to_metric_families(answer.text) if answer.status_code == 200
                       for s in f.samples if s.name == "conveyor_workers"]
            if workers and sum(s.value for s in workers) >= 1:
                break
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        assert answer.headers["content-type"].startswith("text/plain")
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
