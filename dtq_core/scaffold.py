"""``dtq plugin new NAME``: a ready-to-publish plugin distribution in a new folder.

What it writes installs and passes its own tests right away::

    dtq-plugin-NAME/
      pyproject.toml              the dtq.plugins entry point, a dtq-core range
      README.md                   install, test, publish
      src/dtq_plugin_NAME/__init__.py   the plugin: validate and process
      tests/test_plugin.py        tests that use dtq's pytest fixtures
"""

from __future__ import annotations

import re
import shutil
import string
from pathlib import Path

from dtq_core.errors import ConfigError, InvalidJob

# No "_" last: the distribution's name (dtq-plugin-<name>, "_" as "-") would end in "-",
# which pip refuses.
_NAME = re.compile(r"^[a-z](?:[a-z0-9_]{0,61}[a-z0-9])?$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "dtq-plugin-$dist_suffix"
version = "0.1.0"
description = "A dtq plugin: $name."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["dtq-core>=$core_min,<$core_max"]
classifiers = [
    "Programming Language :: Python :: 3",
    "Topic :: System :: Distributed Computing",
    "Intended Audience :: Developers",
]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points."dtq.plugins"]
$name = "$package:$cls"

[tool.setuptools.packages.find]
where = ["src"]
"""

MODULE = '''\
"""The $name plugin for dtq."""

from __future__ import annotations

from typing import Any

from dtq_core import Job, Permanent, Plugin, ValidationError


class $cls(Plugin):
    """Handles jobs whose plugin is "$name"."""

    description = "Greets data.name."
    api_version = 1
    max_retries = 3  # attempts after a failure, with exponential backoff

    def validate(self, job: Job) -> None:
        """Refuse a job at append time if it lacks what process needs."""
        if not isinstance(job.data.get("name"), str):
            raise ValidationError("$name: data.name must be a string")

    def process(self, job: Job) -> Any:
        """Do the work; the JSON-serialisable return value becomes the job's result."""
        if not job.data["name"]:
            raise Permanent("$name: cannot greet an empty name")  # retrying cannot help
        return {"greeting": f"Hello, {job.data['name']}!"}
'''

TESTS = '''\
"""Tests for the $name plugin, run through a real dtq worker (dtq's pytest fixtures)."""

from __future__ import annotations

import pytest

from dtq_core import ValidationError
from dtq_core.testing import assert_failed, assert_succeeded, check_plugin_installed


def test_the_entry_point_is_installed_and_loads() -> None:
    status = check_plugin_installed("$name")
    assert status.distribution == "dtq-plugin-$dist_suffix"


def test_a_job_succeeds(dtq_run) -> None:
    job = dtq_run("$name", {"name": "Ada"})
    assert_succeeded(job, {"greeting": "Hello, Ada!"})


def test_a_bad_job_is_refused_at_append(dtq_queue) -> None:
    with pytest.raises(ValidationError):
        dtq_queue.enqueue("$name", {"name": 42})


def test_a_permanent_failure_is_not_retried(dtq_run) -> None:
    job = dtq_run("$name", {"name": ""})
    assert_failed(job, error_type="Permanent", message="empty name")
    assert job.attempts == 1
'''

README = """\
# dtq-plugin-$dist_suffix

The `$name` plugin for [dtq](https://pypi.org/project/dtq-core/): jobs with
`"plugin": "$name"` run here.

```sh
pip install -e '.[test]'     # develop
pytest                       # tests run jobs through a real worker (memory engine)
pytest --dtq-url redis://localhost:6379/15   # the same tests on a real Redis
dtq plugins --check --plugins $name          # the entry point loads
python -m build && twine check dist/*        # publish: then twine upload dist/*
```
"""


def create(name: str, parent: Path) -> Path:
    """Write the distribution for plugin ``name`` into ``parent/dtq-plugin-<name>``; return it.

    Raises:
        InvalidJob: the name is not a lowercase identifier, or the folder exists.
        ConfigError: the folder cannot be written (nothing of it is left).
    """
    if not _NAME.match(name):
        raise InvalidJob(
            f"plugin name {name!r} must be a lowercase identifier: a letter, then letters, digits "
            f"or '_', not ending in '_'{' (write _ for -)' if '-' in name else ''}"
        )
    dist_suffix = name.replace("_", "-")
    root = parent / f"dtq-plugin-{dist_suffix}"
    if root.exists():
        raise InvalidJob(f"{root} already exists; choose another name or remove it")
    package = f"dtq_plugin_{name}"
    values = {
        "name": name,
        "dist_suffix": dist_suffix,
        "package": package,
        "cls": "".join(part.capitalize() for part in name.split("_")) + "Plugin",
        "core_min": "0.1",
        "core_max": "0.2",
    }
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"src/{package}/__init__.py": MODULE,
        "tests/test_plugin.py": TESTS,
    }
    try:
        for relative, template in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(string.Template(template).substitute(values), encoding="utf-8")
    except OSError as exc:
        # Nothing half-written is left to block the next try ("already exists").
        shutil.rmtree(root, ignore_errors=True)
        raise ConfigError(
            f"cannot write the plugin's folder {root}: {exc.strerror or exc}; give a folder "
            "you can write to (--dir)"
        ) from exc
    return root
