"""Operating dtq from the shell: settings, bulk enqueue, retry and purge, health, logs, metrics.

Every test runs the installed ``dtq`` command as a subprocess against the
session's private Redis, in a directory of its own (where a ``dtq.toml`` may be).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dtqtest import dtq_command, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

from dtq_core import JobStatus, Queue

RunDtq = Callable[..., subprocess.CompletedProcess[str]]
StartWorker = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start_worker(dtq_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [*dtq_command(), "worker", *args],
            env=dtq_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_config_shows_each_value_and_its_source_with_secrets_masked(
    run_dtq: RunDtq, dtq_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "dtq.toml").write_text(
        'concurrency = 4\nmode = "thread"\n[plugin.weather]\napi_key = "hunter2"\n[engine]\nsignal_cap = 99\n'
    )
    env = dict(dtq_env, DTQ_LEASE_S="12", DTQ_URL="redis://app:hunter2@127.0.0.1:1/0")
    shown = run_dtq("config", "--json", "--namespace", "from-option", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout + shown.stderr
    rows = {row["name"]: (row["value"], row["source"]) for row in json.loads(shown.stdout)}
    config_file = str(tmp_path / "dtq.toml")
    assert rows["concurrency"] == (4, config_file)
    assert rows["lease_s"] == (12.0, "env DTQ_LEASE_S")
    assert rows["namespace"] == ("from-option", "argument")
    assert rows["url"] == ("redis://app:***@127.0.0.1:1/0", "env DTQ_URL")
    assert rows["grace_s"] == (30.0, "default")
    assert rows["plugin.weather.api_key"] == ("***", config_file)
    assert rows["engine.signal_cap"] == (99, config_file)
    table = run_dtq("config", env=env)
    assert "concurrency" in table.stdout and "hunter2" not in table.stdout
    (tmp_path / "other.toml").write_text("concurrency = 7\n")
    chosen = run_dtq("--config", "other.toml", "config", "--json")
    assert {r["name"]: r["value"] for r in json.loads(chosen.stdout)}["concurrency"] == 7


def test_a_bad_setting_is_one_line_naming_it(
    run_dtq: RunDtq, dtq_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "dtq.toml").write_text("concurency = 4\n")
    proc = run_dtq("stats")
    assert proc.returncode == 1 and proc.stderr.startswith("dtq: error: unknown setting 'concurency'")
    assert "Traceback" not in proc.stderr
    (tmp_path / "dtq.toml").unlink()
    proc = run_dtq("worker", "--burst", env=dict(dtq_env, DTQ_MODE="fibers"))
    assert proc.returncode == 1 and "setting mode = 'fibers' (env DTQ_MODE)" in proc.stderr


def test_config_refuses_engine_options_the_engine_would_refuse(
    run_dtq: RunDtq, dtq_env: dict[str, str], tmp_path: Path
) -> None:
    """As the engine refuses them at first use: `dtq config` is where one checks a setup."""
    spin = run_dtq("config", env=dict(dtq_env, DTQ_ENGINE__REPLY_SPIN_US="99999999"))
    assert spin.returncode == 1 and "Traceback" not in spin.stderr
    assert "Redis engine option reply_spin_us = 99999999: expected a number from 0 to 10000" in spin.stderr
    (tmp_path / "dtq.toml").write_text("[engine]\nno_such = 1\n")
    unknown = run_dtq("config")
    assert unknown.returncode == 1 and "unknown Redis engine option 'no_such'" in unknown.stderr
    sqlite = run_dtq("config", env=dict(dtq_env, DTQ_URL=f"sqlite:///{tmp_path / 'q.db'}"))
    assert sqlite.returncode == 1 and "unknown SQLite engine option 'no_such'" in sqlite.stderr
    (tmp_path / "dtq.toml").write_text("[engine]\nevents_max = 5\n")
    assert run_dtq("config").returncode == 0


def test_the_worker_takes_its_settings_from_the_config_file(run_dtq: RunDtq, tmp_path: Path) -> None:
    (tmp_path / "dtq.toml").write_text('plugins = ["test_only"]\nmode = "thread"\nconcurrency = 3\n')
    run_dtq("enqueue", "test_only", "--id", "j", "--data", '{"action": "echo"}')
    worked = run_dtq("worker", "--burst", "-v")
    assert worked.returncode == 0, worked.stderr
    assert "test_only, concurrency 3 (thread mode)" in worked.stderr
    assert json.loads(run_dtq("result", "j").stdout) == {"action": "echo"}


def test_enqueue_many_from_a_file_or_stdin_checks_every_line_first(
    run_dtq: RunDtq, dtq_env: dict[str, str], tmp_path: Path, queue: Queue
) -> None:
    lines = [
        {"id": "w1", "job": {"plugin": "test_only", "data": {"action": "echo", "n": 1}}},
        {"id": "w2", "job": {"plugin": "test_only", "data": {"action": "echo"}}, "options": {"priority": 5}},
        {"job": {"plugin": "test_only", "data": {"action": "echo"}}},
    ]
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    first = run_dtq("enqueue", "--file", "jobs.jsonl", "--max-retries", "2")
    assert first.returncode == 0, first.stderr
    ids = first.stdout.split()
    assert ids[:2] == ["w1", "w2"] and len(ids) == 3
    w2 = queue.get("w2")
    assert w2 is not None and (w2.priority, w2.max_retries) == (5, 2)
    again = run_dtq("enqueue", "--file", "jobs.jsonl", "--json")
    assert [row["id"] for row in json.loads(again.stdout)][:2] == ["w1", "w2"]  # ids dedupe: nothing twice
    assert queue.stats().queues[0].waiting == 4  # the id-less line made a new job the second time

    piped = subprocess.run(
        [*dtq_command(), "enqueue", "test_only", "--file", "-"],
        input='{"action": "echo", "n": 1}\n{"action": "echo", "n": 2}\n',
        env=dtq_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert piped.returncode == 0 and len(piped.stdout.split()) == 2, piped.stderr

    (tmp_path / "bad.jsonl").write_text(
        '{"id": "ok1", "job": {"plugin": "test_only", "data": {"action": "echo"}}}\n{not json\n'
        '{"id": "x", "job": {"plugin": "test_only", "data": "text"}}\n'
        '{"id": "y", "job": {"plugin": "nope", "data": {}}}\n'
    )
    bad = run_dtq("enqueue", "--file", "bad.jsonl")
    assert bad.returncode == 1 and bad.stderr.startswith("dtq: error: nothing appended")
    for fragment in ("line 2: not JSON", "line 3: job['job']['data'] must be a dict", "line 4: ", "'nope'"):
        assert fragment in bad.stderr
    assert queue.get("ok1") is None


def test_retry_and_purge_of_failed_jobs(run_dtq: RunDtq, queue: Queue) -> None:
    for job_id in ("f1", "f2"):
        queue.enqueue("test_only", {"action": "fail"}, id=job_id, max_retries=0)
    run_dtq("worker", "--plugins", "test_only", "--burst", "--mode", "thread")
    assert {job.id for job in queue.failed()} == {"f1", "f2"}
    retried = run_dtq("retry", "f1")
    assert retried.returncode == 0 and retried.stdout.strip() == "f1: queued"
    job = queue.get("f1")
    assert job is not None and job.status is JobStatus.QUEUED
    everything = run_dtq("retry", "--all-failed", "--json")
    assert json.loads(everything.stdout) == [{"id": "f2", "status": "queued"}]
    run_dtq("worker", "--plugins", "test_only", "--burst", "--mode", "thread")
    refused = run_dtq("purge", "failed")  # no --yes and no terminal to confirm on
    assert refused.returncode == 1 and "nothing deleted" in refused.stderr
    purged = run_dtq("purge", "failed", "--yes")
    assert purged.stdout.strip() == "purged 2 failed job(s)"
    assert queue.get("f1") is None and queue.failed() == []
    missing = run_dtq("retry", "nope")
    assert missing.returncode == 5 and "no job with id 'nope'" in missing.stderr


def test_health_needs_the_engine_and_a_live_worker_per_named_queue(
    run_dtq: RunDtq, start_worker: StartWorker, queue: Queue
) -> None:
    nobody = run_dtq("health")
    assert nobody.returncode == 6 and "no live worker in namespace" in nobody.stderr
    start_worker("--plugins", "test_only", "--mode", "thread")
    wait_for(queue.workers)
    assert run_dtq("health").returncode == 0
    served = run_dtq("health", "--queue", "test_only", "--json")
    assert served.returncode == 0 and json.loads(served.stdout)["healthy"] is True
    other = run_dtq("health", "--queue", "test_only", "--queue", "reports", "--json")
    assert other.returncode == 6 and json.loads(other.stdout)["unserved"] == ["reports"]
    away = run_dtq("health", "--url", f"redis://127.0.0.1:{free_port()}/0")
    assert away.returncode == 3 and away.stderr.startswith("dtq: error: cannot reach Redis")


def test_json_logs_have_one_line_per_job_event_and_a_banner(run_dtq: RunDtq, queue: Queue) -> None:
    queue.enqueue("test_only", {"action": "echo"}, id="ok")
    queue.enqueue("test_only", {"action": "fail"}, id="bad", max_retries=0)
    worked = run_dtq("worker", "--plugins", "test_only", "--burst", "-v", "--log-format", "json")
    assert worked.returncode == 0, worked.stderr
    lines = [json.loads(line) for line in worked.stderr.splitlines()]
    assert "test_only, concurrency 1 (process mode)" in lines[0]["message"]
    events = {line["job_id"]: line for line in lines if "job_id" in line}
    assert events["ok"]["status"] == "succeeded" and events["ok"]["attempt"] == 1
    assert events["bad"]["status"] == "failed" and events["bad"]["level"] == "warning"
    assert events["bad"]["error"] == "RuntimeError: test_only was asked to fail"
    assert all(isinstance(e["duration_s"], float) and e["plugin"] == "test_only" for e in events.values())


def test_metrics_are_served_for_prometheus(start_worker: StartWorker, queue: Queue) -> None:
    port = free_port()
    worker = start_worker("--plugins", "test_only", "-c", "2", "--metrics-port", str(port), "--lease", "5")
    for n in range(3):
        queue.enqueue("test_only", {"action": "echo"}, id=f"ok{n}")
    queue.enqueue("test_only", {"action": "fail"}, id="bad", max_retries=1, retry_backoff_s=0.01)
    for job_id in ("ok0", "ok1", "ok2"):
        assert queue.result(job_id, timeout=30) == {"action": "echo"}
    # retries exhausted: the job is dead
    wait_for(lambda: (job := queue.get("bad")) is not None and job.status is JobStatus.DEAD, timeout=30)

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def counted(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float | None]:
        return {
            outcome: samples.get(("dtq_jobs_total", (("outcome", outcome), ("plugin", "test_only"))))
            for outcome in ("succeeded", "retried", "dead")
        }

    expected = {"succeeded": 3.0, "retried": 1.0, "dead": 1.0}
    # An attempt is counted once its worker has its outcome's stored reply, which for a
    # slot whose queue ran dry comes after its brief wait for a next job (up to 100 ms):
    # a producer may see the result first.
    samples = wait_for(scrape)
    deadline = time.monotonic() + 10
    while counted(samples) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        samples = scrape()
    assert counted(samples) == expected
    assert samples[("dtq_job_duration_seconds_count", (("plugin", "test_only"),))] == 5.0
    assert samples[("dtq_queue_jobs", (("plugin", "test_only"), ("state", "waiting")))] == 0.0
    assert samples[("dtq_worker_concurrency", ())] == 2.0
    assert samples[("dtq_worker_uptime_seconds", ())] > 0
    assert ("dtq_failed_jobs", ()) in samples
    assert worker.poll() is None


def test_every_command_has_examples_in_its_help(run_dtq: RunDtq) -> None:
    for command in (
        "enqueue",
        "worker",
        "status",
        "result",
        "cancel",
        "retry",
        "stats",
        "workers",
        "health",
        "config",
        "purge",
        "plugins",
    ):
        shown = run_dtq(command, "--help")
        assert shown.returncode == 0 and "Example" in shown.stdout, command


def test_events_are_followed_while_jobs_run_and_filtered(
    run_dtq: RunDtq, dtq_env: dict[str, str], tmp_path: Path, queue: Queue
) -> None:
    follower = subprocess.Popen(
        [*dtq_command(), "events", "--follow", "--json", "--plugin", "test_only"],
        env=dtq_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[str, object]] = []
    reader = threading.Thread(target=lambda: seen.extend(json.loads(line) for line in follower.stdout or ()))
    reader.start()
    try:
        # The follower starts from "now": append probes until it shows one, then it is listening.
        probes = iter(range(1000))
        wait_for(lambda: queue.enqueue("test_only", {"action": "echo"}, id=f"probe{next(probes)}") and seen)
        with Queue(["test_only", "elsewhere"], settings=queue.settings) as both:
            both.enqueue("elsewhere", {}, id="other")
        queue.enqueue("test_only", {"action": "echo"}, id="j1")
        queue.enqueue("test_only", {"action": "fail"}, id="j2", max_retries=0)
        run_dtq("worker", "--plugins", "test_only", "--burst", "--mode", "thread")
        wait_for(lambda: any(e["job_id"] == "j2" and e["type"] == "failed" for e in seen))
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(15)
        reader.join(15)
        errors = follower.stderr.read() if follower.stderr else ""
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()
    assert follower.returncode == 0, errors
    by_job: dict[object, list[object]] = {}
    for event in seen:
        by_job.setdefault(event["job_id"], []).append(event["type"])
    assert by_job["j1"] == ["appended", "started", "succeeded"]
    assert by_job["j2"] == ["appended", "started", "failed"]
    assert "other" not in by_job
    [failed] = [e for e in seen if e["job_id"] == "j2" and e["type"] == "failed"]
    assert (
        failed["error_type"] == "RuntimeError" and failed["attempt"] == 1 and failed["plugin"] == "test_only"
    )

    history = run_dtq("events", "--job", "j1", "--json")
    assert [json.loads(line)["type"] for line in history.stdout.splitlines()] == [
        "appended",
        "started",
        "succeeded",
    ]
    text = run_dtq("events", "--job", "j2")
    assert "failed" in text.stdout and "RuntimeError" in text.stdout


def test_events_of_a_job_are_found_past_the_first_limit_of_events(run_dtq: RunDtq, queue: Queue) -> None:
    queue.enqueue_many("test_only", [{"action": "echo"}] * 1500)  # more than a page of events
    queue.enqueue("test_only", {"action": "echo"}, id="late", priority=5)
    queue.enqueue("test_only", {"action": "echo"}, id="later", priority=5)
    found = run_dtq("events", "--job", "late", "--job", "later", "--json")
    assert found.returncode == 0, found.stderr
    assert [json.loads(line)["job_id"] for line in found.stdout.splitlines()] == ["late", "later"]
    first = run_dtq("events", "--job", "late", "--job", "later", "--limit", "1")
    assert len(first.stdout.splitlines()) == 1 and "late" in first.stdout
    assert len(run_dtq("events", "--limit", "1600").stdout.splitlines()) == 1502
    huge = run_dtq("events", "--limit", str(2**64))
    assert huge.returncode == 2 and "--limit" in huge.stderr and "Traceback" not in huge.stderr


def test_bulk_enqueue_shows_progress_only_on_a_terminal(
    run_dtq: RunDtq, dtq_env: dict[str, str], tmp_path: Path
) -> None:
    lines = (json.dumps({"job": {"plugin": "test_only", "data": {"action": "echo"}}}) for _ in range(2000))
    (tmp_path / "many.jsonl").write_text("\n".join(lines))
    piped = run_dtq("enqueue", "--file", "many.jsonl")
    assert piped.returncode == 0 and piped.stderr == "" and len(piped.stdout.split()) == 2000
    # util-linux `script` gives the command a pseudo-terminal, as an operator's shell would.
    command = f"{dtq_command()[0]} enqueue --file many.jsonl > ids.txt"
    on_terminal = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        env=dtq_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert on_terminal.returncode == 0, on_terminal.stdout
    assert "appending" in on_terminal.stdout  # the bar, drawn on the terminal
    assert len((tmp_path / "ids.txt").read_text().split()) == 2000
