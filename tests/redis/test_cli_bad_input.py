"""Bad input to the ``dtq`` command: a message and an exit code, never a traceback.

Each case here gave a traceback, a misleading message, a secret, or a wrong
exit code before (found by a review that tried them); nothing queued is harmed.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dtqtest import assert_clean_error

from dtq_core import JobStatus, Queue

RunDtq = Callable[..., subprocess.CompletedProcess[str]]
ECHO = '{"action": "echo"}'
DEEP = "[" * 5000


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def write(path: Path, content: str | bytes) -> str:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def test_lines_of_the_wrong_shape_are_each_named_and_nothing_is_appended(
    run_dtq: RunDtq, queue: Queue, tmp_path: Path
) -> None:
    good = json.dumps({"id": "fine", "job": {"plugin": "test_only", "data": {"action": "echo"}}})
    lines = [good, "[1]", '"text"', '{"job": 5}', '{"id": "x", "job": "x"}', DEEP]
    jobs = write(tmp_path / "jobs.jsonl", "\n".join(lines) + "\n")
    proc = run_dtq("enqueue", "--file", jobs, "--priority", "3")
    assert_clean_error(proc, 1, "nothing appended; fix these lines first: line 2: a job must be a dict")
    for said in ("line 3: a job must be a dict", "line 4: a job needs a 'job' dict", "line 5: a job needs"):
        assert said in proc.stderr
    assert "line 6: not JSON (nested too deeply to read)" in proc.stderr
    options = write(tmp_path / "options.jsonl", good[:-1] + ', "options": "x"}\n')
    assert_clean_error(
        run_dtq("enqueue", "--file", options, "--priority", "3"), 1, "line 1: job['options'] must be a dict"
    )
    assert queue.get("fine") is None


def test_json_nested_too_deeply_or_not_utf8_is_refused_with_a_reason(run_dtq: RunDtq, tmp_path: Path) -> None:
    assert_clean_error(
        run_dtq("enqueue", "test_only", "--data", DEEP), 1, "--data is not valid JSON (nested too"
    )
    deep = write(tmp_path / "deep.jsonl", DEEP + "\n")
    assert_clean_error(run_dtq("enqueue", "--file", deep), 1, "line 1: not JSON (nested too deeply to read)")
    latin = write(tmp_path / "latin.jsonl", b'{"job": {"plugin": "test_only", "data": {"x": "\xe9"}}}\n')
    assert_clean_error(run_dtq("enqueue", "--file", latin), 1, "--file is not UTF-8 text", "nothing appended")


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("//:s3cret@127.0.0.1:1/0", "engine URL '//:***@127.0.0.1:1/0' has no scheme"),
        ("redis://:s3cret@[::1:1/0", "engine URL 'redis://:***@[::1:1/0' is malformed: Invalid IPv6 URL"),
    ],
)
def test_a_malformed_url_is_named_without_its_password(
    run_dtq: RunDtq, dtq_env: dict[str, str], url: str, said: str
) -> None:
    proc = run_dtq("stats", env=dict(dtq_env, DTQ_URL=url))
    assert_clean_error(proc, 1, said)
    assert "s3cret" not in proc.stderr
    shown = run_dtq("config", env=dict(dtq_env, DTQ_URL=url))
    assert shown.returncode == 0 and "s3cret" not in shown.stdout + shown.stderr


def test_a_password_option_is_masked_whatever_its_spelling(run_dtq: RunDtq, dtq_env: dict[str, str]) -> None:
    url = dtq_env["DTQ_URL"] + "?pass%77ord=s3cret"  # redis-py decodes the name: a password
    shown = run_dtq("config", env=dict(dtq_env, DTQ_URL=url))
    assert shown.returncode == 0 and "pass%77ord=***" in shown.stdout and "s3cret" not in shown.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--lease", "-1"), "setting lease_s = -1.0 (argument): expected a number more than 0"),
        (("--lease", "nan"), "setting lease_s = nan (argument)"),
        (("--lease", "inf"), "setting lease_s = inf (argument)"),
        (("--grace", "-3"), "setting grace_s = -3.0 (argument): expected a number at least 0"),
    ],
)
def test_worker_durations_out_of_range_are_refused(run_dtq: RunDtq, args: tuple[str, ...], said: str) -> None:
    # A negative lease ran: every worker took the job from another until it ended dead.
    assert_clean_error(run_dtq("worker", "--plugins", "test_only", "--burst", *args), 1, said)


def test_settings_and_engine_options_out_of_range_are_named(
    run_dtq: RunDtq, dtq_env: dict[str, str], queue: Queue
) -> None:
    port = run_dtq("worker", "--burst", env=dict(dtq_env, DTQ_METRICS_PORT="99999"))
    assert_clean_error(port, 1, "setting metrics_port = '99999' (env DTQ_METRICS_PORT)", "at most 65535")
    # A text signal_cap made each append fail after its writes: the job was queued, yet
    # the command said it failed (and a retry with a generated id queued it twice).
    for variable, value, said in (
        ("DTQ_ENGINE__SIGNAL_CAP", "abc", "Redis engine option signal_cap = 'abc': expected a whole number"),
        ("DTQ_ENGINE__WAIT_REPLICAS", "abc", "Redis engine option wait_replicas = 'abc'"),
        ("DTQ_ENGINE__BOGUS", "1", "unknown Redis engine option 'bogus'"),
    ):
        env = dict(dtq_env, **{variable: value})
        proc = run_dtq("enqueue", "test_only", "--id", "kept-out", "--data", ECHO, env=env)
        assert_clean_error(proc, 1, said)
    # The same options in the URL's query (an infinite wait failed after the append's writes).
    for query in ("?wait_replicas=1&wait_timeout_s=inf", "?wait_timeout_s=0"):
        env = dict(dtq_env, DTQ_URL=dtq_env["DTQ_URL"] + query)
        proc = run_dtq("enqueue", "test_only", "--id", "kept-out", "--data", ECHO, env=env)
        assert_clean_error(proc, 1, "Redis engine option wait_timeout_s = ", "expected a number above 0")
    assert queue.get("kept-out") is None


def test_a_taken_port_is_a_message(run_dtq: RunDtq, taken_port: int) -> None:
    metrics = run_dtq("worker", "--plugins", "test_only", "--burst", "--metrics-port", str(taken_port))
    assert_clean_error(
        metrics, 1, f"cannot serve metrics on 0.0.0.0:{taken_port}", "choose another --metrics-port"
    )
    # uvicorn's own exit code, 3, is dtq's for an unreachable engine.
    dashboard = run_dtq("dashboard", "--port", str(taken_port), timeout=30)
    assert dashboard.returncode == 1 and "Traceback" not in dashboard.stderr
    assert f"dtq: error: the dashboard could not start on 127.0.0.1:{taken_port}" in dashboard.stderr


@pytest.mark.parametrize(
    ("schedule", "said"),
    [
        ({"name": 5, "cron": "* * * * *", "plugin": "test_only"}, "periodic name must be text, got 5"),
        ({"name": "a", "cron": 5, "plugin": "test_only"}, "periodic cron must be text, got 5"),
        (
            {"name": "a", "cron": "* * * * *", "plugin": "test_only", "data": [1]},
            "periodic 'a': data must be a dict (a JSON object), got [1]",
        ),
        (5, "expected name, cron, plugin, and optional data and options: got int"),
    ],
)
def test_a_periodic_file_with_values_of_the_wrong_type_is_refused(
    run_dtq: RunDtq, tmp_path: Path, schedule: object, said: str
) -> None:
    path = write(tmp_path / "periodic.json", json.dumps([schedule]))
    proc = run_dtq("worker", "--plugins", "test_only", "--burst", "--periodic-file", path)
    assert_clean_error(proc, 1, f"{path}[0]: {said}")


def test_cancel_and_retry_of_several_jobs_report_each_one(run_dtq: RunDtq, queue: Queue) -> None:
    # They stopped at the first unknown id, saying only that: the jobs before it had
    # been cancelled (or requeued) without a word.
    for job_id in ("q1", "q2"):
        queue.enqueue("test_only", {"action": "echo"}, id=job_id, delay_s=3600)
    cancelled = run_dtq("cancel", "q1", "nosuch", "q2")
    assert_clean_error(cancelled, 5, "1 of 3 job(s) not cancelled: no job with id 'nosuch'")
    assert cancelled.stdout.splitlines() == [
        "q1: cancelled",
        "nosuch: not cancelled: no job with id 'nosuch' (never appended, or its record expired)",
        "q2: cancelled",
    ]
    as_json = run_dtq("retry", "q1", "nosuch", "q2", "--json")
    assert as_json.returncode == 5
    assert json.loads(as_json.stdout) == [
        {"id": "q1", "status": "queued"},
        {"id": "nosuch", "error": "no job with id 'nosuch' (never appended, or its record expired)"},
        {"id": "q2", "status": "queued"},
    ]
    for job_id in ("q1", "q2"):
        job = queue.get(job_id)
        assert job is not None and job.status is JobStatus.QUEUED


def test_a_missing_config_file_is_named_as_given(run_dtq: RunDtq, tmp_path: Path) -> None:
    proc = run_dtq("--config", str(tmp_path / "nonexist.toml"), "config")
    assert_clean_error(
        proc, 1, f"the config file {tmp_path / 'nonexist.toml'} (--config or DTQ_CONFIG) is not a file"
    )
