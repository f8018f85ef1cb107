"""Where jobs run: ``Slots`` (threads for sync jobs) and ``AsyncLoop`` (one event loop for
async ones)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from .. import executor

log = logging.getLogger("conveyor.worker")


class Slots:
    """``size`` threads running sync jobs handed over through one queue. Lighter than a
    ThreadPoolExecutor (no Future, no idle semaphore per call): a hand-over is one put()."""

    def __init__(self, size: int, run: Callable[[executor.Call], None]) -> None:
        self._calls: queue.SimpleQueue[executor.Call | None] = queue.SimpleQueue()
        self._run = run
        self._threads = [
            threading.Thread(target=self._loop, name=f"conveyor-job-{i}", daemon=True)
            for i in range(size)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, call: executor.Call) -> None:
        self._calls.put(call)

    def _loop(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                self._run(call)
            except BaseException:  # never lose the slot: the run already recorded what it could
                log.exception("slot thread: unexpected error after a job", extra={
                    "job_id": call.job.id})

    def shutdown(self) -> None:
        """Threads still in a job finish it and then stop; idle ones stop at once."""
        for _ in self._threads:
            self._calls.put(None)


class AsyncLoop:
    """The one event loop for async jobs, in its own thread, made on first use. Jobs start from
    the claim loop and from slot threads (a job that waited), so it is made under a lock, or
    two loops could exist."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="conveyor-async",
                                 daemon=True).start()
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.get())
