"""What every dtq command shares: settings, errors and exit codes, JSON and table output."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from dtq_core.config import Settings
from dtq_core.errors import DtqError, EngineUnavailable, JobFailed, JobNotFound, ResultTimeout

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_JOB_FAILED = 4
EXIT_NOT_READY = 5
EXIT_UNHEALTHY = 6


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``dtq: error: message`` on stderr and exit with ``code``."""
    click.echo(f"dtq: error: {message}", err=True)
    sys.exit(code)


def exit_code(exc: DtqError) -> int:
    """The documented exit code of an error."""
    if isinstance(exc, EngineUnavailable):
        return EXIT_UNREACHABLE
    if isinstance(exc, JobFailed):
        return EXIT_JOB_FAILED
    if isinstance(exc, (ResultTimeout, JobNotFound)):
        return EXIT_NOT_READY
    return EXIT_ERROR


def friendly(func: F) -> F:
    """Turn dtq errors into one line on stderr and a documented exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DtqError as exc:
            fail(str(exc), exit_code(exc))

    return wrapper  # type: ignore[return-value]


def engine_options(func: F) -> F:
    """``--url`` and ``--namespace``: override the settings' engine URL and namespace."""
    func = click.option(
        "--namespace",
        default=None,
        help="Scope of job ids and queues; producers and workers must agree. "
        "[setting: namespace, env: DTQ_NAMESPACE; default: default]",
    )(func)
    return click.option(
        "--url",
        default=None,
        help="Engine URL. [setting: url, env: DTQ_URL; default: redis://localhost:6379/0]",
    )(func)


def json_option(func: F) -> F:
    """``--json``: print machine-readable JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")(func)


def settings(**given: Any) -> Settings:
    """Settings from the environment and config file, with the command's options (those given) on top.

    ``dtq --config FILE`` reaches here through the click context.
    """
    context = click.get_current_context(silent=True)
    config_file = context.find_root().params.get("config_file") if context else None
    environ = dict(os.environ, DTQ_CONFIG=config_file) if config_file else None
    return Settings.load(given, environ=environ)


def plugin_list(value: str | None) -> list[str] | None:
    """A comma-separated list of plugin names, or None when not given."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON, non-ASCII kept as is."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """Print a table; plain columns without colour when stdout is not a terminal."""
    table = Table(title=title, box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        # Piped output is read by tools like grep and awk: one line per row, however wide.
        console = Console(width=1000)
    console.print(table)


#: Each job of a command on several, with its outcome or the error it failed with.
Done = list[tuple[str, str | DtqError]]


def each_job(job_ids: Sequence[str], act: Callable[[str], str]) -> Done:
    """``act`` on each job in turn: its outcome, or the error it failed with. Going on past
    a job's error, so that what was done is all reported; at an unreachable engine the
    rest fail with it, unasked."""
    done: Done = []
    for n, job_id in enumerate(job_ids):
        try:
            done.append((job_id, act(job_id)))
        except EngineUnavailable as exc:
            done += [(rest, exc) for rest in job_ids[n:]]
            break
        except DtqError as exc:
            done.append((job_id, exc))
    return done


def report_each(done: Done, shape: Callable[[Done], Any] | None, verb: str) -> None:
    """Print each job's outcome (as JSON shaped by ``shape``, or as text when None);
    then, if any job failed, say how many and exit with the first failure's code."""
    if shape is not None:
        print_json(shape(done))
    else:
        click.echo("\n".join(f"{job_id}: {_said(outcome, verb)}" for job_id, outcome in done))
    errors = [outcome for _, outcome in done if isinstance(outcome, DtqError)]
    if errors:
        fail(f"{len(errors)} of {len(done)} job(s) not {verb}: {errors[0]}", exit_code(errors[0]))


def _said(outcome: str | DtqError, verb: str) -> str:
    return f"not {verb}: {outcome}" if isinstance(outcome, DtqError) else outcome
