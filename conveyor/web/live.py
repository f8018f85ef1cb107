"""Live updates: one change feed per dashboard, fanned out to every open page over
Server-Sent Events.

A ``Broadcaster`` (one per dashboard app, in ``Web.extras``) runs a daemon thread, started by
the first subscriber, that loops on ``store.wait_for_changes`` (LISTEN/NOTIFY on PostgreSQL,
a change counter on SQLite) and wakes the asyncio subscribers through
``loop.call_soon_threadsafe``. It stops after a while with nobody listening. However many
tabs are open, the store is watched once; a stream reads the store only after a change:

- ``GET /api/jobs/{id}/events``: event ``job`` with the job's view now, then whenever it
  changed (read at most ``JOB_CHECKS_PER_SECOND`` times a second, and only after the feed saw
  a change); the stream ends after the event that shows a final state. 404 for an unknown id.
- ``GET /api/events``: event ``changed`` at most once a second while anything changes; the
  list pages refresh themselves on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .. import views
from ..models import JobRecord
from .routes import Web, web_of

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger("conveyor.web")

WAIT_TIMEOUT = 1.0  # seconds per wait_for_changes call
IDLE_STOP = 30.0  # the feed stops after this long with no subscriber
KEEPALIVE = 10.0  # a comment line this often on a quiet stream (finds closed connections)
JOB_CHECKS_PER_SECOND = 4
CHANGED_EVERY = 1.0  # at most one "changed" event per second
SSE_HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}


class Subscription:
    """One stream's view of the feed: ``changed()`` returns once something changed since the
    previous call (or after ``timeout`` seconds, False)."""

    def __init__(self, broadcaster: Broadcaster, loop: asyncio.AbstractEventLoop) -> None:
        self._broadcaster = broadcaster
        self._loop = loop
        self._event = asyncio.Event()

    def wake(self) -> None:
        """Called from the feed's thread."""
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # the loop is closed: the stream is gone
            self._broadcaster.unsubscribe(self)

    async def changed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self._broadcaster.unsubscribe(self)


class Broadcaster:
    """The store's change feed, watched by one daemon thread while anyone subscribes."""

    def __init__(self, store: Callable[[], Store | None], *, timeout: float = WAIT_TIMEOUT,
                 idle_stop: float = IDLE_STOP) -> None:
        self._store = store
        self.timeout = timeout
        self.idle_stop = idle_stop
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self._thread: threading.Thread | None = None
        self._idle_since = time.monotonic()
        self.changes = 0  # changes seen since the feed was created
        self.started = 0  # times the feed's thread was started

    def subscribe(self) -> Subscription:
        """A subscription for the running event loop; starts the feed if it is not running."""
        sub = Subscription(self, asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(sub)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="conveyor-dashboard-changes", daemon=True)
                self._thread.start()
                self.started += 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)
            if not self._subscribers:
                self._idle_since = time.monotonic()

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _run(self) -> None:
        # the first answer counts as a change: whatever happened before the feed began watching
        # (between a stream's first read and now) must not wait for the next change to be seen
        first = True
        while not self._should_stop():
            store = self._store()
            if store is None:  # the app was closed (or not opened yet): never reopen it from here
                time.sleep(self.timeout)
                continue
            try:
                changed = store.wait_for_changes(self.timeout)
            except Exception:  # the store promises not to raise; a bug here must not kill the feed
                log.exception("the dashboard's change feed failed; retrying")
                time.sleep(self.timeout)
                changed = True
            if changed or first:
                self.publish()
            first = False

    def _should_stop(self) -> bool:
        with self._lock:
            if self._subscribers or time.monotonic() - self._idle_since < self.idle_stop:
                return False
            self._thread = None
            return True

    def publish(self) -> None:
        """Wake every subscriber (the feed saw a change)."""
        with self._lock:
            self.changes += 1
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.wake()


def broadcaster_of(web: Web) -> Broadcaster:
    found = web.extras.get("live")
    if found is None:
        found = web.extras.setdefault(
            "live", Broadcaster(lambda: web.app.store if web.app.store_is_open else None,
                                timeout=WAIT_TIMEOUT))
    assert isinstance(found, Broadcaster)
    return found


def sse(event: str, data: Any) -> str:
    """One Server-Sent Event; JSON keeps the data on one line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def stream(events: AsyncIterator[str]) -> Response:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


# --- GET /api/jobs/{id}/events ------------------------------------------------------------------
async def job_events(request: Request) -> Response:
    web = web_of(request)
    raw = request.path_params["id"]
    sub = broadcaster_of(web).subscribe()  # before the first read: no change falls between
    job = await run_in_threadpool(web.app.store.job_get, int(raw)) if raw.isdigit() else None
    if job is None:
        sub.close()
        return JSONResponse({"error": f"no job {raw}"}, 404)
    return stream(job_stream(web, job, sub))


async def job_stream(web: Web, job: JobRecord, sub: Subscription) -> AsyncIterator[str]:
    try:
        last = views.job_view(job)
        yield "retry: 2000\n\n" + sse("job", last)
        while not job.state.finished:
            if not await sub.changed(KEEPALIVE):
                yield ": keepalive\n\n"
                continue
            await asyncio.sleep(1 / JOB_CHECKS_PER_SECOND)  # a burst of changes, one read
            found = await run_in_threadpool(web.app.store.job_get, job.id)
            if found is None:  # discarded while watched
                yield sse("gone", {"id": job.id})
                return
            job, view = found, views.job_view(found)
            if view != last:
                last = view
                yield sse("job", view)
    finally:
        sub.close()


# --- GET /api/events -------------------------------------------------------------------------------
async def events(request: Request) -> Response:
    web = web_of(request)
    if web.app.store_missing() is None:  # the feed watches an open store; a missing file stays missing
        await run_in_threadpool(lambda: web.app.store)
    sub = broadcaster_of(web).subscribe()
    return stream(changes_stream(sub))


async def changes_stream(sub: Subscription) -> AsyncIterator[str]:
    try:
        yield "retry: 3000\n\n: watching for changes\n\n"
        while True:
            if not await sub.changed(KEEPALIVE):
                yield ": keepalive\n\n"
                continue
            yield sse("changed", {"at": time.time()})
            await asyncio.sleep(CHANGED_EVERY)
    finally:
        sub.close()


def routes() -> list[BaseRoute]:
    return [
        Route("/api/jobs/{id}/events", job_events, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
    ]
