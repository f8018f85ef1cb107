"""Scheduled jobs and retries whose time has come become ready."""

from __future__ import annotations

import logging
from datetime import datetime

from ..store import Store

log = logging.getLogger("conveyor.maintenance")


class Promote:
    def __init__(self, store: Store) -> None:
        self.store = store

    def run_once(self, now: datetime | None = None) -> int:
        n = self.store.jobs_promote(now=now)
        if n:
            log.debug("promoted due jobs", extra={"jobs": n})
        return n
