"""``dtq dashboard``: serve the web dashboard (needs the ``dashboard`` extra)."""

from __future__ import annotations

import click

from dtq_core.cli.app import main
from dtq_core.cli.common import engine_options, fail, friendly, settings
from dtq_core.config import Settings, mask_url
from dtq_core.queue import Queue

_INSTALL = "pip install 'dtq-core[dashboard]'"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A Host name the dashboard answers (repeatable); default: loopback names when bound to "
    "127.0.0.1 or localhost, any name otherwise.",
)
@engine_options
@friendly
def dashboard(
    host: str, port: int, allowed_hosts: tuple[str, ...], url: str | None, namespace: str | None
) -> None:
    """Serve the web dashboard: queues, workers and jobs, live, and actions on them.

    Reading needs nothing; requeue, cancel and delete need the dashboard token
    (setting dashboard_token, env DTQ_DASHBOARD_TOKEN): without one the
    dashboard is read-only. It listens on 127.0.0.1 unless told otherwise.

    \b
    Examples:
      DTQ_DASHBOARD_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))') dtq dashboard
      dtq dashboard --port 8080 --namespace shop
    """
    try:
        from dtq_core.dashboard.security import check_token
        from dtq_core.dashboard.server import LOOPBACK, serve
    except ImportError as exc:
        fail(f"the dashboard needs packages that are not installed ({exc.name}): {_INSTALL}")
    chosen = settings(url=url, namespace=namespace)
    check_token(chosen.dashboard_token)
    with Queue(settings=chosen) as queue:
        queue.engine.ping()
        click.echo(_banner(chosen, host, port), err=True)
        if host not in LOOPBACK:
            click.echo(
                f"warning: listening on {host}: whoever reaches this port can read job data; "
                "put it behind TLS and a proxy that controls access",
                err=True,
            )
        serve(queue, host=host, port=port, token=chosen.dashboard_token, allowed_hosts=allowed_hosts or None)


def _banner(chosen: Settings, host: str, port: int) -> str:
    """What the dashboard serves and whether actions are on; never the token itself."""
    shown_host = f"[{host}]" if ":" in host else host
    actions = (
        f"actions enabled (token from {chosen.source('dashboard_token')})"
        if chosen.dashboard_token
        else "read-only: set dashboard_token (DTQ_DASHBOARD_TOKEN) to enable actions"
    )
    return (
        f"dtq dashboard on http://{shown_host}:{port}/ for namespace {chosen.namespace!r} "
        f"at {mask_url(chosen.url)}; {actions}"
    )
