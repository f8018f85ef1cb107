"""``conveyor doctor``'s diagnoses: what is wrong, read from the store's real state, with the
exact fix.

``take_snapshot`` gathers everything in a few reads (schema version, ``health_facts``, queue
stats, registered processes); each diagnosis is a pure function of that ``Snapshot`` returning
findings, and ``diagnose`` puts them in a ``Report``. Nothing here prints or loops: the CLI
renders reports (tables, colours, ``--watch``), ``views.report_view`` gives their JSON. A "live"
worker is a registered process of kind ``worker`` that heartbeated within ``rescue_after``
seconds, measured on the store's clock.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from . import views
from .errors import ConfigurationError, SchemaError, StoreError
from .models import JobRecord, JobState, LimitUsage, ProcessRecord, QueueStats, RateBacklog
from .settings import Settings
from .store import SCHEMA_VERSION
from .store.base import HealthFacts
from .urls import redact_url

if TYPE_CHECKING:
    from .app import Conveyor

Severity = Literal["warning", "problem"]
OVERDUE_AFTER = 60.0  # a scheduled job this late means nothing is promoting due jobs
SKEW_SHOWN = 5.0  # clock skew between this host and the store worth mentioning
TIMEOUT_GRACE = 5.0  # the hard timeout stops a job within a second; past this it is stuck
RECENT = 3600.0  # "recently dead" window
MAX_LINES = 10  # evidence lines per list
NO_APP = "MODULE:APP"
STARVED_AFTER = 10.0  # a ready job waiting this long while its workers run other queues' jobs
RUNNING_READ = 2000  # stands in for -A when the doctor was not told the app's path


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    title: str
    evidence: list[str]
    fix: str


@dataclass
class Report:
    findings: list[Finding]
    store: str = ""
    checked_at: str | None = None  # ISO time on the store's clock
    summary: str = ""

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 warnings only, 2 any problem."""
        if any(f.severity == "problem" for f in self.findings):
            return 2
        return 1 if self.findings else 0

    @property
    def status(self) -> str:
        return ("healthy", "warnings", "problems")[self.exit_code]

    def key(self) -> tuple[tuple[str, str], ...]:
        """What changed, for ``--watch``: titles carry no counts or ages."""
        return tuple((f.code, f.title) for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return views.report_view(
            self.findings, status=self.status, exit_code=self.exit_code, store=self.store,
            checked_at=self.checked_at, summary=self.summary)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls([Finding(**f) for f in data["findings"]], data.get("store", ""),
                   data.get("checked_at"), data.get("summary", ""))


# --- the snapshot every diagnosis reads ---------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    settings: Settings
    app_path: str | None
    host_now: datetime  # this host's clock, read around health_facts
    queues: list[QueueStats]
    processes: list[ProcessRecord]
    facts: HealthFacts
    defined_here: frozenset[str] = field(default_factory=frozenset)
    limits: tuple[LimitUsage, ...] = ()  # concurrency keys in use
    running: tuple[JobRecord, ...] = ()  # running jobs (at most RUNNING_READ)
    rates: tuple[RateBacklog, ...] = ()  # rate keys with jobs waiting

    @property
    def now(self) -> datetime:
        return self.facts.now

    def age(self, when: datetime) -> float:
        return (self.now - when).total_seconds()

    def alive(self, p: ProcessRecord | None) -> bool:
        return p is not None and self.age(p.heartbeat_at) < self.settings.rescue_after

    @property
    def live_workers(self) -> list[ProcessRecord]:
        return [p for p in self.processes if p.kind == "worker" and self.alive(p)]

    def process(self, process_id: str | None) -> ProcessRecord | None:
        return next((p for p in self.processes if p.id == process_id), None)

    def free_slots(self, worker: ProcessRecord) -> int:
        return worker.concurrency - self.facts.running_by_worker.get(worker.id, 0)

    @property
    def skew(self) -> float:
        """Seconds the store's clock is ahead of this host's (negative: behind)."""
        return (self.facts.store_clock - self.host_now).total_seconds()

    def command(self, words: str, *args: str) -> str:
        app = ["-A", self.app_path] if self.app_path else []
        return " ".join(["conveyor", words, *app, *(shlex.quote(a) for a in args)])

    def worker_command(self, *args: str) -> str:
        return " ".join(["conveyor worker -A", self.app_path or NO_APP,
                         *(shlex.quote(a) for a in args)])


def take_snapshot(app: Conveyor, now: datetime | None, app_path: str | None) -> Snapshot:
    """What every diagnosis reads, from ``app``'s store; SchemaError if it has no (usable)
    schema, StoreError if it cannot be reached. A missing SQLite file is not created."""
    missing = app.store_missing()
    if missing is not None:  # looking must not create the file
        raise SchemaError(missing)
    store = app.store
    version = store.schema_version()
    if version != SCHEMA_VERSION:
        found = "no conveyor schema" if version is None else f"schema version {version}"
        act = "upgrade conveyor" if (version or 0) > SCHEMA_VERSION else "run: conveyor migrate"
        raise SchemaError(f"{redact_url(app.url)} has {found}, this conveyor uses {SCHEMA_VERSION}; {act}")
    if now is None and app.clock.frozen:
        now = app.clock.now()
    before = app.clock.now()
    facts = store.health_facts(stale_after=app.settings.rescue_after, timeout_grace=TIMEOUT_GRACE,
                               overdue_after=OVERDUE_AFTER, recent=RECENT, now=now)
    host_now = before + (app.clock.now() - before) / 2
    running = app.client.list(state=JobState.RUNNING, limit=RUNNING_READ)
    return Snapshot(app.settings, app_path, host_now, app.client.queues(), app.client.workers(),
                    facts, frozenset(app.registry.names()), tuple(app.client.limits()),
                    tuple(running), tuple(app.store.rate_backlog(now=now)))


# --- diagnoses -------------------------------------------------------------------------------
def no_workers(s: Snapshot) -> list[Finding]:
    ready = _ready_queues(s)
    if s.live_workers or not ready:
        return []
    evidence = [f"{sum(q.count(JobState.READY) for q in ready)} ready job(s): "
                + ", ".join(_ready(s, q) for q in ready)]
    silent = [p for p in s.processes if p.kind == "worker"]
    evidence += _capped(f"worker {_where(p)}: last heartbeat {_ago(s.age(p.heartbeat_at))} ago"
                        f" (rescue_after is {s.settings.rescue_after:g}s)" for p in silent)
    if not silent:
        evidence.append("no worker process is registered in the store")
    names = [q.queue for q in ready]
    args = () if names == ["default"] else ("--queues", ",".join(names))
    return [Finding("no_workers", "problem", "Ready jobs are waiting but no worker is alive",
                    evidence, f"start a worker: {s.worker_command(*args)}")]


def queue_not_served(s: Snapshot) -> list[Finding]:
    live = s.live_workers
    served = sorted({q for p in live for q in p.queues})
    return [
        Finding("queue_not_served", "problem",
                f"Queue {q.queue!r} has ready jobs but no live worker listens to it",
                [_ready(s, q), f"live workers listen to: {', '.join(served) or 'nothing'}"],
                f"start a worker for it: {s.worker_command('--queues', q.queue)}"
                " (or add it to an existing worker's --queues)")
        for q in _ready_queues(s) if live and q.queue not in served
    ]


def paused_queue_waiting(s: Snapshot) -> list[Finding]:
    return [
        Finding("paused_queue_waiting", "warning", f"Queue {q.queue!r} is paused with jobs waiting",
                [f"paused; {_ready(s, q)}; none start until it is resumed"],
                f"resume it: {s.command('queues resume', q.queue)}")
        for q in s.queues if q.paused and q.count(JobState.READY)
    ]


def stuck_running(s: Snapshot) -> list[Finding]:
    stuck = s.facts.stuck
    if not stuck:
        return []
    evidence = _capped(_why_stuck(s, job) for job in stuck)
    return [Finding("stuck_running", "problem", "Running jobs are stuck", evidence,
                    "; ".join(_stuck_fixes(s, stuck)))]


def _stuck_fixes(s: Snapshot, stuck: tuple[JobRecord, ...]) -> list[str]:
    lost = [j for j in stuck if not s.alive(s.process(j.worker_id))]
    fixes = []
    if lost:
        fixes.append(f"jobs of a silent or vanished worker are rescued {s.settings.rescue_after:g}s"
                     " after its last sign of life by the leader of any running worker; if none"
                     f" runs, start one: {s.worker_command()}")
    if len(lost) < len(stuck):
        fixes.append("a job past its timeout on a live worker was not stopped: check that"
                     " worker's host and logs, and restart it")
    fixes.append(f"to give up on a job: {s.command('jobs cancel', str(stuck[0].id))}")
    return fixes


def workers_not_claiming(s: Snapshot) -> list[Finding]:
    threshold = max(30.0, 3 * s.settings.poll_interval)
    found = []
    for q in _ready_queues(s):
        waited = s.age(q.oldest_ready_at) if q.oldest_ready_at else 0.0
        idle = [p for p in s.live_workers if q.queue in p.queues and s.free_slots(p) > 0
                and s.age(p.started_at) > threshold]
        if waited <= threshold or not idle:
            continue
        evidence = [f"{_ready(s, q)} (over {threshold:g}s)"]
        evidence += _capped(
            f"worker {_where(p)}: {p.concurrency - s.free_slots(p)}/{p.concurrency} slots busy,"
            f" last heartbeat {_ago(s.age(p.heartbeat_at))} ago" for p in idle)
        sup = s.process(idle[0].supervisor_id)
        stop = f"kill -TERM {sup.pid} on {sup.host}, then " if sup else ""
        found.append(Finding(
            "workers_not_claiming", "problem",
            f"Workers listening to {q.queue!r} are alive but not claiming its jobs", evidence,
            "check the workers' logs for store errors and their connection to the store;"
            f" restart them: {stop}{s.worker_command('--queues', ','.join(idle[0].queues))}"))
    return found


def unknown_job_names(s: Snapshot) -> list[Finding]:
    live = s.live_workers
    known = {n for p in live for n in p.job_names}
    waiting = {n: c for n, c in s.facts.waiting_by_name.items() if live and n not in known}
    failing = s.facts.unknown_recent
    names = sorted(set(waiting) | set(failing))
    if not names:
        return []
    evidence = _capped(_unknown_line(s, n, waiting.get(n), failing.get(n)) for n in names)
    if live:
        evidence.append(f"live workers register {len(known)} job name(s)"
                        + (f": {', '.join(sorted(known)[:8])}" if known else ""))
    fix = ("make the worker's app import the module that defines each job, then restart the"
           f" workers: {s.worker_command()}; or drop the jobs:"
           f" {s.command('jobs list', '--name', names[0])} shows their ids, then"
           f" {s.command('jobs discard', 'ID')} ...")
    return [Finding("unknown_job_names", "problem", "Jobs no live worker can run (unknown names)",
                    evidence, fix)]


def dead_growing(s: Snapshot) -> list[Finding]:
    dead = s.facts.dead_recent
    total = sum(dead.values())
    if not total:
        return []
    top = sorted(dead.items(), key=lambda kv: (-kv[1], kv[0]))
    evidence = [f"{total} job(s) went dead in the last hour; most often:"]
    evidence += _capped((f"{n} x {name}: {cls or 'no error recorded'}" for (name, cls), n in top),
                        limit=5)
    return [Finding("dead_growing", "warning", "Jobs went dead in the last hour", evidence,
                    f"see them: {s.command('jobs list', '--state', 'dead')}; after fixing the"
                    f" cause, run them again: {s.command('jobs retry', '--all-dead')}")]


def scheduled_overdue(s: Snapshot) -> list[Finding]:
    f = s.facts
    if not f.overdue or f.oldest_overdue_at is None:
        return []
    evidence = [f"{f.overdue} scheduled or retrying job(s) more than {OVERDUE_AFTER:g}s past"
                f" their run time; the oldest was due {_ago(s.age(f.oldest_overdue_at))} ago"]
    if not any(p.kind == "supervisor" and s.alive(p) for p in s.processes):
        evidence.append("no live `conveyor worker` supervisor: nothing runs the scheduler")
    fix = f"start a worker (it runs the scheduler): {s.worker_command()}"
    if abs(s.skew) > SKEW_SHOWN:
        evidence.append(f"clock skew: the store's clock is {_ago(abs(s.skew))}"
                        f" {'ahead of' if s.skew > 0 else 'behind'} this host's")
        fix += "; fix the clocks with NTP on this host, the workers' hosts and the database"
    return [Finding("scheduled_overdue", "problem", "Scheduled jobs are overdue", evidence, fix)]


def queue_starved(s: Snapshot) -> list[Finding]:
    """Ready jobs wait while every live worker of their queue has its slots taken by other
    queues' jobs (strict order, or long jobs of another queue)."""
    found = []
    for q in _ready_queues(s):
        serving = [p for p in s.live_workers if q.queue in p.queues]
        waited = s.age(q.oldest_ready_at) if q.oldest_ready_at else 0.0
        if waited <= STARVED_AFTER or not serving or any(s.free_slots(p) > 0 for p in serving):
            continue
        ids = {p.id for p in serving}
        busy = Counter(j.queue for j in s.running if j.worker_id in ids and j.queue != q.queue)
        if not busy:
            continue  # busy with its own jobs: slow, not starved
        holder = busy.most_common(1)[0][0]
        evidence = [_ready(s, q), *_capped(
            f"worker {_where(p)} (queues {','.join(p.queues)}): all {p.concurrency} slots busy"
            for p in serving)]
        evidence.append("running there: " + ", ".join(f"{n} from {k!r}" for k, n in busy.most_common()))
        fix = (f"give {q.queue!r} a worker of its own: {s.worker_command('--queues', q.queue)};"
               " or weigh the queues instead of --strict order:"
               f" {s.worker_command('--queues', f'{q.queue}:3,{holder}:1')}")
        found.append(Finding("queue_starved", "problem", f"Queue {q.queue!r} is starved by"
                             f" {holder!r} holding every slot of its workers", evidence, fix))
    return found


def blocked_behind_stuck(s: Snapshot) -> list[Finding]:
    """Jobs blocked on a concurrency key whose holder is stuck or on a dead worker."""
    blocked = {u.key: u for u in s.limits if u.blocked}
    stuck = [j for j in s.facts.stuck if j.concurrency_key in blocked]
    if not stuck:
        return []
    evidence = _capped(f"key {j.concurrency_key!r}: {blocked[j.concurrency_key].blocked} job(s)"
                       f" blocked behind {_why_stuck(s, j)}" for j in stuck
                       if j.concurrency_key is not None)
    fix = (f"a dead worker's jobs are rescued {s.settings.rescue_after:g}s after its last sign of"
           " life (a rescued holder keeps its slot and runs again first); to free the key now:"
           f" {s.command('jobs cancel', str(stuck[0].id))}")
    return [Finding("blocked_behind_stuck", "problem",
                    "Jobs are blocked behind a concurrency key whose holder is stuck", evidence, fix)]


def rate_backlog_growing(s: Snapshot) -> list[Finding]:
    """More jobs of a rate key arrived in the last minute than its rate lets start in one, and
    more than a minute's worth wait: the backlog grows and no worker can help."""
    growing = [r for r in s.rates if r.recent > r.per_minute and r.waiting > r.per_minute]
    if not growing:
        return []
    evidence = _capped(
        f"rate {r.key!r} ({r.count} per {r.period:g}s = {r.per_minute:g}/min): {r.waiting} waiting,"
        f" {r.recent} enqueued in the last minute; draining them takes"
        f" {_ago(r.waiting / r.per_minute * 60)} at that rate" for r in growing)
    return [Finding("rate_backlog_growing", "warning",
                    "A rate-limited backlog grows faster than its rate can drain it", evidence,
                    "raise the rate if the service behind it allows, enqueue that job less often,"
                    " or give it a rate per key (RateLimit(rate, key=...)); the rate is shared by"
                    " every worker, so more workers do not drain it sooner")]


DIAGNOSES: tuple[Callable[[Snapshot], list[Finding]], ...] = (
    no_workers, queue_not_served, paused_queue_waiting, stuck_running, workers_not_claiming,
    queue_starved, blocked_behind_stuck, rate_backlog_growing, unknown_job_names, dead_growing,
    scheduled_overdue,
)


def store_unreachable(error: Exception, app_path: str | None, url: str) -> Finding:
    migrate = "conveyor migrate" + (f" -A {app_path}" if app_path else "")
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    fix = ("check that the database is up and that CONVEYOR_DATABASE_URL (or the app's URL)"
           f" points at it; a new store needs: {migrate}")
    if isinstance(error, SchemaError):
        fix = ("upgrade conveyor on this host" if first.endswith("upgrade conveyor")
               else f"create or upgrade the schema: {migrate}")
    title = "The store cannot be used" if isinstance(error, SchemaError) else (
        "The store cannot be reached")
    return Finding("store_unreachable", "problem", title, [first, f"store: {redact_url(url)}"], fix)


def findings(s: Snapshot) -> list[Finding]:
    """Every diagnosis over one snapshot, in a fixed order."""
    return [finding for check in DIAGNOSES for finding in check(s)]


def diagnose(app: Conveyor, *, now: datetime | None = None, app_path: str | None = None) -> Report:
    """Diagnose ``app``'s store; ``app_path`` (``tasks:app``) goes into the fix commands."""
    try:
        s = take_snapshot(app, now, app_path)
    except (StoreError, ConfigurationError) as e:
        return Report([store_unreachable(e, app_path, app.url)], redact_url(app.url))
    return Report(findings(s), redact_url(app.url), s.now.isoformat(), summary(s))


# --- wording ---------------------------------------------------------------------------------
def _ready_queues(s: Snapshot) -> list[QueueStats]:
    return [q for q in s.queues if not q.paused and q.count(JobState.READY)]


def _ready(s: Snapshot, q: QueueStats) -> str:
    oldest = f", oldest waiting {_ago(s.age(q.oldest_ready_at))}" if q.oldest_ready_at else ""
    return f"queue {q.queue!r}: {q.count(JobState.READY)} ready{oldest}"


def _where(p: ProcessRecord) -> str:
    return f"{p.id} on {p.host} (pid {p.pid})"


def _why_stuck(s: Snapshot, job: JobRecord) -> str:
    ran = s.age(job.started_at) if job.started_at else 0.0
    worker = s.process(job.worker_id)
    if worker is None:
        why = f"its worker {job.worker_id} is not registered"
    elif not s.alive(worker):
        why = (f"its worker {_where(worker)} has not heartbeated for"
               f" {_ago(s.age(worker.heartbeat_at))}")
    else:
        why = f"on live worker {_where(worker)}"
    if job.timeout is not None and ran > job.timeout + TIMEOUT_GRACE:
        why = f"past its timeout of {job.timeout:g}s, {why}"
    return f"job {job.id} {job.name} (queue {job.queue!r}) running for {_ago(ran)}: {why}"


def _unknown_line(s: Snapshot, name: str, waiting: int | None, failed: int | None) -> str:
    parts = []
    if waiting:
        parts.append(f"{waiting} waiting, registered by no live worker")
    if failed:
        parts.append(f"{failed} failed with UnknownJob")
    if name in s.defined_here and s.app_path:
        parts.append(f"{s.app_path} defines it: the workers run older code?")
    return f"{name}: {'; '.join(parts)}"


def _capped(lines: Iterable[str], limit: int = MAX_LINES) -> list[str]:
    items = list(lines)
    return items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])


def summary(s: Snapshot) -> str:
    live = s.live_workers
    served = ",".join(sorted({q for p in live for q in p.queues})) or "-"
    count = {state: sum(q.count(state) for q in s.queues)
             for state in (JobState.READY, JobState.RUNNING, JobState.SCHEDULED)}
    return (f"{len(live)} live worker(s) ({sum(p.concurrency for p in live)} slots, queues"
            f" {served}); {count[JobState.READY]} ready, {count[JobState.RUNNING]} running,"
            f" {count[JobState.SCHEDULED]} scheduled")


def _ago(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d {int(s % 86400 // 3600)}h"
