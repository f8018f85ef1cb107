"""A real dashboard (``conveyor dashboard`` in a subprocess), real workers and a real browser:
Debian's Chromium driven by Playwright.

``.ci/run`` installs Debian's ``chromium``; Playwright's own browser download is not used. Without
the browser these tests fail in CI (CI=true) and are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Env, env_on, wait_until

CHROMIUM = os.environ.get("CONVEYOR_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "browser-test-token-0123456789"
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-extensions", "--no-first-run",
]


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser per module: Playwright's sync API holds an event loop in this thread while it
    runs, which later tests that call asyncio.run() must not find."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed; run make test")
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM}; install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    """A dashboard process over the test's store, and the workers beside it."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = env.tmp / "dashboard.out"
        with self.output.open("w") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "-A", "jobsapp:app", "dashboard",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env={**env.vars, "CONVEYOR_DASHBOARD_TOKEN": TOKEN},
                stdout=sink, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            )
        wait_until(self._answers, 30, f"the dashboard to answer on {self.url}: {self.log()}")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the dashboard exited with {self.proc.returncode}: {self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def log(self) -> str:
        return self.output.read_text() if self.output.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def site(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The dashboard on a fresh store; the invariant checker runs on the store afterwards."""
    with env_on(store_url, tmp_path, monkeypatch) as env:
        s = Site(env)
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture
def app(site: Site) -> Any:
    import jobsapp

    return jobsapp.app


@pytest.fixture
def page(chromium: Any, site: Site) -> Iterator[Any]:
    """A signed-in browser tab (through the login form, as a person would)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.goto(site.url + "/")
    assert "/login" in tab.url, "an unidentified browser must land on the login page"
    tab.get_by_label("Token").fill(TOKEN)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(site.url + "/")
    yield tab
    context.close()
    csp = [e for e in errors if "Content Security Policy" in e]
    assert not csp, f"the page broke its own CSP: {csp}"


def settle(deadline: float = 30) -> float:
    return time.monotonic() + deadline
