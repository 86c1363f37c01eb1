"""``dtq dashboard`` as an operator runs it: a real process serving a real Redis, and its errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from dashtest import TOKEN
from dtqtest import dtq_command, free_port

from dtq_core.testing import wait_for

RunDtq = Callable[..., subprocess.CompletedProcess[str]]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_dtq_dashboard_serves_the_engine_until_terminated(dtq_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = dict(dtq_env, DTQ_DASHBOARD_TOKEN=TOKEN)
    process = subprocess.Popen(
        [*dtq_command(), "dashboard", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/api/overview"), timeout=20, interval=0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert "Overview" in response.read().decode()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert (
        f"http://127.0.0.1:{port}/" in err and "actions enabled (token from env DTQ_DASHBOARD_TOKEN)" in err
    )
    assert TOKEN not in out + err and "Traceback" not in err


def test_without_the_extra_the_command_says_what_to_install(dtq_env: dict[str, str], tmp_path: Path) -> None:
    hide_uvicorn = (
        "import sys; sys.modules['uvicorn'] = None; sys.argv = ['dtq', 'dashboard']; "
        "from dtq_core.cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_uvicorn],
        env=dtq_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install 'dtq-core[dashboard]'" in done.stderr and "uvicorn" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_short_token_or_an_unreachable_engine_is_one_clear_line(
    run_dtq: RunDtq, dtq_env: dict[str, str]
) -> None:
    short = run_dtq("dashboard", env=dict(dtq_env, DTQ_DASHBOARD_TOKEN="hunter2"))
    assert short.returncode == 1 and "at least 16 characters" in short.stderr
    assert "hunter2" not in short.stderr + short.stdout and "Traceback" not in short.stderr
    down = run_dtq("dashboard", "--url", "redis://127.0.0.1:1/0")
    assert down.returncode == 3 and "cannot reach Redis" in down.stderr and "Traceback" not in down.stderr


def test_dtq_config_masks_the_dashboard_token(run_dtq: RunDtq, dtq_env: dict[str, str]) -> None:
    shown = run_dtq("config", "--json", env=dict(dtq_env, DTQ_DASHBOARD_TOKEN=TOKEN))
    assert shown.returncode == 0, shown.stderr
    rows = {row["name"]: row for row in json.loads(shown.stdout)}
    assert rows["dashboard_token"] == {
        "name": "dashboard_token",
        "value": "***",
        "source": "env DTQ_DASHBOARD_TOKEN",
    }
    assert TOKEN not in shown.stdout
