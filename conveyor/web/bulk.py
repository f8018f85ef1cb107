"""Bulk retry and discard of up to 100,000 jobs, as background operations with progress.

``POST /api/jobs/bulk`` answers 202 at once with the operation; one thread per dashboard,
started on first use (mounted apps get no lifespan events), finds the matching ids a page at a
time (keyset, newest first) and acts on them in chunks of ``CHUNK`` through the client, so no
request waits and no statement touches more than a chunk. ``GET /api/operations/{id}`` shows
``done`` of ``total``. Operations live in this process's memory: the last ``KEPT`` are shown.
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..client import Client
from ..models import JobFilter
from .api import JSON, BadInput, api, as_int, audit, fail, is_form, job_filter, shows, text_of
from .routes import local_next, root, web_of
from .security import action, body_of, identity

log = logging.getLogger("conveyor.web")
CHUNK = 1000  # ids acted on per store call
MAX_JOBS = 100_000  # most jobs one operation acts on
KEPT = 100  # finished operations remembered
CHUNK_PAUSE = 0.0  # seconds between chunks (gentler on a busy store)
IDLE_EXIT = 60.0  # seconds without work after which the thread ends (the next submit starts one)
ACTIONS = ("retry", "discard")


@dataclass
class Operation:
    id: int
    action: str
    filter: dict[str, Any]
    actor: str
    job_filter: JobFilter | None = None  # None: the ids given
    text: str | None = None
    ids: tuple[int, ...] = ()
    state: str = "running"
    done: int = 0
    total: int | None = None
    changed: int = 0
    error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "action": self.action, "filter": self.filter, "state": self.state,
            "done": self.done, "total": self.total, "changed": self.changed, "error": self.error,
            "actor": self.actor, "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
        }


class BulkRunner:
    """Runs operations one after another on a thread of its own, started on submit and ended
    after ``IDLE_EXIT`` seconds without work."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._ops: dict[int, Operation] = {}
        # ids unique across the processes serving one dashboard (uvicorn --workers, a balancer):
        # a process asked for another's operation answers 404, never with one of its own
        self._ids = itertools.count(secrets.randbelow(2**40) * 1000 + 1)
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Operation] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, op_action: str, shown: dict[str, Any], actor: str, *,
               job_filter: JobFilter | None = None, text: str | None = None,
               ids: tuple[int, ...] = ()) -> Operation:
        with self._lock:
            op = Operation(next(self._ids), op_action, shown, actor, job_filter, text, ids)
            self._ops[op.id] = op
            self._forget_old()
            self._queue.put(op)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="conveyor-bulk", daemon=True)
                self._thread.start()
        return op

    def _forget_old(self) -> None:
        finished = [i for i, o in self._ops.items() if o.state != "running"]
        for i in finished[: max(0, len(finished) - KEPT)]:
            del self._ops[i]

    def view(self, op_id: int) -> dict[str, Any] | None:
        with self._lock:
            op = self._ops.get(op_id)
            return None if op is None else op.view()

    def views(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o.view() for o in sorted(self._ops.values(), key=lambda o: -o.id)]

    def _loop(self) -> None:
        while True:
            try:
                op = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:  # submit() puts under this lock: nothing can slip in now
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                self.run(op)
            except Exception as e:  # one failed operation must not stop the next
                log.exception("bulk operation %s failed", op.id)
                with self._lock:
                    op.state, op.error = "failed", f"{type(e).__name__}: {e}"
                    op.finished_at = datetime.now(UTC)

    def run(self, op: Operation) -> None:
        ids = list(op.ids) if op.job_filter is None else self.matching(op.job_filter, op.text)
        with self._lock:
            op.total = len(ids)
        act: Callable[[list[int]], int] = (
            self.client.retry if op.action == "retry" else self.client.discard)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            changed = act(chunk)
            with self._lock:
                op.done += len(chunk)
                op.changed += changed
            if CHUNK_PAUSE:
                time.sleep(CHUNK_PAUSE)
        with self._lock:
            op.state, op.finished_at = "done", datetime.now(UTC)

    def matching(self, wanted: JobFilter, text: str | None) -> list[int]:
        """Ids of the jobs matching, newest first, at most ``MAX_JOBS``, a page at a time."""
        store = self.client.store()
        ids: list[int] = []
        cursor = wanted.before_id
        while len(ids) < MAX_JOBS:
            page_filter = replace(wanted, before_id=cursor, limit=CHUNK)
            if text:
                page, cursor = store.job_search(page_filter, text)
                ids.extend(j.id for j in page if shows(j, text))
                if cursor is None:
                    break
            else:
                records = store.job_list(page_filter)
                ids.extend(j.id for j in records)
                if len(records) < CHUNK:
                    break
                cursor = records[-1].id
        return ids[:MAX_JOBS]


