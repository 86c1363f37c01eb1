"""Sessions: ``nox`` runs tests, lint and typecheck; ``nox -s tests`` runs one.

The tests install the project as a user would (not editable), so they run
against the built package; tests/e2e also builds wheels and installs them into
a fresh virtual environment of its own.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


@nox.session
def tests(session: nox.Session) -> None:
    """pytest against a private redis-server (needs the redis-server binary on PATH)."""
    session.install(".[test]", "./dtq_plugins_testonly")
    session.run("pytest", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The chaos suite's long form (more jobs and kills, the 200,000-job soak).

    Figures go to chaos-report.jsonl; docs/guarantees.md quotes them. The
    ``tests`` session runs the same tests in a bounded form.
    """
    session.install(".[test]", "./dtq_plugins_testonly")
    env = {"DTQ_CHAOS": "long", "DTQ_CHAOS_REPORT": "chaos-report.jsonl"}
    session.run("pytest", "tests/chaos", "-s", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on dtq_core."""
    session.install("mypy==2.4.1", "pytest>=8", ".[dashboard]")
    session.run("mypy")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Issue 8's comparison: dtq against RQ, Celery, Dramatiq, Huey and arq on one private redis-server.

    Not run by default. ``nox -s bench -- --quick`` is a fast smoke run; ``-- --only dtq,rq``
    picks systems. Prints a table, writes benchmarks/results/latest.json and chart.png.
    """
    session.install(
        ".",
        "./dtq_plugins_testonly",
        "rq",
        "celery[redis]",
        "dramatiq[redis]",
        "huey",
        "arq",
        "matplotlib",
        "psutil",
        "rich",
    )
    session.run("python", "benchmarks/run.py", *session.posargs)
