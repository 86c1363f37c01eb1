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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from dtq_core import scaffold
from dtq_core.config import DEFAULT_LEASE_S, DEFAULT_NAMESPACE, DEFAULT_URL
from dtq_core.errors import DtqError, EngineUnavailable, JobFailed, JobNotFound, ResultTimeout
from dtq_core.job import JobStatus
from dtq_core.periodic import load_schedules
from dtq_core.plugin import PluginRegistry, PluginStatus
from dtq_core.queue import Queue
from dtq_core.worker import Worker

F = TypeVar("F", bound=Callable[..., Any])

_ETA_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]

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
@click.option(
    "--check", is_flag=True, help="Exit 1 if any plugin does not load, is a duplicate or is missing."
)
def plugins(as_json: bool, allow: str | None, check: bool) -> None:
    """List installed plugins: distribution, version, API version, status, description.

    Status is one of: ok, import error, incompatible, duplicate, not allowed,
    not installed (a name on --plugins that nothing provides).

    \b
    Examples:
      dtq plugins
      dtq plugins --check --plugins test_only
    """
    rows = PluginRegistry(_plugin_list(allow)).statuses()
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
    elif not rows:
        click.echo("no plugins installed (pip install a dtq-plugin-* distribution)")
    else:
        _plugin_table(rows)
    if check and not all(row.ok for row in rows):
        bad = ", ".join(f"{row.name} ({row.status})" for row in rows if not row.ok)
        _fail(f"plugins with problems: {bad}")


def _plugin_table(rows: list[PluginStatus]) -> None:
    width = max(len(row.name) for row in rows)
    for row in rows:
        api = "-" if row.api_version is None else f"api {row.api_version}"
        line = f"{row.name:<{width}}  {row.distribution} {row.version}  {api}  {row.status}"
        detail = row.error or row.description
        click.echo(f"{line}: {detail}" if detail else line)


@main.group()
def plugin() -> None:
    """Tools for plugin authors."""


@plugin.command("new")
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False), default=".", show_default=True)
@_friendly
def plugin_new(name: str, parent: str) -> None:
    """Create a ready-to-publish plugin distribution dtq-plugin-NAME in a new folder.

    \b
    Example:
      dtq plugin new greet && cd dtq-plugin-greet && pip install -e '.[test]' && pytest
    """
    root = scaffold.create(name, Path(parent))
    click.echo(f"created {root}: pip install -e '{root}[test]' && pytest {root}")


@main.command()
@click.argument("plugin")
@click.option("--data", "data_text", required=True, help="The job's data: a JSON object.")
@click.option("--id", "job_id", help="The job id (default: generated).")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--delay", "delay_s", type=float, help="Run no sooner than this many seconds from now.")
@click.option(
    "--eta",
    type=click.DateTime(_ETA_FORMATS),
    help="Run no sooner than this time (UTC unless an offset is given).",
)
@click.option(
    "--max-retries", type=click.IntRange(min=0), help="Retries after a failure (default: the plugin's)."
)
@click.option(
    "--retry-backoff", "retry_backoff_s", type=float, help="Delay before the first retry, in seconds."
)
@click.option("--timeout", "timeout_s", type=float, help="Time limit of one attempt in seconds.")
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
    delay_s: float | None,
    eta: datetime | None,
    max_retries: int | None,
    retry_backoff_s: float | None,
    timeout_s: float | None,
    allow: str | None,
    url: str,
    namespace: str,
) -> None:
    """Append one job and print its id.

    \b
    Examples:
      dtq enqueue test_only --id job-1 --data '{"text": "hi", "action": "duplicate_text"}'
      dtq enqueue test_only --delay 60 --max-retries 3 --data '{"action": "echo"}'
    """
    try:
        data = json.loads(data_text)
    except json.JSONDecodeError as exc:
        _fail(
            f"--data is not valid JSON ({exc}); pass a JSON object, quoted for the shell, "
            """e.g. --data '{"text": "hi"}'"""
        )
    with Queue(_plugin_list(allow), url, namespace=namespace) as queue:
        job = queue.enqueue(
            plugin,
            data,
            id=job_id,
            priority=priority,
            delay_s=delay_s,
            eta=None if eta is None or eta.tzinfo else eta.replace(tzinfo=timezone.utc),
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            timeout_s=timeout_s,
        )
    click.echo(job.id)


@main.command()
@click.option("--plugins", "allow", help="Plugins to serve (comma-separated); default: every installed one.")
@click.option("--burst", is_flag=True, help="Process the jobs queued now, then exit.")
@click.option(
    "-c", "--concurrency", type=click.IntRange(min=1), default=1, show_default=True, help="Jobs at once."
)
@click.option(
    "--mode",
    type=click.Choice(["process", "thread"]),
    default="process",
    show_default=True,
    help="Run each job in a child process (isolated, stoppable) or in a thread.",
)
@click.option(
    "--lease", "lease_s", type=float, default=DEFAULT_LEASE_S, show_default=True, help="Lease in seconds."
)
@click.option(
    "--grace",
    "grace_s",
    type=float,
    default=30.0,
    show_default=True,
    help="Shutdown grace period in seconds.",
)
@click.option(
    "--periodic-file",
    type=click.Path(dir_okay=False),
    help='JSON list of periodic jobs: [{"name", "cron", "plugin", "data", "options"}].',
)
@click.option(
    "--require-plugin",
    "required",
    multiple=True,
    help="Refuse to start unless this plugin loads and is served (repeatable).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every job at INFO level.")
