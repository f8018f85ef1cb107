"""Live updates over Server-Sent Events, through a real uvicorn server on both stores: a job's
stream follows its progress to the final state and ends; the change stream says when anything
changed; every open stream shares one change feed."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn

from conveyor import Conveyor
from conveyor.models import AttemptOutcome, JobOutcome, JobRecord, JobState
from conveyor.web import dashboard, live
from conveyor.web.live import Broadcaster
from tests.web.conftest import insert


def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def served(asgi: Any) -> Iterator[str]:
    """``asgi`` under a real uvicorn server on a free loopback port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(asgi, log_level="warning", lifespan="off", timeout_graceful_shutdown=0.5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    until(lambda: server.started, "the server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class Stream:
    """Reads one SSE stream on a thread of its own: its status, its events, whether it ended."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.status = 0
        self.events: list[tuple[str, Any]] = []
        self.opened = threading.Event()
        self.ended = threading.Event()
        self._stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        until(self.opened.is_set, f"{url} to answer")

    def _read(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(30.0)) as client, \
                    client.stream("GET", self.url) as response:
                self.status = response.status_code
                self.opened.set()
                event = "message"
                for line in response.iter_lines():
                    if self._stop.is_set():  # a keepalive at the latest: then the tab closes
                        break
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        self.events.append((event, json.loads(line[5:])))
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test
        finally:
            self.opened.set()
            self.ended.set()

    def named(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]

    def close(self) -> None:
        self._stop.set()


def claim(app: Conveyor, job_id: int) -> JobRecord:
    [job] = app.store.job_claim("w-live", "default", 1)
    assert job.id == job_id
    return job


def succeed(app: Conveyor, job: JobRecord) -> None:
    app.store.job_finish_many([JobOutcome(
        job_id=job.id, lease=job.lease or "", attempt=job.attempt, worker_id="w-live",
        started_at=job.started_at or datetime.now(UTC), state=JobState.SUCCEEDED,
        outcome=AttemptOutcome.SUCCEEDED, result='"all done"')])


@pytest.fixture(autouse=True)
def quick_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keepalives every 0.2 s, so a stream the test closes is noticed at once; the feed
    waits 0.2 s per call, so closing the store after a test does not wait on it long."""
    monkeypatch.setattr(live, "KEEPALIVE", 0.2)
    monkeypatch.setattr(live, "WAIT_TIMEOUT", 0.2)


@pytest.fixture
def site(web_app: Conveyor) -> Iterator[str]:
    with served(dashboard(web_app)) as url:
        yield url


def test_a_job_stream_follows_progress_to_the_final_state_and_ends(web_app: Conveyor, site: str) -> None:
    [job_id] = insert(web_app, 1)
    job = claim(web_app, job_id)
    stream = Stream(f"{site}/api/jobs/{job_id}/events")
    assert stream.status == 200
    until(lambda: stream.named("job"), "the job's first event")
    assert stream.named("job")[0]["state"] == "running"
    web_app.store.job_progress(job_id, job.lease or "", 30, "a third")
    until(lambda: any(e["progress"] == 30 for e in stream.named("job")), "progress 30")
    web_app.store.job_progress(job_id, job.lease or "", 70, "most of it")
    until(lambda: any(e["progress"] == 70 for e in stream.named("job")), "progress 70")
    succeed(web_app, job)
    until(stream.ended.is_set, "the stream to end after the final state")
    last = stream.named("job")[-1]
    assert (last["state"], last["result"]) == ("succeeded", "all done")
    assert [e["progress_message"] for e in stream.named("job")][1:3] == ["a third", "most of it"]


def test_a_finished_job_gets_one_event_and_the_stream_ends(web_app: Conveyor, site: str) -> None:
    [job_id] = insert(web_app, 1)
    succeed(web_app, claim(web_app, job_id))
    stream = Stream(f"{site}/api/jobs/{job_id}/events")
    until(stream.ended.is_set, "the stream of a finished job to end")
    assert [e["state"] for e in stream.named("job")] == ["succeeded"]


def test_a_job_discarded_while_watched_ends_its_stream(web_app: Conveyor, site: str) -> None:
    [job_id] = insert(web_app, 1)
    stream = Stream(f"{site}/api/jobs/{job_id}/events")
    until(lambda: stream.named("job"), "the job's first event")
    web_app.client.discard([job_id])
    until(stream.ended.is_set, "the stream to end")
    assert stream.named("gone") == [{"id": job_id}]


def test_an_unknown_job_has_no_stream(web_app: Conveyor, site: str) -> None:
    for path in ("/api/jobs/987654/events", "/api/jobs/nope/events"):
        answer = httpx.get(site + path)
        assert answer.status_code == 404
        assert "error" in answer.json()


def test_the_change_stream_says_when_jobs_change(web_app: Conveyor, site: str) -> None:
    stream = Stream(f"{site}/api/events")
    assert stream.status == 200
    until(lambda: stream.named("changed"), "the first changed event (the feed starting)")
    seen = len(stream.named("changed"))
    insert(web_app, 1)
    until(lambda: len(stream.named("changed")) > seen, "a changed event after an enqueue")
    stream.close()


def test_every_open_stream_shares_one_change_feed(web_app: Conveyor) -> None:
    asgi = dashboard(web_app)
    with served(asgi) as site:
        [job_id] = insert(web_app, 1)
        streams = [Stream(f"{site}/api/events") for _ in range(4)]
        streams += [Stream(f"{site}/api/jobs/{job_id}/events") for _ in range(4)]
        feed = asgi.state.web.extras["live"]
        until(lambda: feed.subscribers == 8, "eight subscribers")
        assert feed.started == 1, "one thread watches the store for every stream"
        web_app.client.discard([job_id])
        until(lambda: all(s.named("changed") for s in streams[:4]), "every tab to hear of it")
        until(lambda: all(s.ended.is_set() for s in streams[4:]), "every job stream to end")
        for s in streams:
            s.close()
        until(lambda: feed.subscribers == 0, "closed streams to unsubscribe")


class CountingStore:
    """A store whose only part is the change feed: says "changed" when told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.pending = threading.Event()

    def wait_for_changes(self, timeout: float) -> bool:
        self.calls += 1
        changed = self.pending.wait(timeout)
        self.pending.clear()
        return changed


def test_the_feed_wakes_subscribers_and_stops_when_nobody_listens() -> None:
    store = CountingStore()
    feed = Broadcaster(lambda: store, timeout=0.05, idle_stop=0.2)  # type: ignore[arg-type,return-value]

    async def watch() -> list[bool]:
        sub = feed.subscribe()
        first = await sub.changed(5)  # the feed's first answer counts as a change
        store.pending.set()
        second = await sub.changed(5)
        quiet = await sub.changed(0.2)
        sub.close()
        return [first, second, quiet]

    assert asyncio.run(watch()) == [True, True, False]
    until(lambda: not feed.running, "the feed to stop with nobody listening")
    calls = store.calls
    time.sleep(0.2)  # nothing to wait for: proving the store is left alone
    assert store.calls == calls
