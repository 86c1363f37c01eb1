"""The ``dtq`` command.

Exit codes: 0 success; 1 bad input or an unusable plugin; 2 wrong usage;
3 the engine cannot be reached; 4 the job failed or is dead; 5 timed out or
not found. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from dtq_core.config import DEFAULT_LEASE_S, DEFAULT_NAMESPACE, DEFAULT_URL
from dtq_core.errors import DtqError, EngineUnavailable, JobFailed, JobNotFound, ResultTimeout
from dtq_core.plugin import PluginRegistry
from dtq_core.queue import Queue
from dtq_core.worker import Worker

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_JOB_FAILED = 4
EXIT_NOT_READY = 5


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"dtq: error: {message}", err=True)
    sys.exit(code)


def _exit_code(exc: DtqError) -> int:
    if isinstance(exc, EngineUnavailable):
        return EXIT_UNREACHABLE
    if isinstance(exc, JobFailed):
        return EXIT_JOB_FAILED
    if isinstance(exc, (ResultTimeout, JobNotFound)):
        return EXIT_NOT_READY
    return EXIT_ERROR


def _friendly(func: F) -> F:
    """Turn dtq errors into one line on stderr and a documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DtqError as exc:
            _fail(str(exc), _exit_code(exc))

    return wrapper  # type: ignore[return-value]


def _engine_options(func: F) -> F:
    func = click.option(
        "--namespace",
        envvar="DTQ_NAMESPACE",
        default=DEFAULT_NAMESPACE,
        show_default=True,
        help="Scope of job ids and queues; producers and workers must agree. [env: DTQ_NAMESPACE]",
    )(func)
    return click.option(
        "--url",
        envvar="DTQ_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Engine URL. [env: DTQ_URL]",
    )(func)


def _plugin_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dtq-core")
def main() -> None:
    """dtq: a distributed task queue whose jobs name the plugin that runs them.

    \b
    Example:
      dtq enqueue test_only --data '{"text": "hi", "action": "duplicate_text"}'
      dtq worker --burst
      dtq status <id>
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--plugins", "allow", help="Allow-list to check against (comma-separated).")
def plugins(as_json: bool, allow: str | None) -> None:
    """List installed plugins: distribution, version and whether each loads."""
    rows = PluginRegistry(_plugin_list(allow)).statuses()
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    if not rows:
        click.echo("no plugins installed (pip install a dtq-plugin-* distribution)")
        return
    width = max(len(row.name) for row in rows)
    for row in rows:
        line = f"{row.name:<{width}}  {row.distribution} {row.version}  {row.status}"
        click.echo(line if row.error is None else f"{line}: {row.error}")


@main.command()
@click.argument("plugin")
@click.option("--data", "data_text", required=True, help="The job's data: a JSON object.")
@click.option("--id", "job_id", help="The job id (default: generated).")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option(
    "--plugins",
    "allow",
    help="Allow-list; lets you enqueue for a plugin not installed here (comma-separated).",
)
@_engine_options
@_friendly
def enqueue(
    plugin: str,
    data_text: str,
    job_id: str | None,
    priority: int,
    allow: str | None,
    url: str,
    namespace: str,
) -> None:
    """Append one job and print its id.

    \b
    Example:
      dtq enqueue test_only --id job-1 --data '{"text": "hi", "action": "duplicate_text"}'
    """
    try:
        data = json.loads(data_text)
    except json.JSONDecodeError as exc:
        _fail(
            f"--data is not valid JSON ({exc}); pass a JSON object, quoted for the shell, "
            """e.g. --data '{"text": "hi"}'"""
        )
    with Queue(_plugin_list(allow), url, namespace=namespace) as queue:
        job = queue.enqueue(plugin, data, id=job_id, priority=priority)
    click.echo(job.id)


@main.command()
@click.option("--plugins", "allow", help="Plugins to serve (comma-separated); default: every installed one.")
@click.option("--burst", is_flag=True, help="Process the jobs queued now, then exit.")
@click.option(
    "--lease", "lease_s", type=float, default=DEFAULT_LEASE_S, show_default=True, help="Lease in seconds."
)
@click.option("-v", "--verbose", is_flag=True, help="Log every job at INFO level.")
@_engine_options
@_friendly
def worker(allow: str | None, burst: bool, lease_s: float, verbose: bool, url: str, namespace: str) -> None:
    """Run a worker until SIGTERM or SIGINT (or, with --burst, until no job is left).

    \b
    Example:
      dtq worker --plugins test_only
    """
    logging.basicConfig(
        level=logging.INFO if verbose or not burst else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runner = Worker(_plugin_list(allow), url, namespace=namespace, lease_s=lease_s)
    runner.engine.ping()
    runner.work(burst=burst)


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@_engine_options
@_friendly
def status(job_id: str, as_json: bool, url: str, namespace: str) -> None:
    """Show a job: status, attempts, result or error."""
    with Queue(None, url, namespace=namespace) as queue:
        job = queue.get(job_id)
    if job is None:
        _fail(f"no job with id {job_id!r} in namespace {namespace!r}", EXIT_NOT_READY)
    record = job.to_dict()
    if as_json:
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    for key, value in record.items():
        if value is not None:
            shown = value if isinstance(value, (str, int)) else json.dumps(value, ensure_ascii=False)
            click.echo(f"{key}: {shown}")


@main.command()
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait until the job is final.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@_engine_options
@_friendly
def result(job_id: str, wait: bool, timeout: float | None, url: str, namespace: str) -> None:
    """Print a job's result as JSON (exit 4 if it failed, 5 if not done yet)."""
    with Queue(None, url, namespace=namespace) as queue:
        value = queue.result(job_id, timeout=timeout if wait else 0)
    click.echo(json.dumps(value, ensure_ascii=False))


if __name__ == "__main__":  # pragma: no cover
    main()
