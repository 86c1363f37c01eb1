"""Commands for plugin authors and for checking what a machine can run."""

from __future__ import annotations

from pathlib import Path

import click

from dtq_core import scaffold
from dtq_core.cli.app import main
from dtq_core.cli.common import fail, friendly, json_option, plugin_list, print_json, print_table, settings
from dtq_core.plugin import PluginRegistry


@main.command()
@json_option
@click.option("--plugins", "allow", help="Allow-list to check against (comma-separated).")
@click.option(
    "--check", is_flag=True, help="Exit 1 if any plugin does not load, is a duplicate or is missing."
)
@friendly
def plugins(as_json: bool, allow: str | None, check: bool) -> None:
    """List installed plugins: distribution, version, API version, status, description.

    Status is one of: ok, import error, incompatible, duplicate, not allowed,
    not installed (a name on --plugins that nothing provides).

    \b
    Examples:
      dtq plugins
      dtq plugins --check --plugins test_only
    """
    allowed = settings(plugins=plugin_list(allow)).plugins
    rows = PluginRegistry(allowed).statuses()
    if as_json:
        print_json([row.to_dict() for row in rows])
    elif not rows:
        click.echo("no plugins installed (pip install a dtq-plugin-* distribution)")
    else:
        print_table(
            ["plugin", "distribution", "version", "api", "status", "detail"],
            (
                [r.name, r.distribution, r.version, r.api_version, r.status, r.error or r.description]
                for r in rows
            ),
        )
    if check and not all(row.ok for row in rows):
        bad = ", ".join(f"{row.name} ({row.status})" for row in rows if not row.ok)
        fail(f"plugins with problems: {bad}")


@main.group()
def plugin() -> None:
    """Tools for plugin authors."""


@plugin.command("new")
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False), default=".", show_default=True)
@friendly
def plugin_new(name: str, parent: str) -> None:
    """Create a ready-to-publish plugin distribution dtq-plugin-NAME in a new folder.

    \b
    Example:
      dtq plugin new greet && cd dtq-plugin-greet && pip install -e '.[test]' && pytest
    """
    root = scaffold.create(name, Path(parent))
    click.echo(f"created {root}: pip install -e '{root}[test]' && pytest {root}")