def runner(request: Request) -> BulkRunner:
    web = web_of(request)
    found = web.extras.get("bulk")
    if found is None:
        found = web.extras["bulk"] = BulkRunner(web.app.client)
    assert isinstance(found, BulkRunner)
    return found


async def ids_of(request: Request, body: dict[str, Any]) -> tuple[int, ...]:
    """Ids from a JSON list, or form fields ``ids`` (repeated, or comma separated)."""
    raw: Any = body.get("ids")
    if is_form(request):
        raw = [part for value in (await request.form()).getlist("ids")
               for part in re.split(r"[\s,]+", str(value)) if part]
    if raw in (None, "", []):
        return ()
    if not isinstance(raw, list):
        raise BadInput("ids must be a list of job ids")
    if len(raw) > MAX_JOBS:
        raise BadInput(f"at most {MAX_JOBS} ids in one operation")
    return tuple(dict.fromkeys(as_int(i, "each id") for i in raw))


@action
@api
async def bulk_submit(request: Request) -> Response:
    """{action: retry|discard, ids} or {action, state, queue?, name?, q?}: 202 at once."""
    body = await body_of(request)
    op_action = body.get("action")
    if op_action not in ACTIONS:
        raise BadInput("action must be 'retry' or 'discard'")
    ids = await ids_of(request, body)
    wanted: JobFilter | None = None
    text: str | None = None
    shown: dict[str, Any]
    if ids:
        shown = {"ids": len(ids)}
    else:
        wanted = job_filter(body, limit=CHUNK)
        if not wanted.states:
            raise BadInput("state is required with a filter (e.g. dead), or give ids")
        text = text_of(body.get("q"), "q")
        shown = {"state": str(wanted.states[0]), "queue": wanted.queue, "name": wanted.name,
                 "q": text}
    bulk = runner(request)
    op = bulk.submit(op_action, shown, identity(request).actor,
                                job_filter=wanted, text=text, ids=ids)
    detail = " ".join(f"{k}={v}" for k, v in shown.items() if v is not None)
    await audit(request, f"bulk {op_action}", f"operation {op.id}", detail)
    if is_form(request):
        target = local_next(str(body.get("next") or ""), f"/operations/{op.id}")
        return RedirectResponse(f"{root(request)}{target}", 303)
    return JSON({"operation": bulk.view(op.id)}, 202)


@api
async def operations_list(request: Request) -> Response:
    return JSON({"operations": runner(request).views()})


@api
async def operation_get(request: Request) -> Response:
    op_id = as_int(request.path_params["id"], "the operation id")
    found = runner(request).view(op_id)
    if found is None:
        return fail(404, f"no operation {op_id} in this dashboard process (an operation lives in"
                         " the memory of the process that started it)")
    return JSON(found)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/jobs/bulk", bulk_submit, methods=["POST"]),
        Route("/api/operations", operations_list, methods=["GET"]),
        Route("/api/operations/{id}", operation_get, methods=["GET"]),
    ]
