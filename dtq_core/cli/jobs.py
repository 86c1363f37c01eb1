"""Commands for application developers: enqueue jobs and follow them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import Progress

from dtq_core.cli.app import main
from dtq_core.cli.common import (
    EXIT_NOT_READY,
    Done,
    each_job,
    engine_options,
    fail,
    friendly,
    json_option,
    plugin_list,
    print_json,
    report_each,
    settings,
)
from dtq_core.errors import DtqError
from dtq_core.job import Job, parse_job, schedule_of
from dtq_core.queue import Queue

_ETA_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
#: Bad lines reported before giving up on a file.
_MAX_REPORTED = 5


@main.command()
@click.argument("plugin", required=False)
@click.option("--data", "data_text", help="The job's data: a JSON object.")
@click.option(
    "--file",
    "source",
    type=click.File("r", encoding="utf-8"),
    help="Many jobs, one JSON per line ('-' for stdin): wire-format jobs "
    '{"id", "job": {"plugin", "data"}, "options"}, or data objects when PLUGIN is given.',
)
@click.option("--id", "job_id", help="The job id (default: generated); one job only.")
@click.option("--priority", type=int, help="Higher runs first (-4095..4095; default 0).")
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
@json_option
@engine_options
@friendly
def enqueue(
    plugin: str | None,
    data_text: str | None,
    source: IO[str] | None,
    job_id: str | None,
    eta: datetime | None,
    allow: str | None,
    as_json: bool,
    url: str | None,
    namespace: str | None,
    **options: Any,
) -> None:
    """Append one job (PLUGIN --data) or many (--file), and print their ids.

    A file is checked whole before anything is appended: a bad line appends
    nothing and is reported with its number. Ids are idempotency keys, so
    running the same file again appends nothing twice. A progress bar shows on
    a terminal.

    \b
    Examples:
      dtq enqueue test_only --id job-1 --data '{"text": "hi", "action": "duplicate_text"}'
      dtq enqueue test_only --delay 60 --max-retries 3 --data '{"action": "echo"}'
      dtq enqueue --file jobs.jsonl
      generate-data | dtq enqueue test_only --file -
    """
    options["eta"] = None if eta is None else _aware(eta).isoformat()
    chosen = {key: value for key, value in options.items() if value is not None}
    raw_jobs = _jobs_from_arguments(plugin, data_text, source, job_id, chosen)
    with Queue(settings=settings(url=url, namespace=namespace, plugins=plugin_list(allow))) as queue:
        jobs = _checked(queue, raw_jobs)
        appended = _append_all(queue, jobs)
    if as_json:
        print_json([{"id": job.id, "status": job.status.value} for job in appended])
    else:
        click.echo("\n".join(job.id for job in appended))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _jobs_from_arguments(
    plugin: str | None,
    data_text: str | None,
    source: IO[str] | None,
    job_id: str | None,
    options: Mapping[str, Any],
) -> list[tuple[int, Any]]:
    """(line number, wire-format job) pairs; line 0 for a job given on the command line."""
    if (data_text is None) == (source is None):
        fail("give the job's data with --data, or many jobs with --file (not both)")
    if source is None:
        if plugin is None:
            fail("name the plugin: dtq enqueue PLUGIN --data '{...}'")
        job = {"id": job_id, "job": {"plugin": plugin, "data": _json(data_text, "--data")}}
        return [(0, {**job, "options": dict(options)})]
    if job_id is not None:
        fail("--id names one job; with --file put each job's id in its line")
    lines = _json_lines(source)
    if plugin is None:
        return [(n, _with_options(job, options)) for n, job in lines]
    return [(n, {"job": {"plugin": plugin, "data": data}, "options": dict(options)}) for n, data in lines]


def _with_options(job: Any, options: Mapping[str, Any]) -> Any:
    own = job.get("options") if isinstance(job, dict) else None
    if not isinstance(job, dict) or not options or not isinstance(own or {}, Mapping):
        return job  # a line of the wrong shape: parse_job says what is wrong with it
    return {**job, "options": {**options, **(own or {})}}


def _json(text: str | None, where: str) -> Any:
    try:
        return _loads(text or "")
    except ValueError as exc:
        fail(
            f"{where} is not valid JSON ({exc}); pass a JSON object, quoted for the shell, "
            """e.g. --data '{"text": "hi"}'"""
        )


def _loads(text: str) -> Any:
    """``json.loads``, with JSON nested too deeply to read as a ValueError too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


class _NotJson:
    """A line that did not parse, kept in place so that every bad line is reported at once."""

    def __init__(self, error: ValueError) -> None:
        self.error = error


def _json_lines(source: IO[str]) -> list[tuple[int, Any]]:
    found: list[tuple[int, Any]] = []
    try:
        for number, line in enumerate(source, start=1):
            if line.strip():
                try:
                    found.append((number, _loads(line)))
                except ValueError as exc:
                    found.append((number, _NotJson(exc)))
    except UnicodeDecodeError as exc:  # decoded a block ahead of the lines: no line number
        fail(f"--file is not UTF-8 text ({exc}); nothing appended")
    return found


