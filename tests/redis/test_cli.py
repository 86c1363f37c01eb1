"""The installed ``dtq`` command, run as a subprocess against the private Redis."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dtqtest import FakeSite, assert_clean_error, dtq_command, free_port, unique_module

from dtq_core import ConfigError, JobStatus, Queue, scaffold

RunDtq = Callable[..., subprocess.CompletedProcess[str]]
SEED_DATA = '{"text": "To be processed!", "action": "duplicate_text"}'


def test_seed_example_through_the_cli(run_dtq: RunDtq) -> None:
    enqueued = run_dtq("enqueue", "test_only", "--id", "test_job_one", "--data", SEED_DATA)
    assert enqueued.returncode == 0, enqueued.stderr
    assert enqueued.stdout.strip() == "test_job_one"
    worked = run_dtq("worker", "--plugins", "test_only", "--burst")
    assert worked.returncode == 0, worked.stderr
    shown = run_dtq("status", "test_job_one", "--json")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["id"] == "test_job_one"
    assert record["job"] == {"plugin": "test_only", "data": json.loads(SEED_DATA)}
    assert (record["status"], record["result"], record["attempts"]) == (
        "succeeded",
        "To be processed!To be processed!",
        1,
    )
    human = run_dtq("status", "test_job_one")
    assert "status: succeeded" in human.stdout
    assert "result: To be processed!To be processed!" in human.stdout
    result = run_dtq("result", "test_job_one", "--wait", "--timeout", "5")
    assert json.loads(result.stdout) == "To be processed!To be processed!"


def test_enqueue_generates_an_id_when_none_is_given(run_dtq: RunDtq) -> None:
    proc = run_dtq("enqueue", "test_only", "--data", '{"action": "echo"}')
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip()) == 32


def test_plugins_lists_distribution_version_and_status(run_dtq: RunDtq) -> None:
    proc = run_dtq("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["test_only"]["distribution"] == "dtq-plugins-testonly"
    assert rows["test_only"]["status"] == "ok"
    assert rows["test_only"]["version"]
    table = run_dtq("plugins")
    assert "test_only" in table.stdout and "dtq-plugins-testonly" in table.stdout


def test_broken_plugin_is_listed_with_its_error_and_others_keep_working(
    run_dtq: RunDtq, dtq_env: dict[str, str], fake_site: FakeSite
) -> None:
    module = unique_module()
    fake_site.add("dtq-plugin-broken", "0.3", {"broken": f"{module}:B"}, {module: "import missing_dep_q\n"})
    env = dict(dtq_env, PYTHONPATH=str(fake_site.root))
    listing = run_dtq("plugins", "--json", env=env)
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["broken"]["status"] == "import error"
    assert "missing_dep_q" in rows["broken"]["error"]
    assert rows["test_only"]["status"] == "ok"
    refused = run_dtq("enqueue", "broken", "--data", "{}", env=env)
    assert_clean_error(refused, 1, "'broken' from dtq-plugin-broken 0.3 failed to import", "missing_dep_q")
    worker = run_dtq("worker", "--plugins", "broken", "--burst", env=env)
    assert_clean_error(worker, 1, "failed to import")
    fine = run_dtq("enqueue", "test_only", "--data", '{"action": "echo"}', env=env)
    assert fine.returncode == 0, fine.stderr


def test_duplicate_plugin_name_is_refused_naming_both_distributions(
    run_dtq: RunDtq, dtq_env: dict[str, str], fake_site: FakeSite
) -> None:
    source = "from dtq_core import Plugin\nclass P(Plugin):\n    def process(self, job):\n        return 1\n"
    first, second = unique_module(), unique_module()
    fake_site.add("dtq-plugin-one", "1.0", {"twin": f"{first}:P"}, {first: source})
    fake_site.add("dtq-plugin-two", "1.0", {"twin": f"{second}:P"}, {second: source})
    env = dict(dtq_env, PYTHONPATH=str(fake_site.root))
    proc = run_dtq("enqueue", "twin", "--data", "{}", env=env)
    assert_clean_error(proc, 1, "dtq-plugin-one 1.0", "dtq-plugin-two 1.0", "more than one distribution")


def test_unknown_plugin(run_dtq: RunDtq) -> None:
    proc = run_dtq("enqueue", "no_such_plugin", "--data", "{}")
    assert_clean_error(proc, 1, "no plugin named 'no_such_plugin' is installed", "--plugins")


def test_plugin_not_on_the_allow_list(run_dtq: RunDtq) -> None:
    proc = run_dtq("enqueue", "test_only", "--plugins", "other", "--data", '{"action": "echo"}')
    assert_clean_error(proc, 1, "'test_only' is not on the allow-list (other)")


def test_non_json_data(run_dtq: RunDtq) -> None:
    proc = run_dtq("enqueue", "test_only", "--data", "{text: hi}")
    assert_clean_error(proc, 1, "--data is not valid JSON", "e.g. --data")


def test_malformed_job_data(run_dtq: RunDtq) -> None:
    proc = run_dtq("enqueue", "test_only", "--data", "[1, 2]")
    assert_clean_error(proc, 1, "must be a dict (a JSON object)")
    invalid = run_dtq("enqueue", "test_only", "--data", '{"action": "sleep"}')
    assert_clean_error(invalid, 1, "needs data.seconds")


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis://:s3cret@127.0.0.1:{port}/0", "cannot reach Redis at redis://:***@127.0.0.1"),
        # A Cluster client connects as it is made (a traceback from its constructor, before).
        (
            "redis+cluster://:s3cret@127.0.0.1:{port}",
            "cannot reach Redis Cluster at redis+cluster://:***@127.0.0.1",
        ),
        # It went on with the repr of the sentinel clients tried, about a kilobyte of it.
        (
            "redis+sentinel://:s3cret@127.0.0.1:{port}/mymaster",
            "No master found for 'mymaster'. Is a sentinel",
        ),
    ],
)
def test_unreachable_redis_names_the_url_and_exits_3(
    run_dtq: RunDtq, dtq_env: dict[str, str], url: str, said: str
) -> None:
    env = dict(dtq_env, DTQ_URL=url.format(port=free_port()))
    for args in (
        ("enqueue", "test_only", "--data", '{"action": "echo"}'),
        ("status", "x"),
        ("worker", "--burst"),
    ):
        proc = run_dtq(*args, env=env)
        assert_clean_error(proc, 3, said)
        assert "s3cret" not in proc.stderr and "ConnectionPool" not in proc.stderr


def test_a_cluster_url_for_a_lone_server_says_it_is_not_a_cluster(
    run_dtq: RunDtq, dtq_env: dict[str, str]
) -> None:
    lone = urllib.parse.urlsplit(dtq_env["DTQ_URL"])
    env = dict(dtq_env, DTQ_URL=f"redis+cluster://{lone.hostname}:{lone.port}")
    proc = run_dtq("stats", env=env)
    assert_clean_error(proc, 1, "Cluster mode is not enabled", "for a lone server use redis:// instead")


def test_a_misspelt_url_option_is_named_not_a_traceback(run_dtq: RunDtq, dtq_env: dict[str, str]) -> None:
    env = dict(dtq_env, DTQ_URL=dtq_env["DTQ_URL"] + "?socket_timout=3")
    for args in (("enqueue", "test_only", "--data", '{"action": "echo"}'), ("stats",), ("worker", "--burst")):
        proc = run_dtq(*args, env=env)
        assert_clean_error(proc, 1, "'socket_timout' is not an option of a Redis connection")


def test_status_of_unknown_job(run_dtq: RunDtq) -> None:
    proc = run_dtq("status", "never-there")
    assert_clean_error(proc, 5, "no job with id 'never-there'")


def test_result_of_a_failed_job_exits_4(run_dtq: RunDtq) -> None:
    run_dtq("enqueue", "test_only", "--id", "f", "--data", '{"action": "fail", "message": "nope"}')
    run_dtq("worker", "--burst")
    proc = run_dtq("result", "f", "--wait", "--timeout", "5")
    assert_clean_error(proc, 4, "RuntimeError: nope")


def test_help_shows_examples(run_dtq: RunDtq) -> None:
    proc = run_dtq("enqueue", "--help")
    assert proc.returncode == 0
    assert "dtq enqueue test_only" in proc.stdout


def test_dead_letters_from_the_cli(run_dtq: RunDtq) -> None:
    data = '{"action": "fail", "message": "bad"}'
    run_dtq(
        "enqueue", "test_only", "--id", "d1", "--max-retries", "1", "--retry-backoff", "0.2", "--data", data
    )
    # the retry waits out its backoff in Redis, then runs
    for _ in range(40):
        run_dtq("worker", "--burst", "--mode", "thread")
        if json.loads(run_dtq("status", "d1", "--json").stdout)["status"] == "dead":
            break
    listed = run_dtq("dead", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [dead] = json.loads(listed.stdout)
    assert (dead["id"], dead["status"], dead["attempts"]) == ("d1", "dead", 2)
    assert "retries exhausted" in dead["error"]["message"]
    [row] = [line.split() for line in run_dtq("dead", "list").stdout.splitlines() if line.startswith("d1")]
    assert row[:3] == ["d1", "test_only", "2"] and "RuntimeError:" in row
    requeued = run_dtq("dead", "requeue", "d1")
    assert requeued.returncode == 0 and "d1: requeued" in requeued.stdout
    assert json.loads(run_dtq("status", "d1", "--json").stdout)["status"] == "queued"
    nothing = run_dtq("dead", "requeue")
    assert_clean_error(nothing, 1, "name the jobs to requeue, or pass --all")
    assert run_dtq("dead", "purge", "--yes").stdout.strip() == "purged 0 dead job(s)"


def test_dead_requeue_takes_only_dead_jobs_and_goes_on_past_the_others(run_dtq: RunDtq, queue: Queue) -> None:
    queue.enqueue("test_only", {"action": "echo"}, id="called-off", delay_s=3600)
    queue.cancel("called-off")  # an operator's decision: `dead requeue` must not undo it
    queue.enqueue("test_only", {"action": "echo"}, id="gone", priority=100)
    [lease] = queue.engine.fetch(["test_only"], count=1, lease_s=60, worker_id="lost").leases
    queue.engine.release(lease, lost=True, max_lost_leases=1, ttl_s=60)  # its worker died: dead
    done = run_dtq("dead", "requeue", "called-off", "nope", "gone")
    assert done.returncode == 5, done.stderr  # JobNotFound's code
    assert "called-off: not requeued: job 'called-off' is cancelled, not dead" in done.stdout
    assert "nope: not requeued: no job with id 'nope'" in done.stdout
    assert "gone: requeued" in done.stdout
    assert "2 of 3 job(s) not requeued" in done.stderr and "Traceback" not in done.stderr
    cancelled, requeued = queue.get("called-off"), queue.get("gone")
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert requeued is not None and requeued.status is JobStatus.QUEUED


def test_cancel_from_the_cli(run_dtq: RunDtq) -> None:
    run_dtq("enqueue", "test_only", "--id", "c1", "--delay", "60", "--data", '{"action": "echo"}')
    assert json.loads(run_dtq("status", "c1", "--json").stdout)["status"] == "scheduled"
    proc = run_dtq("cancel", "c1")
    assert proc.returncode == 0 and proc.stdout.strip() == "c1: cancelled"
    assert json.loads(run_dtq("status", "c1", "--json").stdout)["status"] == "cancelled"
    assert_clean_error(run_dtq("cancel", "nope"), 5, "no job with id 'nope'")


def test_enqueue_options_are_checked(run_dtq: RunDtq) -> None:
    assert_clean_error(
        run_dtq("enqueue", "test_only", "--delay", "-1", "--data", '{"action": "echo"}'),
        1,
        "delay_s must be a number of seconds from 0 up",
    )
    proc = run_dtq("enqueue", "test_only", "--timeout", "x", "--data", "{}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_workers_lists_a_running_worker(run_dtq: RunDtq, dtq_env: dict[str, str], tmp_path: object) -> None:
    worker = subprocess.Popen(
        [*dtq_command(), "worker", "--plugins", "test_only", "-c", "2"],
        env=dtq_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        rows: list[dict[str, object]] = []
        for _ in range(100):
            rows = json.loads(run_dtq("workers", "--json").stdout)
            if rows:
                break
        assert len(rows) == 1
        # Numbers and lists, as `stats --json` gives them (they were the registry's text).
        assert (rows[0]["pid"], rows[0]["plugins"], rows[0]["concurrency"], rows[0]["in_hand"]) == (
            worker.pid,
            ["test_only"],
            2,
            [],
        )
        age = rows[0]["heartbeat_age_s"]
        assert isinstance(age, float) and 0 <= age < 60
    finally:
        worker.terminate()
        assert worker.wait(20) == 0
    assert json.loads(run_dtq("workers", "--json").stdout) == []


def test_stats_flag_unserved_queues(run_dtq: RunDtq) -> None:
    run_dtq("enqueue", "test_only", "--data", '{"action": "echo"}')
    run_dtq("enqueue", "elsewhere", "--plugins", "elsewhere", "--data", "{}")
    proc = run_dtq("stats", "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["unserved"] == ["elsewhere", "test_only"]
    assert {q["plugin"]: q["waiting"] for q in record["queues"]} == {"elsewhere": 1, "test_only": 1}
    rows = {line.split()[0]: line.split()[1:] for line in run_dtq("stats").stdout.splitlines()[1:-1]}
    assert rows["elsewhere"][:4] == ["1", "0", "0", "0"] and rows["elsewhere"][-1] == "UNSERVED"


def test_worker_reads_periodic_jobs_from_a_file(run_dtq: RunDtq, tmp_path: Path) -> None:
    schedules = tmp_path / "periodic.json"
    schedules.write_text(
        json.dumps(
            [{"name": "minutely", "cron": "* * * * *", "plugin": "test_only", "data": {"action": "echo"}}]
        )
    )
    proc = run_dtq("worker", "--burst", "--mode", "thread", "--periodic-file", str(schedules))
    assert proc.returncode == 0, proc.stderr
    # test_only appears only because the tick's job was appended; waiting=0: it ran
    [queue] = json.loads(run_dtq("stats", "--json").stdout)["queues"]
    shown = {key: queue[key] for key in ("plugin", "waiting", "scheduled", "running", "succeeded", "served")}
    assert shown == {
        "plugin": "test_only",
        "waiting": 0,
        "scheduled": 0,
        "running": 0,
        "succeeded": 1,
        "served": False,
    }
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "x", "cron": "nope", "plugin": "test_only"}]')
    assert_clean_error(
        run_dtq("worker", "--burst", "--periodic-file", str(bad)), 1, "bad cron expression 'nope'"
    )


def test_plugins_check_exits_1_when_anything_is_wrong(run_dtq: RunDtq) -> None:
    assert run_dtq("plugins", "--check").returncode == 0
    assert run_dtq("plugins", "--check", "--plugins", "test_only").returncode == 0
    missing = run_dtq("plugins", "--check", "--plugins", "test_only,absent")
    assert_clean_error(missing, 1, "plugins with problems: absent (not installed)")
    rows = {row["name"]: row for row in json.loads(run_dtq("plugins", "--json").stdout)}
    assert rows["test_only"]["api_version"] == 1
    assert rows["test_only"]["description"].startswith("For testing")


def test_worker_require_plugin_fails_fast(run_dtq: RunDtq) -> None:
    proc = run_dtq("worker", "--burst", "--require-plugin", "absent")
    assert_clean_error(proc, 1, "required plugin(s) not served: absent: not installed")
    assert run_dtq("worker", "--burst", "--require-plugin", "test_only").returncode == 0


def test_plugin_new_refuses_bad_names_and_existing_folders(run_dtq: RunDtq, tmp_path: Path) -> None:
    assert_clean_error(
        run_dtq("plugin", "new", "Bad-Name", "--dir", str(tmp_path)), 1, "lowercase identifier"
    )
    created = run_dtq("plugin", "new", "greet", "--dir", str(tmp_path))
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "dtq-plugin-greet" / "src" / "dtq_plugin_greet" / "__init__.py").exists()
    assert_clean_error(run_dtq("plugin", "new", "greet", "--dir", str(tmp_path)), 1, "already exists")
    # pip refuses a distribution named dtq-plugin-greet- (it was written, then failed to install)
    assert_clean_error(run_dtq("plugin", "new", "greet_", "--dir", str(tmp_path)), 1, "not ending in '_'")
    assert_clean_error(run_dtq("plugin", "new", "a-b", "--dir", str(tmp_path)), 1, "write _ for -")


def test_plugin_new_into_a_folder_it_cannot_write_says_so_and_leaves_nothing(
    run_dtq: RunDtq, tmp_path: Path
) -> None:
    """Before: a traceback (NotADirectoryError), and a half-made folder blocking the next try."""
    (tmp_path / "afile").write_text("")
    assert_clean_error(
        run_dtq("plugin", "new", "greet", "--dir", str(tmp_path / "afile" / "sub")),
        1,
        "cannot write the plugin's folder",
    )


def test_a_scaffold_that_fails_midway_leaves_no_folder_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[Path] = []
    write_text = Path.write_text

    def full_disk(self: Path, *args: Any, **kwargs: Any) -> int:
        if written:
            raise OSError(28, "No space left on device")
        written.append(self)
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(ConfigError, match="No space left on device; give a folder you can write to"):
        scaffold.create("greet", tmp_path)
    assert written and not (tmp_path / "dtq-plugin-greet").exists()  # the next try is not blocked
