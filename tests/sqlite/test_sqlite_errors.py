"""The SQLite engine's bad input and damaged files: a message and an exit code, no traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dtq_core import EngineError, Queue
from dtq_core.engine import open_engine


def dtq(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DTQ_URL": url, "DTQ_NAMESPACE": "errors", **env}
    return subprocess.run(
        [sys.executable, "-m", "dtq_core", *args],
        check=False,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"foo": 1}, "unknown SQLite engine option 'foo' .*known: busy_timeout_s, errors_kept"),
        ({"socket_timeout_s": 1}, "unknown SQLite engine option 'socket_timeout_s'"),  # a Redis one
        ({"busy_timeout_s": "abc"}, "busy_timeout_s = 'abc': expected a number above 0"),
        ({"index_cap": -1}, "index_cap = -1: expected a whole number from 0"),
        ({"errors_kept": 2.5}, "errors_kept = 2.5: expected a whole number from 1"),
    ],
)
def test_engine_options_are_checked(tmp_path: Path, options: dict[str, object], said: str) -> None:
    with pytest.raises(EngineError, match=said):
        open_engine(f"sqlite:///{tmp_path / 'dtq.db'}", **options)


def test_the_cli_names_a_bad_engine_option_without_a_traceback(tmp_path: Path) -> None:
    done = dtq(f"sqlite:///{tmp_path / 'dtq.db'}", "stats", DTQ_ENGINE__BUSY_TIMEOUT_S="abc")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "SQLite engine option busy_timeout_s = 'abc'" in done.stderr
    assert "DTQ_ENGINE__BUSY_TIMEOUT_S" in done.stderr


def test_a_damaged_database_file_is_reported_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "dtq.db"
    url = f"sqlite:///{path}"
    with Queue(["test_only"], url, namespace="errors") as queue:
        for _ in range(30):
            queue.enqueue("test_only", {"action": "echo", "pad": "x" * 300})
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
    db.close()
    with path.open("r+b") as file:
        file.seek(4096)  # page 2: a table's page, past the header the open checks
        file.write(b"\x77" * 4096)
    for args in (("stats",), ("enqueue", "test_only", "--data", '{"action": "echo"}')):
        done = dtq(url, *args)
        assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
        assert f"SQLite database {path} is damaged" in done.stderr
        assert ".recover" in done.stderr
