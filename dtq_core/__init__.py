"""dtq: a distributed task queue with self-describing jobs and pip-installable plugins.

The public API::

    from dtq_core import Queue, Worker, Job, Plugin, ValidationError

Applications append jobs with :class:`Queue`; workers process them with
:class:`Worker`; plugins derive from :class:`Plugin` and register under the
``dtq.plugins`` entry-point group.
"""

from dtq_core.caller import Caller
from dtq_core.config import Settings
from dtq_core.engine import (
    Appending,
    AppendOutcome,
    Batch,
    CancelOutcome,
    Completion,
    Engine,
    Event,
    EventType,
    Lease,
    MinuteCounts,
    Outcome,
    QueueStats,
    Recorded,
    ReleaseOutcome,
    Renewal,
    Stats,
    open_engine,
)
from dtq_core.errors import (
    Cancelled,
    ConfigError,
    DtqError,
    DuplicateJob,
    DuplicatePlugin,
    EngineError,
    EngineUnavailable,
    InvalidJob,
    JobFailed,
    JobNotFound,
    JobProcessError,
    MalformedRecord,
    NotReplicated,
    NotSupported,
    PayloadTooLarge,
    Permanent,
    PluginError,
    PluginIncompatible,
    PluginLoadError,
    PluginNotAllowed,
    ResultTimeout,
    Retry,
    UnknownEngine,
    UnknownPlugin,
    ValidationError,
)
from dtq_core.job import ErrorInfo, Job, JobStatus
from dtq_core.periodic import Periodic
from dtq_core.plugin import PLUGIN_API_VERSION, Plugin
from dtq_core.queue import Queue
from dtq_core.retry import RetryPolicy
from dtq_core.worker import Worker

__all__ = [
    "PLUGIN_API_VERSION",
    "AppendOutcome",
    "Appending",
    "Batch",
    "Caller",
    "CancelOutcome",
    "Cancelled",
    "Completion",
    "ConfigError",
    "DtqError",
    "DuplicateJob",
    "DuplicatePlugin",
    "Engine",
    "EngineError",
    "EngineUnavailable",
    "ErrorInfo",
    "Event",
    "EventType",
    "InvalidJob",
    "Job",
    "JobFailed",
    "JobNotFound",
    "JobProcessError",
    "JobStatus",
    "Lease",
    "MalformedRecord",
    "MinuteCounts",
    "NotReplicated",
    "NotSupported",
    "Outcome",
    "PayloadTooLarge",
    "Periodic",
    "Permanent",
    "Plugin",
    "PluginError",
    "PluginIncompatible",
    "PluginLoadError",
    "PluginNotAllowed",
    "Queue",
    "QueueStats",
    "Recorded",
    "ReleaseOutcome",
    "Renewal",
    "ResultTimeout",
    "Retry",
    "RetryPolicy",
    "Settings",
    "Stats",
    "UnknownEngine",
    "UnknownPlugin",
    "ValidationError",
    "Worker",
    "open_engine",
]
