"""dtq: a distributed task queue with self-describing jobs and pip-installable plugins.

The public API::

    from dtq_core import Queue, Worker, Job, Plugin, ValidationError

Applications append jobs with :class:`Queue`; workers process them with
:class:`Worker`; plugins derive from :class:`Plugin` and register under the
``dtq.plugins`` entry-point group.
"""

from dtq_core.engine import AppendOutcome, Engine, Lease, Outcome, open_engine
from dtq_core.errors import (
    DtqError,
    DuplicateJob,
    DuplicatePlugin,
    EngineError,
    EngineUnavailable,
    InvalidJob,
    JobFailed,
    JobNotFound,
    PayloadTooLarge,
    PluginError,
    PluginLoadError,
    PluginNotAllowed,
    ResultTimeout,
    UnknownEngine,
    UnknownPlugin,
    ValidationError,
)
from dtq_core.job import ErrorInfo, Job, JobStatus
from dtq_core.plugin import PLUGIN_API_VERSION, Plugin
from dtq_core.queue import Queue
from dtq_core.worker import Worker

__all__ = [
    "PLUGIN_API_VERSION",
    "AppendOutcome",
    "DtqError",
    "DuplicateJob",
    "DuplicatePlugin",
    "Engine",
    "EngineError",
    "EngineUnavailable",
    "ErrorInfo",
    "InvalidJob",
    "Job",
    "JobFailed",
    "JobNotFound",
    "JobStatus",
    "Lease",
    "Outcome",
    "PayloadTooLarge",
    "Plugin",
    "PluginError",
    "PluginLoadError",
    "PluginNotAllowed",
    "Queue",
    "ResultTimeout",
    "UnknownEngine",
    "UnknownPlugin",
    "ValidationError",
    "Worker",
    "open_engine",
]
