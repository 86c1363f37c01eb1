"""The ``dtq`` command group; each subcommand lives in the module of its audience."""

from __future__ import annotations

import click

EPILOG = """\b
Exit codes: 0 success; 1 bad input or an unusable plugin; 2 wrong usage;
3 the engine cannot be reached; 4 the job failed or is dead; 5 not finished
in time, or no such job; 6 unhealthy (dtq health).
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="dtq-core")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $DTQ_CONFIG, ./dtq.toml, or [tool.dtq] in ./pyproject.toml).",
)
def main(config_file: str | None) -> None:
    """dtq: a distributed task queue whose jobs name the plugin that runs them.

    Settings come from options, then DTQ_* environment variables, then the
    config file; `dtq config` shows the result and where each value came from.

    \b
    Examples:
      dtq enqueue test_only --data '{"text": "hi", "action": "duplicate_text"}'
      dtq worker --plugins test_only -c 4
      dtq result <id> --wait
      dtq stats
    """
