"""The job pages: jobs by state with filters and search, one job in full, the dead jobs with
their bulk actions, the scheduled jobs, and a bulk operation's progress.

Lists page by id (keyset: ``before=`` the last id shown), never by offset and never with a
count of the whole table. A search (``q``) goes through the store's bounded scan
(``job_search``): it looks at a window of the newest rows below ``before`` and says where to go
on ("search older"), so its cost does not grow with the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import views
from ..errors import JobNotFound
from ..models import RETRYABLE_STATES, JobFilter, JobRecord, JobState
from .api import find_jobs
from .pages import page, query_int
from .routes import render, web_of

PAGE_SIZE = 50
MAX_PAGE = 200
STATES = tuple(JobState)


@dataclass
class Listing:
    """One page of a job list, and what its filter form and links need."""

    state: str = ""
    queue: str = ""
    name: str = ""
    q: str = ""
    before: int | None = None
    limit: int = PAGE_SIZE
    jobs: list[dict[str, Any]] = field(default_factory=list)
    older: int | None = None  # before= of the next page
    problem: str = ""

    def params(self, **changes: Any) -> dict[str, Any]:
        """The query parameters of this listing, with ``changes`` applied."""
        base = {"state": self.state, "queue": self.queue, "name": self.name, "q": self.q,
                "limit": self.limit if self.limit != PAGE_SIZE else None}
        return {**base, **changes}

    def filter(self, limit: int) -> JobFilter:
        states = (JobState(self.state),) if self.state else ()
        return JobFilter(states=states, queue=self.queue or None, name=self.name or None,
                         limit=limit, before_id=self.before)


def listing_of(request: Request, state: str | None = None) -> Listing:
    params = request.query_params
    listing = Listing(
        state=state if state is not None else params.get("state", "").strip(),
        queue=params.get("queue", "").strip(), name=params.get("name", "").strip(),
        q=params.get("q", "").strip(), before=query_int(request, "before"),
        limit=min(query_int(request, "limit") or PAGE_SIZE, MAX_PAGE) or PAGE_SIZE,
    )
    if listing.state and listing.state not in STATES:
        listing.problem = f"there is no state {listing.state!r}; showing every state"
        listing.state = ""
    return listing


def row(job: JobRecord) -> dict[str, Any]:
    """What a table row shows of a job: the job's view (arguments redacted), one line each."""
    return views.job_view(job)


def fill(request: Request, listing: Listing) -> Listing:
    """Read the page of jobs ``listing`` asks for."""
    store = web_of(request).app.store
    jobs, listing.older = find_jobs(store, listing.filter(listing.limit), listing.q)
    if listing.q:
        by_id = by_id_search(request, listing)
        jobs = ([by_id] if by_id else []) + [j for j in jobs if by_id is None or j.id != by_id.id]
    listing.jobs = [row(j) for j in jobs]
    return listing


def by_id_search(request: Request, listing: Listing) -> JobRecord | None:
    """A search for a number also finds the job with that id (on the first page)."""
    if listing.before is not None or not listing.q.lstrip("#").isdigit():
        return None
    job = web_of(request).app.store.job_get(int(listing.q.lstrip("#")))
    if job is None or (listing.state and job.state != listing.state):
        return None
    if (listing.queue and job.queue != listing.queue) or (listing.name and job.name != listing.name):
        return None
    return job


def queue_names(request: Request) -> list[str]:
    return sorted(q.queue for q in web_of(request).app.client.queues())


def list_page(request: Request, listing: Listing, template: str, title: str) -> Response:
    fill(request, listing)
    return page(request, template, listing=listing, title=title, states=STATES,
                queues=queue_names(request))


# --- handlers --------------------------------------------------------------------------------
def jobs_page(request: Request) -> Response:
    return list_page(request, listing_of(request), "jobs.html", "Jobs")


def dead_page(request: Request) -> Response:
    return list_page(request, listing_of(request, state=JobState.DEAD), "dead.html", "Dead jobs")


def scheduled_page(request: Request) -> Response:
    listing = listing_of(request, state=JobState.SCHEDULED)
    return list_page(request, listing, "jobs.html", "Scheduled jobs")


def job_page(request: Request) -> Response:
    client = web_of(request).app.client
    try:
        job = client.get(int(request.path_params["id"]))
    except (ValueError, JobNotFound):
        return render(request, "missing.html", status=404, what=f"job {request.path_params['id']}",
                      here="/", live="none")
    detail = views.job_detail_view(job, client.attempts(job.id), client.logs(job.id))
    reason = views.waiting_for(job, client.limits() if job.concurrency_key else [])
    return page(request, "job.html", job=detail, live="job", waiting=reason,
                finished=job.state.finished, actions=actions(job), progress=shown_progress(job))


def shown_progress(job: JobRecord) -> float | None:
    """The progress bar's value: what the job reported (0-100), full once it succeeded."""
    if job.state is JobState.SUCCEEDED:
        return 100.0
    return None if job.progress is None else max(0.0, min(100.0, job.progress))


def actions(job: JobRecord) -> list[str]:
    """The buttons a job's page offers, by its state."""
    offered = []
    if job.state in RETRYABLE_STATES:
        offered.append("retry")
    if not job.state.finished and not job.cancel_requested:
        offered.append("cancel")
    if job.state is not JobState.RUNNING:
        offered.append("discard")
    return offered


def operation_page(request: Request) -> Response:
    """A bulk operation's progress; app.js follows it live from ``/api/operations/{id}``."""
    from .bulk import runner

    raw = request.path_params["id"]
    op = runner(request).view(int(raw)) if raw.isdigit() else None
    if op is None:
        return render(request, "missing.html", status=404, live="none", here="/",
                      what=f"operation {raw} (operations are kept in this dashboard's memory)")
    return page(request, "operation.html", op=op, live="operation")


def routes() -> list[BaseRoute]:
    return [
        Route("/jobs", jobs_page, methods=["GET"]),
        Route("/jobs/{id}", job_page, methods=["GET"]),
        Route("/dead", dead_page, methods=["GET"]),
        Route("/scheduled", scheduled_page, methods=["GET"]),
        Route("/operations/{id}", operation_page, methods=["GET"]),
    ]
