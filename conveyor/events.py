"""Typed job events, fired only after the store has accepted the change they announce.

``Events`` is a small registry: ``events.on(Event.SUCCEEDED)(hook)`` subscribes, ``fire``
calls every hook with ``(job_record, error_or_None)``. A hook that raises is logged and
skipped: a broken error tracker never breaks a job or an enqueue.

Who fires what:

- ``enqueued``: the client, once the insert has committed (not for an enqueue inside the
  caller's own transaction: see ``Client.enqueue_many``).
- ``started``: the worker (and ``conveyor.testing``) as the job's code starts.
- ``succeeded``, ``failed`` (will retry), ``dead``, ``cancelled``: the worker (and
  ``conveyor.testing``) once the store accepted the outcome. An outcome the store refused (a
  stale claim: the job was rescued meanwhile) fires nothing.

Hooks get the record with the values of the job's sensitive argument keys redacted
(``views.redacted``): an error tracker or a log shipper never sees them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from .models import JobRecord
from .views import redacted

log = logging.getLogger("conveyor")
Hook = Callable[[JobRecord, BaseException | None], Any]


class Event(StrEnum):
    ENQUEUED = "enqueued"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an attempt failed; the job will run again
    DEAD = "dead"
    CANCELLED = "cancelled"


def event_named(name: Event | str) -> Event:
    """The event called ``name``; ValueError naming the known ones otherwise."""
    try:
        return Event(name)
    except ValueError:
        known = ", ".join(e.value for e in Event)
        raise ValueError(f"unknown event {name!r}; expected one of {known}") from None


class Events:
    """Hooks by event. Subscribing is rare and locked; firing reads a tuple and takes no lock."""

    def __init__(self) -> None:
        self._hooks: dict[str, tuple[Hook, ...]] = {e.value: () for e in Event}
        self._lock = threading.Lock()

    def on(self, event: Event | str) -> Callable[[Hook], Hook]:
        """A decorator subscribing ``hook`` to ``event``; returns the hook unchanged."""
        name = event_named(event)

        def register(hook: Hook) -> Hook:
            self.add(name, hook)
            return hook

        return register

    def add(self, event: Event | str, hook: Hook) -> None:
        name = event_named(event)
        with self._lock:
            self._hooks[name] = (*self._hooks[name], hook)

    def remove(self, event: Event | str, hook: Hook) -> None:
        """Unsubscribe ``hook`` (its last subscription); nothing if it was not subscribed."""
        name = event_named(event)
        with self._lock:
            hooks = list(self._hooks[name])
            if hook in hooks:
                del hooks[len(hooks) - 1 - hooks[::-1].index(hook)]
                self._hooks[name] = tuple(hooks)

    def wanted(self, event: Event | str) -> bool:
        """Whether anyone listens: lets a caller skip building what only hooks would read."""
        return bool(self._hooks.get(event))

    def fire(self, event: Event | str, job: JobRecord, error: BaseException | None = None) -> None:
        """Call each hook of ``event`` in subscription order; one that raises is logged."""
        hooks = self._hooks.get(event)
        if hooks is None:
            event_named(event)  # raises, naming the known events
            return
        if hooks and job.sensitive:
            job = redacted(job)
        for hook in hooks:
            try:
                hook(job, error)
            except Exception:  # a broken error tracker must not break the job
                log.exception("hook %s for %s raised", getattr(hook, "__name__", hook), event,
                              extra={"job_id": job.id})
