"""The ``dtq`` command: ``main`` is its entry point.

Commands by audience: ``jobs`` (enqueue, status, result, cancel, retry),
``operate`` (worker, stats, workers, health, events, config, dead letters,
purge), ``plugins`` (plugins, plugin new), ``dashboard`` (the web
dashboard). ``common`` holds exit codes, settings and output helpers.
"""

from dtq_core.cli import dashboard, jobs, operate, plugins
from dtq_core.cli.app import main

__all__ = ["dashboard", "jobs", "main", "operate", "plugins"]
