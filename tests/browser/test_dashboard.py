"""The dashboard in a real browser, on both stores: what an operator does most, end to end
(page → form or script → API → store → live update back in the page)."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jobsapp

from conveyor import JobState
from conveyor.models import AttemptOutcome, JobOutcome
from tests.integration.conftest import wait_until

from .conftest import Site


def test_pause_and_resume_a_queue(page: Any, site: Site, app: Any) -> None:
    jobsapp.square.options(queue="mail").enqueue_in(3600, 3)
    page.goto(site.url + "/queues")
    row = page.locator("tr", has_text="mail")
    row.get_by_role("button", name="Pause").click()
    wait_until(lambda: _paused(app, "mail"), 10, "the queue to be paused in the store")
    page.locator("tr", has_text="mail").get_by_role("button", name="Resume").wait_for()
    page.locator("tr", has_text="mail").get_by_role("button", name="Resume").click()
    wait_until(lambda: not _paused(app, "mail"), 10, "the queue to be resumed in the store")
    page.goto(site.url + "/audit")
    assert page.locator("tr", has_text="pause").count() >= 1
    assert page.locator("tr", has_text="resume").count() >= 1


def test_retry_a_dead_job(page: Any, site: Site, app: Any) -> None:
    job = jobsapp.fails_at_once.enqueue(7)
    worker = site.env.worker("--concurrency", "2")
    wait_until(lambda: job.status() == JobState.DEAD, 30, "the job to die")
    site.env.stop(worker)
    page.goto(f"{site.url}/jobs/{job.id}")
    page.get_by_text("card 7 declined").first.wait_for()
    page.get_by_role("button", name="Retry").click()
    wait_until(lambda: job.status() == JobState.READY, 10, "the retried job to be ready again")
    page.get_by_text("ready").first.wait_for()


def test_bulk_discard_ten_thousand_dead_jobs_while_watching(page: Any, site: Site, app: Any) -> None:
    app.enqueue_many([jobsapp.fails_at_once.prepare(n) for n in range(10_000)])
    worker = site.env.worker("--concurrency", "10")
    wait_until(lambda: _count(app, JobState.DEAD) == 10_000, 180, "10,000 jobs to die")
    site.env.stop(worker)
    page.goto(site.url + "/dead")
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Discard all matching").click()
    progress = page.get_by_role("progressbar")
    progress.wait_for()
    wait_until(lambda: progress.get_attribute("aria-valuenow") == "10000", 120,
               "the operation's progress to reach 10,000 in the page")
    page.get_by_text("done").first.wait_for()
    assert _count(app, JobState.DEAD) == 0
    assert questions and "Discard every dead job" in questions[0]


def test_progress_and_final_state_arrive_live(page: Any, site: Site, app: Any, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    job = jobsapp.reports_progress.enqueue(str(flag))
    site.env.worker("--concurrency", "2")
    page.goto(f"{site.url}/jobs/{job.id}")
    page.evaluate("window.__still_this_page = true")
    bar = page.get_by_role("progressbar")
    wait_until(lambda: bar.get_attribute("aria-valuenow") == "50", 30, "progress 50 in the page")
    flag.write_text("go")
    wait_until(lambda: job.status() == JobState.SUCCEEDED, 30, "the job to finish")
    wait_until(lambda: bar.get_attribute("aria-valuenow") == "100", 15, "progress 100 in the page")
    page.get_by_text("succeeded").first.wait_for()
    assert page.evaluate("window.__still_this_page === true"), "the page reloaded instead of updating"


def _paused(app: Any, queue: str) -> bool:
    return any(q.queue == queue and q.paused for q in app.client.queues())


def _count(app: Any, state: JobState) -> int:
    return sum(q.counts.get(state, 0) for q in app.client.queues())


def test_the_overview_draws_an_hour_of_stored_history(
    page: Any, site: Site, app: Any, tmp_path: Path
) -> None:
    """Forty minutes of work recorded minute by minute, as the leader's sampler would: the
    overview's charts and queue table show it (and this is the README's screenshot)."""
    store = app.store
    start = datetime.now(UTC) - timedelta(minutes=40)
    for minute in range(40):
        at = start + timedelta(minutes=minute)
        for queue, base in (("default", 30), ("mail", 12), ("reports", 4)):
            count = base + int(base * 0.6 * math.sin(minute / 5 + len(queue)))
            app.enqueue_many([jobsapp.square.options(queue=queue).prepare(n) for n in range(count)])
            behind = 2 if queue == "mail" else 0  # mail falls behind: its depth grows
            claimed = store.job_claim("w-history", queue, count - behind, now=at)
            store.job_finish_many([_finished(job, at, fail=(n % 17 == 0 and queue == "mail"))
                                   for n, job in enumerate(claimed)])
        store.history_sample(at + timedelta(seconds=70))
    jobsapp.square.options(queue="reports").enqueue_in(600, 1)
    page.goto(site.url + "/")
    assert page.locator("polyline").count() == 4
    throughput = page.locator("section, div", has_text="Throughput").locator("strong").first
    assert throughput.inner_text().split()[0] not in ("0", "0.0")
    assert page.locator("tr", has_text="mail").count() == 1
    target = Path(os.environ.get("CONVEYOR_SCREENSHOT") or tmp_path / "overview.png")
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _finished(job: Any, at: datetime, fail: bool) -> JobOutcome:
    took = timedelta(milliseconds=40 + job.id % 200)
    if fail:
        return JobOutcome(job.id, job.lease, job.attempt, "w-history", at, JobState.DEAD,
                          AttemptOutcome.ERROR, error_class="SMTPError",
                          error_message="mailbox unavailable", finished_at=at + took)
    return JobOutcome(job.id, job.lease, job.attempt, "w-history", at, JobState.SUCCEEDED,
                      AttemptOutcome.SUCCEEDED, result="null", finished_at=at + took)
