"""Commands for operators: run workers, watch queues, steer dead letters, check health."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime, timezone

import click

from dtq_core.cli.app import main
from dtq_core.cli.common import (
    EXIT_UNHEALTHY,
    each_job,
    engine_options,
    fail,
    friendly,
    json_option,
    plugin_list,
    print_json,
    print_table,
    report_each,
    settings,
)
from dtq_core.engine import Event, engine_class
from dtq_core.errors import UnknownEngine
from dtq_core.job import JobStatus
from dtq_core.logs import configure_logging
from dtq_core.periodic import load_schedules
from dtq_core.queue import Queue
from dtq_core.worker import Worker, worker_rows


@main.command()
@click.option("--plugins", "allow", help="Plugins to serve (comma-separated); default: every installed one.")
@click.option("--burst", is_flag=True, help="Process the jobs queued now, then exit.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Jobs at once (default 1).")
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    help="Jobs each slot leases per round trip (default 1; 32-64 for many short jobs).",
)
@click.option(
    "--mode",
    type=click.Choice(["process", "thread"]),
    help="Run each job in a child process (isolated, stoppable; the default) or in a thread.",
)
@click.option("--lease", "lease_s", type=float, help="Lease in seconds (default 30).")
@click.option("--grace", "grace_s", type=float, help="Shutdown grace period in seconds (default 30).")
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
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics on this port.")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), help="Log lines as text (default) or JSON lines."
)
@click.option("-v", "--verbose", is_flag=True, help="With --burst: log every job, not only problems.")
@click.option(
    "-q", "--quiet", is_flag=True, help="Log only problems, not every job (metrics still count them)."
)
@engine_options
@friendly
def worker(
    allow: str | None,
    burst: bool,
    periodic_file: str | None,
    required: tuple[str, ...],
    verbose: bool,
    quiet: bool,
    url: str | None,
    namespace: str | None,
    **options: object,
) -> None:
    """Run a worker until SIGTERM or SIGINT (or, with --burst, until no job is left).

    On SIGTERM or SIGINT it stops taking jobs, lets those in hand finish within
    the grace period, and hands the rest back to the queue. Every option has a
    setting of the same name (see `dtq config`).

    \b
    Examples:
      dtq worker --plugins test_only
      dtq worker -c 4 --mode thread --metrics-port 9100 --log-format json
      dtq worker --mode thread --prefetch 64 --quiet     # many short jobs
    """
    chosen = settings(url=url, namespace=namespace, plugins=plugin_list(allow), **options)
    every_job = not quiet and (verbose or not burst)
    configure_logging(chosen.log_format, logging.INFO if every_job else logging.WARNING)
    runner = Worker(settings=chosen, periodic=load_schedules(periodic_file) if periodic_file else ())
    _check_required(runner, required)
    runner.engine.ping()
    if chosen.metrics_port is not None:
        from dtq_core.metrics import serve_metrics  # imported only when asked for

        serve_metrics(runner, chosen.metrics_port)
    runner.work(burst=burst)


def _check_required(runner: Worker, required: tuple[str, ...]) -> None:
    missing = [name for name in required if name not in runner.plugins]
    if not missing:
        return
    problems = {row.name: row for row in runner.registry.statuses()}
    reasons = [
        f"{name}: {problems[name].error or problems[name].status}"
        if name in problems
        else f"{name}: not installed"
        for name in missing
    ]
    fail("required plugin(s) not served: " + "; ".join(reasons))


@main.command()
@json_option
@engine_options
@friendly
def stats(as_json: bool, url: str | None, namespace: str | None) -> None:
    """Per plugin queue: waiting, scheduled, running, live workers, the jobs that
    succeeded, failed and died in the last hour, and throughput (jobs/s over the last
    5 minutes); then the dead and failed jobs kept. Queues with jobs that no live
    worker serves are marked UNSERVED.

    \b
    Example:
      dtq stats --json | jq '.unserved'
    """
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        numbers = queue.stats()
    if as_json:
        print_json(numbers.to_dict())
        return
    unserved = set(numbers.unserved())
    print_table(
        [
            "queue",
            "waiting",
            "scheduled",
            "running",
            "workers",
            "done/1h",
            "failed/1h",
            "dead/1h",
            "jobs/s",
            "",
        ],
        (
            [
                *(q.plugin, q.waiting, q.scheduled, q.running, q.workers, q.succeeded, q.failed, q.dead),
                f"{q.throughput:.2f}",
                "UNSERVED" if q.plugin in unserved else "",
            ]
            for q in numbers.queues
        ),
    )
    click.echo(f"dead: {numbers.dead}  failed: {numbers.failed}")


#: The most a --limit takes (a larger one reached Redis as is, which refused it without a word
#: on which option or why).
_MOST = 1_000_000


@main.command()
@json_option
@engine_options
@friendly
def workers(as_json: bool, url: str | None, namespace: str | None) -> None:
    """List live workers: host, pid, plugins, concurrency, jobs in hand, last heartbeat.

    \b
    Example:
      dtq workers --json
    """
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        rows = worker_rows(queue.workers())
    if as_json:
        print_json([row.to_dict() for row in rows])  # numbers and lists, as stats --json gives
        return
    print_table(
        ["worker", "plugins", "concurrency", "mode", "in hand"],
        (
            [r.id, ",".join(r.plugins), r.concurrency, r.mode, ",".join(r.in_hand) or "-"]  # None: "-"
            for r in rows
        ),
    )


@main.command()
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="A plugin queue that must have a live worker (repeatable); default: any worker at all.",
)
@json_option
@engine_options
@friendly
def health(queues: tuple[str, ...], as_json: bool, url: str | None, namespace: str | None) -> None:
    """Exit 0 when the engine answers and each named queue has a live worker; else 3 or 6.

    For container liveness and readiness probes: 3 means the engine cannot be
    reached, 6 that a queue has no live worker.

    \b
    Examples:
      dtq health --queue test_only
      dtq health --json
    """
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        queue.engine.ping()
        live = queue.workers()
    served = {name for row in live for name in row.get("plugins", "").split(",") if name}
    unserved = [name for name in queues if name not in served]
    healthy = bool(live) and not unserved
    if as_json:
        print_json({"engine": "ok", "workers": len(live), "unserved": unserved, "healthy": healthy})
    if not live:
        fail(f"no live worker in namespace {queue.settings.namespace!r}", EXIT_UNHEALTHY)
    if unserved:
        fail(f"no live worker serves: {', '.join(unserved)}", EXIT_UNHEALTHY)
    if not as_json:
        click.echo(f"ok: engine answers, {len(live)} live worker(s)")


@main.command("config")
@json_option
@engine_options
@friendly
def config_command(as_json: bool, url: str | None, namespace: str | None) -> None:
    """Print the effective settings and where each came from; secrets are masked.

    Order of precedence: option, DTQ_* environment variable, config file, default.

    \b
    Examples:
      dtq config
      DTQ_CONCURRENCY=4 dtq --config prod.toml config --json
    """
    chosen = settings(url=url, namespace=namespace)
    # As a queue or worker would refuse them, though nothing connects here. A URL no engine
    # takes is shown as it is (the settings are what this prints); other commands name its fault.
    with contextlib.suppress(UnknownEngine):
        engine_class(chosen.url).check_options(chosen.url, chosen.engine)
    rows = chosen.describe()
    if as_json:
        print_json(rows)
    else:
        print_table(["setting", "value", "source"], ([r["name"], r["value"], r["source"]] for r in rows))


@main.group()
def dead() -> None:
    """Dead letters: jobs dtq gave up on (retries exhausted, lost leases, unrunnable)."""


@dead.command("list")
@click.option("--limit", type=click.IntRange(min=1, max=_MOST), default=50, show_default=True)
@json_option
@engine_options
@friendly
def dead_list(limit: int, as_json: bool, url: str | None, namespace: str | None) -> None:
    """List dead jobs, newest first, with the reason."""
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        jobs = queue.dead(limit=limit)
    if as_json:
        print_json([job.to_dict() for job in jobs])
        return
    print_table(
        ["job", "plugin", "attempts", "reason"],
        (
            [
                job.id,
                job.plugin,
                job.attempts,
                "" if job.error is None else f"{job.error.type}: {job.error.message}",
            ]
            for job in jobs
        ),
    )


@dead.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Requeue every dead job.")
@engine_options
@friendly
def dead_requeue(job_ids: tuple[str, ...], everything: bool, url: str | None, namespace: str | None) -> None:
    """Put dead jobs back in their queue for a fresh set of attempts."""
    if not job_ids and not everything:
        fail("name the jobs to requeue, or pass --all")
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        if job_ids:
            # Dead ones only, as named: a cancelled job requeued here would run after all.
            report_each(each_job(job_ids, lambda job_id: _requeue_dead(queue, job_id)), None, "requeued")
            return
        requeued, skipped = queue.requeue_all(JobStatus.DEAD)
    for job_id in requeued:
        click.echo(f"{job_id}: requeued")
    for job_id, reason in skipped.items():  # a buried malformed record, say: reported, the rest requeued
        click.echo(f"{job_id}: skipped: {reason}", err=True)


def _requeue_dead(queue: Queue, job_id: str) -> str:
    queue.requeue(job_id, only=JobStatus.DEAD)
    return "requeued"


@dead.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@engine_options
@friendly
def dead_purge(yes: bool, url: str | None, namespace: str | None) -> None:
    """Delete every dead job."""
    _purge(JobStatus.DEAD, yes, url, namespace)


@main.command()
@click.argument("status", type=click.Choice(["dead", "failed"]))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@engine_options
@friendly
def purge(status: str, yes: bool, url: str | None, namespace: str | None) -> None:
    """Delete the records of every dead or failed job.

    \b
    Example:
      dtq purge failed --yes
    """
    _purge(JobStatus(status), yes, url, namespace)


def _purge(status: JobStatus, yes: bool, url: str | None, namespace: str | None) -> None:
    if not yes:
        if not sys.stdin.isatty():
            fail("nothing deleted: pass --yes to confirm (there is no terminal to ask on)")
        if not click.confirm(f"Delete every {status.value} job?", default=False):
            fail("nothing deleted")
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        click.echo(f"purged {queue.purge(status)} {status.value} job(s)")


@main.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until interrupted.")
@click.option("--plugin", "plugins", multiple=True, help="Only events of this plugin (repeatable).")
@click.option("--job", "job_ids", multiple=True, help="Only events of this job id (repeatable).")
@click.option(
    "--limit", type=click.IntRange(min=1, max=_MOST), default=100, show_default=True, help="Without --follow."
)
@json_option
@engine_options
@friendly
def events(
    follow: bool,
    plugins: tuple[str, ...],
    job_ids: tuple[str, ...],
    limit: int,
    as_json: bool,
    url: str | None,
    namespace: str | None,
) -> None:
    """Print job lifecycle events: appended, started, succeeded, failed, retrying, dead, ...

    Without --follow, the oldest events kept (the engine keeps the latest
    `engine.events_max`, 10000 by default). With --follow, the events from now
    on, as they happen. --json prints one JSON object per line.

    \b
    Examples:
      dtq events --follow --plugin test_only
      dtq events --job job-1 --json
    """
    wanted = _event_filter(plugins, job_ids)
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        if not follow:
            for event in itertools.islice(queue.kept_events(wanted), limit):
                _print_event(event, as_json)
            return
        try:
            _follow(queue, wanted, as_json)
        except KeyboardInterrupt:
            return


def _event_filter(plugins: tuple[str, ...], job_ids: tuple[str, ...]) -> Callable[[Event], bool]:
    def wanted(event: Event) -> bool:
        return (not plugins or event.plugin in plugins) and (not job_ids or event.job_id in job_ids)

    return wanted


def _follow(queue: Queue, wanted: Callable[[Event], bool], as_json: bool) -> None:
    after = queue.last_event_id()
    while True:
        for event in queue.events(after=after, limit=500, block_s=5.0):
            after = event.id
            if wanted(event):
                _print_event(event, as_json)


def _print_event(event: Event, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(event.to_dict(), ensure_ascii=False), nl=True)
    else:
        moment = datetime.fromtimestamp(event.time_ms / 1000, timezone.utc).isoformat(timespec="milliseconds")
        details = [f"attempt={event.attempt}"] if event.attempt else []
        if event.worker:
            details.append(f"worker={event.worker}")
        if event.delay_ms is not None:
            details.append(f"in={event.delay_ms / 1000:.1f}s")
        if event.error_type:
            details.append(f"{event.error_type}: {event.error_message}")
        click.echo(f"{moment}  {event.type.value:<16} {event.job_id}  {event.plugin}  {'  '.join(details)}")
    sys.stdout.flush()  # a follower piped into another program sees each event at once