@_engine_options
@_friendly
def worker(
    allow: str | None,
    burst: bool,
    concurrency: int,
    mode: str,
    lease_s: float,
    grace_s: float,
    periodic_file: str | None,
    required: tuple[str, ...],
    verbose: bool,
    url: str,
    namespace: str,
) -> None:
    """Run a worker until SIGTERM or SIGINT (or, with --burst, until no job is left).

    On SIGTERM or SIGINT it stops taking jobs, lets those in hand finish within
    the grace period, and hands the rest back to the queue.

    \b
    Examples:
      dtq worker --plugins test_only
      dtq worker -c 4 --mode thread
    """
    logging.basicConfig(
        level=logging.INFO if verbose or not burst else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runner = Worker(
        _plugin_list(allow),
        url,
        namespace=namespace,
        concurrency=concurrency,
        mode=mode,
        lease_s=lease_s,
        grace_s=grace_s,
        periodic=load_schedules(periodic_file) if periodic_file else (),
    )
    missing = [name for name in required if name not in runner.plugins]
    if missing:
        problems = {row.name: row for row in runner.registry.statuses()}
        reasons = [
            f"{name}: {problems[name].error or problems[name].status}"
            if name in problems
            else f"{name}: not installed"
            for name in missing
        ]
        _fail("required plugin(s) not served: " + "; ".join(reasons))
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


@main.command()
@click.argument("job_id")
@_engine_options
@_friendly
def cancel(job_id: str, url: str, namespace: str) -> None:
    """Cancel a job: a queued or scheduled one never runs; a running one is stopped."""
    with Queue(None, url, namespace=namespace) as queue:
        outcome = queue.cancel(job_id)
    click.echo(f"{job_id}: {outcome.value}")


@main.group()
def dead() -> None:
    """Dead letters: jobs dtq gave up on (retries exhausted, lost leases, unrunnable)."""


@dead.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@_engine_options
@_friendly
def dead_list(limit: int, as_json: bool, url: str, namespace: str) -> None:
    """List dead jobs, newest first, with the reason."""
    with Queue(None, url, namespace=namespace) as queue:
        jobs = queue.dead(limit=limit)
    if as_json:
        click.echo(json.dumps([job.to_dict() for job in jobs], indent=2, ensure_ascii=False))
        return
    for job in jobs:
        reason = "" if job.error is None else f"{job.error.type}: {job.error.message}"
        click.echo(f"{job.id}  {job.plugin}  attempts={job.attempts}  {reason}")


@dead.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Requeue every dead job.")
@_engine_options
@_friendly
def dead_requeue(job_ids: tuple[str, ...], everything: bool, url: str, namespace: str) -> None:
    """Put dead jobs back in their queue for a fresh set of attempts."""
    if not job_ids and not everything:
        _fail("name the jobs to requeue, or pass --all")
    with Queue(None, url, namespace=namespace) as queue:
        ids = list(job_ids) or [job.id for job in queue.dead(limit=10_000)]
        for job_id in ids:
            queue.requeue(job_id)
            click.echo(f"{job_id}: requeued")


@dead.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_engine_options
@_friendly
def dead_purge(yes: bool, url: str, namespace: str) -> None:
    """Delete every dead job."""
    if not yes and not click.confirm("Delete every dead job?", default=False):
        _fail("nothing deleted")
    with Queue(None, url, namespace=namespace) as queue:
        click.echo(f"purged {queue.purge(JobStatus.DEAD)} dead job(s)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_engine_options
@_friendly
def stats(as_json: bool, url: str, namespace: str) -> None:
    """Per plugin queue: waiting, scheduled, running, live workers; dead and failed totals.

    Queues with jobs that no live worker serves are marked UNSERVED.
    """
    with Queue(None, url, namespace=namespace) as queue:
        numbers = queue.stats()
    if as_json:
        record = {
            "queues": [q.to_dict() for q in numbers.queues],
            "dead": numbers.dead,
            "failed": numbers.failed,
            "unserved": numbers.unserved(),
        }
        click.echo(json.dumps(record, indent=2))
        return
    unserved = set(numbers.unserved())
    for q in numbers.queues:
        mark = "  UNSERVED" if q.plugin in unserved else ""
        counts = f"waiting={q.waiting} scheduled={q.scheduled} running={q.running} workers={q.workers}"
        click.echo(f"{q.plugin}: {counts}{mark}")
    click.echo(f"dead={numbers.dead} failed={numbers.failed}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_engine_options
@_friendly
def workers(as_json: bool, url: str, namespace: str) -> None:
    """List live workers: host, pid, plugins, concurrency, jobs in hand, last heartbeat."""
    with Queue(None, url, namespace=namespace) as queue:
        rows = queue.workers()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        in_hand = row.get("in_hand") or "-"
        click.echo(
            f"{row['id']}  plugins={row.get('plugins', '')}  concurrency={row.get('concurrency', '?')}"
            f"  mode={row.get('mode', '?')}  in_hand={in_hand}"
        )


if __name__ == "__main__":  # pragma: no cover
    main()
