"""The web dashboard (``dtq dashboard``): watch queues, workers and jobs, and steer them from a browser.

Needs the ``dashboard`` extra (``pip install 'dtq-core[dashboard]'``):
Starlette serves it, Jinja2 renders it and uvicorn runs it. :class:`Dashboard`
builds the ASGI application; :func:`~dtq_core.dashboard.server.serve` runs it.
Pages and live updates are in :mod:`.app`, what they read in :mod:`.data`,
what the buttons do in :mod:`.actions`, who may press them in :mod:`.security`.
"""

from __future__ import annotations

from dtq_core.dashboard.app import Dashboard

__all__ = ["Dashboard"]
