"""Running the dashboard: uvicorn on one address, quiet, with the Host names it answers."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator, Sequence

import uvicorn
from starlette.types import ASGIApp

from dtq_core.dashboard.app import Dashboard
from dtq_core.errors import ConfigError
from dtq_core.queue import Queue

#: Addresses that only this machine reaches.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def allowed_hosts_for(host: str) -> list[str]:
    """The ``Host`` names a dashboard bound to ``host`` answers.

    Bound to loopback, only loopback names: a web page elsewhere cannot then
    reach it by pointing a name of its own at 127.0.0.1 (DNS rebinding).
    Bound elsewhere, any name (narrow it with ``--allowed-host``).
    """
    # Starlette reads the Host header's IPv6 address with its brackets.
    return ["127.0.0.1", "localhost", "[::1]"] if host in LOOPBACK else ["*"]


def serve(
    queue: Queue,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> None:
    """Serve the dashboard until SIGINT or SIGTERM, then return (call it from the main thread).

    Raises:
        ConfigError: ``token`` is too short to be safe.
    """
    dashboard = Dashboard(queue, token=token, allowed_hosts=allowed_hosts or allowed_hosts_for(host))
    server = uvicorn.Server(_config(dashboard.app(), host, port))
    # uvicorn shuts down gracefully on the signal, then raises it again for the
    # handler it found: let that handler end the run quietly, as dtq worker does.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except _Stopped:
        pass
    except SystemExit as exc:
        if exc.code != _STARTUP_FAILURE:
            raise
        # uvicorn logged why (the port in use, say) and exits 3, which dtq's exit codes
        # keep for an unreachable engine.
        raise ConfigError(
            f"the dashboard could not start on {host}:{port} (uvicorn's error above says why: a port "
            "in use?); choose another --port or --host"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: uvicorn's exit code when its server cannot start.
_STARTUP_FAILURE = 3


class _Stopped(Exception):
    """The dashboard was asked to stop by a signal (after a graceful shutdown)."""


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped


@contextlib.contextmanager
def serving_in_thread(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a background thread for the duration of the block; yield its base URL.

    For tests and tools (``scripts/screenshots.py``): ``port=0`` takes a free one.

    Raises:
        RuntimeError: the server did not start within ten seconds.
    """
    server = uvicorn.Server(_config(app, host, port))
    thread = threading.Thread(target=server.run, name="dtq-dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the dashboard did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(10)


def _config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """Quiet (warnings only, no access log, no Server header), plain HTTP, no lifespan."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        ws="none",
        lifespan="off",
    )
