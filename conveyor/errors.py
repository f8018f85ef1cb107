"""Every error conveyor raises derives from :class:`ConveyorError`.

::

    ConveyorError
    ├── ConfigurationError        bad URL, bad setting, app path that does not resolve
    ├── StoreError
    │   ├── StoreUnavailable      the database cannot be reached (driver errors wrapped here)
    │   ├── SchemaError           schema missing, or newer than this code understands
    │   └── CorruptRow            a stored row this code cannot read (edited by hand, say)
    ├── JobNotFound               no job with that id
    ├── UnknownJob                no job definition registered under that name
    ├── InvalidState              the action does not apply to the job's current state
    ├── DuplicateJob              a unique job already exists (on_conflict="raise")
    ├── ArgumentEncodingError     (also a TypeError) arguments or result not JSON-encodable
    ├── JobFailed                 handle.result() of a job that ended dead or cancelled
    ├── WaitTimeout               (also a TimeoutError) handle.wait() ran out of time
    └── JobInterrupted            why a running attempt was stopped from outside
        ├── JobTimeout            it ran past its timeout
        ├── WorkerLost            its worker process died or stopped heartbeating
        ├── MemoryExceeded        its worker grew past max_memory
        └── JobCancelled          its cancellation was requested
"""

from __future__ import annotations


class ConveyorError(Exception):
    """conveyor failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(ConveyorError):
    """conveyor is misconfigured."""


class StoreError(ConveyorError):
    """The job store failed."""


class StoreUnavailable(StoreError):
    """The job store cannot be reached."""


class SchemaError(StoreError):
    """The store's schema is missing or newer than this version of conveyor."""


class CorruptRow(StoreError):
    """A stored row holds a value this version of conveyor cannot read."""


class JobNotFound(ConveyorError):
    """No job with that id."""


class UnknownJob(ConveyorError):
    """No job is registered under that name."""


class InvalidState(ConveyorError):
    """The action does not apply to the job in its current state."""


class DuplicateJob(ConveyorError):
    """A job with the same unique key already exists."""

    def __init__(
        self, message: str | None = None, *, existing_id: int | None = None,
        unique_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.existing_id = existing_id  # the unfinished job holding the key, when known
        self.unique_key = unique_key


class ArgumentEncodingError(ConveyorError, TypeError):
    """A value cannot be encoded as conveyor JSON."""


class JobFailed(ConveyorError):
    """The job did not succeed."""


class WaitTimeout(ConveyorError, TimeoutError):
    """The job did not finish in time."""


class JobInterrupted(ConveyorError):
    """The attempt was stopped from outside the job."""


class JobTimeout(JobInterrupted):
    """The job ran past its timeout."""


class WorkerLost(JobInterrupted):
    """The worker running the job died or stopped heartbeating."""


class MemoryExceeded(JobInterrupted):
    """The worker running the job grew past its memory limit."""


class JobCancelled(JobInterrupted):
    """The job's cancellation was requested."""
