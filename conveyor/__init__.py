"""conveyor: background jobs for Python."""

from __future__ import annotations

import logging

from .app import Conveyor
from .client import JobHandle
from .context import JobContext, current_job
from .errors import (
    ArgumentEncodingError,
    ConfigurationError,
    ConveyorError,
    CorruptRow,
    DuplicateJob,
    InvalidState,
    JobCancelled,
    JobFailed,
    JobInterrupted,
    JobNotFound,
    JobTimeout,
    MemoryExceeded,
    SchemaError,
    StoreError,
    StoreUnavailable,
    UnknownJob,
    WaitTimeout,
    WorkerLost,
)
from .flow import Limit, RateLimit
from .jobs import JobDefinition, PreparedJob
from .models import AttemptOutcome, JobRecord, JobState
from .retry import Retry

__version__ = "0.1.0"
logging.getLogger("conveyor").addHandler(logging.NullHandler())

__all__ = [
    "ArgumentEncodingError",
    "AttemptOutcome",
    "ConfigurationError",
    "Conveyor",
    "ConveyorError",
    "CorruptRow",
    "DuplicateJob",
    "InvalidState",
    "JobCancelled",
    "JobContext",
    "JobDefinition",
    "JobFailed",
    "JobHandle",
    "JobInterrupted",
    "JobNotFound",
    "JobRecord",
    "JobState",
    "JobTimeout",
    "Limit",
    "MemoryExceeded",
    "PreparedJob",
    "RateLimit",
    "Retry",
    "SchemaError",
    "StoreError",
    "StoreUnavailable",
    "UnknownJob",
    "WaitTimeout",
    "WorkerLost",
    "__version__",
    "current_job",
]
