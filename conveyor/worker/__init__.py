"""Worker processes: claim jobs into slots, run them, write their outcomes back.

- ``worker``: ``Worker``, one process, wiring the pieces below and running the claim loop
- ``claimer``: ``Claimer.step(now)``, one turn of claiming (ahead of free slots when jobs are short)
- ``hand``: ``Hand``, the jobs this process holds and how far each has got
- ``ledger``: that, in memory its supervisor can read after the process dies
- ``slots``: slot threads for sync jobs, one event loop for async ones
- ``completer``: writes outcomes back, with the next claim or in batches
- ``heartbeat``: keeps the process visibly alive, relays cancellations
- ``sandbox``: runs a suspect alone in a fresh process, to tell a poison pill from bystanders
- ``pacing``: how many jobs to claim ahead, and how to wait out a store outage
"""

from __future__ import annotations

from .ledger import Ledger
from .pacing import PREFETCH_MAX, Outage, Pace
from .worker import Worker

__all__ = ["PREFETCH_MAX", "Ledger", "Outage", "Pace", "Worker"]
