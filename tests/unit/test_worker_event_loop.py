from __future__ import annotations

import asyncio
import threading
import time

from conveyor.worker.slots import AsyncLoop


def test_threads_starting_async_jobs_at_once_share_one_event_loop(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    make = asyncio.new_event_loop

    def slow_new_loop() -> asyncio.AbstractEventLoop:
        time.sleep(0.02)  # widen the window in which a second thread could make its own
        return make()

    monkeypatch.setattr(asyncio, "new_event_loop", slow_new_loop)
    async_loop = AsyncLoop()
    barrier = threading.Barrier(8)
    loops = []

    def start() -> None:
        barrier.wait()
        loops.append(async_loop.get())

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(loop) for loop in loops}) == 1
    loops[0].call_soon_threadsafe(loops[0].stop)