def _bad_json(raw: Any) -> ValueError | None:
    """Why ``raw`` (a line of --file) is not JSON, if it is not; its data's reason when PLUGIN is given."""
    if isinstance(raw, _NotJson):
        return raw.error
    body = raw.get("job") if isinstance(raw, dict) else None
    data = body.get("data") if isinstance(body, dict) else None
    return data.error if isinstance(data, _NotJson) else None


def _refuse_if_bad(bad: list[str]) -> None:
    if bad:
        more = f" (and {len(bad) - _MAX_REPORTED} more)" if len(bad) > _MAX_REPORTED else ""
        fail("nothing appended; fix these lines first: " + "; ".join(bad[:_MAX_REPORTED]) + more)


def _checked(queue: Queue, raw_jobs: list[tuple[int, Any]]) -> list[tuple[Any, Job]]:
    """Every job parsed and checked as ``append`` will, before any is appended."""
    checked, bad = [], []
    for number, raw in raw_jobs:
        error = _bad_json(raw)
        if error is not None:
            bad.append(f"line {number}: not JSON ({error})")
            continue
        try:
            job = parse_job(raw)
            schedule_of(raw.get("options") or {})
            queue.check(job)
            checked.append((raw, job))
        except DtqError as exc:
            if number == 0:
                raise
            bad.append(f"line {number}: {exc}")
    _refuse_if_bad(bad)
    return checked


def _append_all(queue: Queue, jobs: list[tuple[Any, Job]]) -> list[Job]:
    if len(jobs) == 1:
        return [queue.append(jobs[0][0])]
    appended = []
    for raw, _ in _progress(jobs, "appending"):
        appended.append(queue.append(raw))
    return appended


def _progress(items: list[Any], label: str) -> Iterator[Any]:
    """The items, with a progress bar on stderr when it is a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield from items
        return
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(label, total=len(items))
        for item in items:
            yield item
            progress.advance(task)


@main.command()
@click.argument("job_id")
@json_option
@engine_options
@friendly
def status(job_id: str, as_json: bool, url: str | None, namespace: str | None) -> None:
    """Show a job: status, attempts, progress, result or error.

    \b
    Example:
      dtq status job-1 --json | jq .status
    """
    chosen = settings(url=url, namespace=namespace)
    with Queue(settings=chosen) as queue:
        job = queue.get(job_id)
    if job is None:
        fail(f"no job with id {job_id!r} in namespace {chosen.namespace!r}", EXIT_NOT_READY)
    record = job.to_dict()
    if as_json:
        print_json(record)
        return
    for key, value in record.items():
        if value is not None:
            shown = value if isinstance(value, (str, int)) else json.dumps(value, ensure_ascii=False)
            click.echo(f"{key}: {shown}")


@main.command()
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait until the job is final.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@engine_options
@friendly
def result(job_id: str, wait: bool, timeout: float | None, url: str | None, namespace: str | None) -> None:
    """Print a job's result as JSON (exit 4 if it failed, 5 if not done yet).

    \b
    Example:
      dtq result job-1 --wait --timeout 60
    """
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        value = queue.result(job_id, timeout=timeout if wait else 0)
    click.echo(json.dumps(value, ensure_ascii=False))


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@json_option
@engine_options
@friendly
def cancel(job_ids: tuple[str, ...], as_json: bool, url: str | None, namespace: str | None) -> None:
    """Cancel jobs: a queued or scheduled one never runs; a running one is stopped.

    \b
    Example:
      dtq cancel job-1 job-2
    """
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        done = each_job(job_ids, lambda job_id: queue.cancel(job_id).value)
    report_each(done, _by_id if as_json else None, "cancelled")


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Retry every failed job.")
@json_option
@engine_options
@friendly
def retry(
    job_ids: tuple[str, ...], all_failed: bool, as_json: bool, url: str | None, namespace: str | None
) -> None:
    """Queue failed, dead or cancelled jobs again, for a fresh set of attempts.

    \b
    Examples:
      dtq retry job-1
      dtq retry --all-failed
    """
    if not job_ids and not all_failed:
        fail("name the jobs to retry, or pass --all-failed")
    with Queue(settings=settings(url=url, namespace=namespace)) as queue:
        ids = list(job_ids) or [job.id for job in queue.failed(limit=10_000)]
        done = each_job(ids, lambda job_id: queue.requeue(job_id).status.value)
    report_each(done, _listed if as_json else None, "retried")


def _by_id(done: Done) -> dict[str, Any]:
    """``{id: outcome}``, an error as ``{"error": message}`` (``dtq cancel --json``)."""
    return {job_id: {"error": str(o)} if isinstance(o, DtqError) else o for job_id, o in done}


def _listed(done: Done) -> list[dict[str, str]]:
    """``[{"id", "status"}]``, an error as ``{"id", "error"}`` (``dtq retry --json``)."""
    return [{"id": job_id, "error" if isinstance(o, DtqError) else "status": str(o)} for job_id, o in done]
