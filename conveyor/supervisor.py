"""The ``conveyor worker`` process: forks worker children, restarts them, runs leader duties.

Signals: SIGTERM (or a first SIGINT) stops gracefully — children stop claiming, finish running
jobs up to ``shutdown_timeout`` and return the rest to ``ready``; a second SIGINT forces.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from . import executor
from .clock import utcnow
from .context import JobContext
from .errors import ConveyorError, JobCancelled, JobTimeout, StoreError, StoreUnavailable
from .maintenance import CronScheduler, Duty, Maintenance, Watchdog
from .models import AttemptOutcome, Held, JobFilter, JobOutcome, JobRecord, JobState, ProcessRecord
from .queues import QueueSpec
from .urls import redact_url
from .worker import Ledger, Outage, Worker
from .worker.memory import EXIT_REPLACE

if TYPE_CHECKING:
    from .app import Conveyor
    from .health import HealthServer

log = logging.getLogger("conveyor.supervisor")
LEADER = "maintenance"
TICK = 0.1
QUICK_DEATH = 1.0  # seconds: a child that dies younger than this counts towards a crash loop
_inherited: list[Any] = []  # the parent's store objects, kept unclosed in a forked child


class Served(Protocol):
    """A server the supervisor answers from its loop (``/metrics``); a child closes its socket."""

    server: Any

    def poll(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class Child:
    slot: int
    worker_id: str
    started: float
    ledger: Ledger  # what the child holds, still readable once it has died


class Supervisor:
    def __init__(
        self, app: Conveyor, *, processes: int = 1, concurrency: int = 10,
        queues: QueueSpec | None = None, health_port: int | None = None,
        health_host: str = "0.0.0.0", servers: Sequence[Served] = (),
    ) -> None:
        if processes < 1 or concurrency < 1:
            raise ValueError("processes and concurrency must be >= 1")
        self.app = app
        self.processes = processes
        self.concurrency = concurrency
        self.queues = queues or QueueSpec()
        self.id = f"s-{uuid.uuid4().hex[:12]}"
        self.children: dict[int, Child] = {}
        self.maintenance: Maintenance | None = None  # made once the store answers
        self.cron: CronScheduler | None = None  # in every supervisor, leader or not
        self._stopping = False
        self._force = False
        self._leader = False
        self._crashes: dict[int, int] = {}  # slot -> consecutive quick deaths
        self._restart_at: dict[int, float] = {}
        self._watchdog = Duty(every=0.25)
        self._store_ok = False
        self._store_lost_at: float | None = None  # when the store failed, until it answers
        self.health: HealthServer | None = None
        if health_port is not None:
            from .health import HealthServer  # http.server only when asked for

            self.health = HealthServer(health_host, health_port, live=self._live, ready=self._ready)
        self.servers = list(servers)  # e.g. /metrics: polled between ticks like the probes
        # worker id -> why it died and what it held, until its jobs are rescued
        self._orphans: dict[str, tuple[str, dict[int, Held]]] = {}

    # --- lifecycle ----------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        if not self._wait_for_store():
            return 0
        store, settings = self.app.store, self.app.settings
        self.maintenance = Maintenance(store, settings, self.app.clock)
        self.cron = CronScheduler(store, self.app.schedules.registry, self.id)
        self._watchdog.service = Watchdog(
            store, lambda: [c.worker_id for c in self.children.values()],
            cancel_grace=settings.cancel_grace)
        self._register()
        log.info("supervisor started", extra={
            "supervisor": self.id, "processes": self.processes, "concurrency": self.concurrency,
            "queues": str(self.queues), "store": redact_url(self.app.url)})
        for slot in range(self.processes):
            self._spawn(slot)
        beat = Outage("supervisor duties")
        while not self._stopping:
            self._reap()
            self._respawn_due()
            try:
                self._duties()
                self._store_ok = True
                beat.ok()
            except StoreError as e:
                self._store_ok = False
                if self._store_lost_at is None:
                    self._store_lost_at = time.monotonic()
                self._sleep(beat.failed(e))
            self._sleep(TICK)
        self._step_down()  # before waiting for the children: another host takes over duties
        self._stop_children()
        self._cleanup()
        return 0

    def _wait_for_store(self) -> bool:
        outage = Outage("supervisor start")
        while not self._stopping:
            try:
                self.app.check_schema(create=True)
                outage.ok()
                return True
            except StoreUnavailable as e:
                self._sleep(outage.failed(e))
        return False

    def _sleep(self, seconds: float) -> None:
        """Sleep, answering health probes meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            if self.health is not None:
                self.health.poll()
            for server in self.servers:
                server.poll()
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping:
                return
            time.sleep(min(left, TICK))

    def _live(self) -> tuple[bool, dict[str, Any]]:
        return True, {"supervisor": self.id, "workers": len(self.children)}

    def _ready(self) -> tuple[bool, dict[str, Any]]:
        full = len(self.children) == self.processes
        ok = self._store_ok and full and not self._stopping
        return ok, {"store": "ok" if self._store_ok else "unavailable",
                    "workers": len(self.children), "expected_workers": self.processes,
                    "stopping": self._stopping}

    def _register(self) -> None:
        now = utcnow()
        self.app.store.process_register(ProcessRecord(
            id=self.id, kind="supervisor", host=self.app.settings.host, pid=os.getpid(),
            started_at=now, heartbeat_at=now, queues=self.queues.names,
            concurrency=self.concurrency * self.processes,
            job_names=tuple(self.app.registry.names()),
        ))
        self._last_beat = time.monotonic()

    def _install_signals(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            if self._stopping and signum == signal.SIGINT:
                self._force = True
                for pid in self.children:
                    _kill(pid, signal.SIGINT)
            self._stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

    # --- children -------------------------------------------------------------------------
    def _spawn(self, slot: int) -> None:
        worker_id = f"w-{uuid.uuid4().hex[:12]}"
        ledger = Ledger.for_worker(self.concurrency)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                code = _child_main(self.app, worker_id, self, ledger)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = Child(slot, worker_id, time.monotonic(), ledger)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._child_exited(pid, child, status)

    def _child_exited(self, pid: int, child: Child, status: int) -> None:
        how = _describe_exit(status)
        code = os.waitstatus_to_exitcode(status)
        if self._stopping and code in (0, EXIT_REPLACE):
            return
        if code == EXIT_REPLACE:  # over a memory limit: it asked to be replaced
            log.warning("worker process replaced (memory limit)", extra={"pid": pid})
            self._restart_at[child.slot] = time.monotonic()
            self._orphan(child, f"worker process {pid} replaced: over a memory limit")
            self._rescue_orphans()
            return
        # only a child dying as it starts (a broken import, a bad setting) is a crash loop worth
        # slowing down; one killed after it had been working is replaced at once
        quick = time.monotonic() - child.started < QUICK_DEATH
        crashes = self._crashes[child.slot] = self._crashes.get(child.slot, 0) + 1 if quick else 0
        delay = min(10.0, 0.25 * 2 ** (crashes - 1)) if quick else 0.0
        self._restart_at[child.slot] = time.monotonic() + delay
        log.error("worker process died; restarting", extra={"pid": pid, "exit": how})
        self._orphan(child, f"worker process {pid} {how}")
        self._rescue_orphans()

    def _orphan(self, child: Child, reason: str) -> None:
        self._orphans[child.worker_id] = (reason, child.ledger.read())
        child.ledger.close()

    def _rescue_orphans(self) -> None:
        """Jobs of children that died: rescued now, or as soon as the store answers again."""
        for worker_id, (reason, held) in list(self._orphans.items()):
            try:
                rescued = self.app.store.jobs_rescue([worker_id], reason, held=held)
                self.app.store.process_deregister(worker_id)
            except StoreError:
                return  # retried on the next tick; stale-heartbeat rescue is the backstop
            del self._orphans[worker_id]
            if rescued:
                log.warning("rescued jobs of a dead worker", extra={
                    "worker": worker_id, "jobs": ",".join(map(str, rescued))})

    def _respawn_due(self) -> None:
        for slot, when in list(self._restart_at.items()):
            if time.monotonic() >= when and not self._stopping:
                del self._restart_at[slot]
                self._spawn(slot)

    def _duties(self) -> None:
        store = self.app.store
        if self._orphans:
            self._rescue_orphans()
        if time.monotonic() - self._last_beat >= self.app.settings.heartbeat_every:
            store.process_heartbeat(self.id)
            self._last_beat = time.monotonic()
        ttl = max(5.0, self.app.settings.rescue_after / 2)
        leader = store.leader_acquire(LEADER, self.id, ttl)
        if self._store_lost_at is not None and self.maintenance is not None:
            back = time.monotonic()  # let workers heartbeat first (see maintenance.rescue)
            self.maintenance.rescue.hold(back, down=back - self._store_lost_at)
        self._store_lost_at = None
        if leader != self._leader:
            log.info("leadership %s", "acquired" if leader else "lost",
                     extra={"supervisor": self.id})
            self._leader = leader
        if leader and self.maintenance is not None:
            self.maintenance.run_once()
        if self.cron is not None:
            self.cron.run_once()
        if self._watchdog.due(time.monotonic()):
            self._stop_overdue()

    # --- hard timeouts and ignored cancellations --------------------------------------------
    def _stop_overdue(self) -> None:
        """A job past its timeout (or its cancellation grace) may be stuck where no thread can
        be interrupted — C code, a socket read — so its whole worker process is replaced."""
        assert isinstance(self._watchdog.service, Watchdog)
        pids = {c.worker_id: pid for pid, c in self.children.items()}
        for worker_id, jobs in self._watchdog.service.run_once().items():
            if worker_id in pids:
                self._replace(pids[worker_id], jobs)

    def _replace(self, pid: int, overdue: list[JobRecord]) -> None:
        child = self.children.pop(pid)
        _kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self._restart_at[child.slot] = time.monotonic()  # whatever happens next, the slot returns
        self._orphan(child, f"worker process {pid} replaced to stop an overdue job")
        store = self.app.store
        stopped = [self._stopped(job) for job in overdue]
        accepted = store.job_finish_many(stopped)
        for outcome, ok in zip(stopped, accepted, strict=True):  # events once the store took it
            if ok and outcome.job is not None:
                self.app.fire(executor.EVENT_OF[outcome.state], outcome.job, outcome.error)
        others = [j for j in store.job_list(JobFilter(states=(JobState.RUNNING,),
                                                      worker_id=child.worker_id, limit=10_000))]
        ids = ", ".join(str(j.id) for j in overdue)
        held = self._orphans[child.worker_id][1]
        for started in (True, False):  # those that never started get no attempt row
            store.job_release(
                [(j.id, j.lease or "") for j in others
                 if (held.get(j.id, Held.WAITING) is not Held.WAITING) is started],
                reason=f"worker replaced to stop job {ids}; attempt not counted", started=started)
        store.process_deregister(child.worker_id)
        del self._orphans[child.worker_id]
        log.warning("replaced a worker to stop overdue jobs", extra={
            "pid": pid, "jobs": ids, "stopped": sum(accepted), "returned": len(others)})

    def _stopped(self, job: JobRecord) -> JobOutcome:
        started = job.started_at or utcnow()
        ran = (utcnow() - started).total_seconds()
        error: ConveyorError
        if job.timeout is not None and ran >= job.timeout:
            error = JobTimeout(f"job ran past its timeout of {job.timeout:g}s; worker replaced")
        else:
            error = JobCancelled(
                f"cancellation not honoured within {self.app.settings.cancel_grace:g}s; "
                "worker replaced")
        try:
            definition = self.app.registry.resolve(job.name)
        except ConveyorError:
            definition = None
        call = executor.Call(job, job.worker_id or "", JobContext(), definition=definition)
        runtime = executor.Runtime(self.app.registry, self.app.clock, lambda: None)
        outcome = executor.failure(runtime, call, error)
        if isinstance(error, JobCancelled):
            outcome.outcome = AttemptOutcome.CANCEL_FORCED
        return outcome

    def _stop_children(self) -> None:
        for pid in list(self.children):
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.app.settings.shutdown_timeout + 10
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid, child in list(self.children.items()):
            log.error("worker did not stop in time; killing", extra={"pid": pid})
            _kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self._orphan(child, f"worker process {pid} killed at shutdown")
            del self.children[pid]
        self._rescue_orphans()

    def _step_down(self) -> None:
        """Hand leadership on at once: a graceful stop may wait shutdown_timeout for running
        jobs, and meanwhile nobody else could promote scheduled jobs or rescue lost ones."""
        if not self._leader:
            return
        try:
            self.app.store.leader_release(LEADER, self.id)
            self._leader = False
            log.info("leadership released: stopping", extra={"supervisor": self.id})
        except StoreError as e:
            log.warning("could not release leadership", extra={"error": str(e)})

    def _cleanup(self) -> None:
        try:
            self._step_down()
            self.app.store.process_deregister(self.id)
        except StoreError as e:
            log.warning("could not deregister supervisor", extra={"error": str(e)})
        self.app.close()
        if self.health is not None:
            self.health.close()
        for server in self.servers:
            server.close()
        log.info("supervisor stopped", extra={"supervisor": self.id})


def _child_main(app: Conveyor, worker_id: str, parent: Supervisor, ledger: Ledger) -> int:
    _inherited.append(app.use_store(None))  # the parent's: never touch or close them
    if parent.health is not None:
        parent.health.server.socket.close()  # the probe port is the supervisor's alone
    for server in parent.servers:
        server.server.socket.close()
    worker = Worker(app, worker_id=worker_id, queues=parent.queues,
                    concurrency=parent.concurrency, supervisor_id=parent.id, ledger=ledger)
    interrupts = {"n": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            interrupts["n"] += 1
        worker.request_stop(force=interrupts["n"] >= 2)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return worker.run()


def _kill(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
