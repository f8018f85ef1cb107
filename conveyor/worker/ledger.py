"""What a worker process holds, written where its supervisor can still read it after a SIGKILL.

The supervisor maps one anonymous shared page per child before it forks. The child records each
job it holds and how far it got (claimed and waiting, running, finished with its outcome not yet
written) with a plain memory write: no system call, nothing on the hot path but a struct pack.
When the child dies, the supervisor reads the page and tells the store exactly which jobs were
running (they pay: a worker_lost attempt and a strike) and which never started (they go back
with nothing recorded). Without a ledger (a whole host lost) every job counts as running.
"""

from __future__ import annotations

import mmap
import struct
import threading

from ..models import Held

_ENTRY = struct.Struct("=qq")  # job id, stage code
_CODES = {Held.WAITING: 1, Held.RUNNING: 2, Held.FINISHED: 3}
_STAGES = {code: stage for stage, code in _CODES.items()}


class Ledger:
    """A fixed table of (job id, stage) in shared memory. A full table drops the newest holds
    (those jobs then count as never started), so size it well above what a worker holds."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._mem = mmap.mmap(-1, capacity * _ENTRY.size)  # MAP_SHARED: survives into fork()
        self._index: dict[int, int] = {}
        self._free = list(range(capacity - 1, -1, -1))
        self._lock = threading.Lock()

    @classmethod
    def for_worker(cls, concurrency: int) -> Ledger:
        # in hand: the slots, up to 3x as many claimed ahead, and outcomes waiting to be written
        return cls(max(1024, 8 * concurrency + 256))

    def hold(self, job_id: int, stage: Held) -> None:
        with self._lock:
            index = self._index.get(job_id)
            if index is None:
                if not self._free:
                    return
                index = self._index[job_id] = self._free.pop()
            _ENTRY.pack_into(self._mem, index * _ENTRY.size, job_id, _CODES[stage])

    def drop(self, job_id: int) -> None:
        with self._lock:
            index = self._index.pop(job_id, None)
            if index is not None:
                _ENTRY.pack_into(self._mem, index * _ENTRY.size, 0, 0)
                self._free.append(index)

    def read(self) -> dict[int, Held]:
        """Every job held and its stage (the supervisor reads this once the child is gone)."""
        held = {}
        for job_id, code in _ENTRY.iter_unpack(self._mem):
            if code:
                held[job_id] = _STAGES[code]
        return held

    def close(self) -> None:
        self._mem.close()
