"""Real worker processes killed at the worst moment: no job is lost.

Workers run as ``dtq worker`` subprocesses with short leases; the tests SIGKILL
them mid-job (or the job kills its own worker) and check that the job still
ends in exactly one final state.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
from dtqtest import dtq_command, fails_at_start, never_ready, running, wait_for, works_once

from dtq_core import CancelOutcome, JobFailed, JobProcessError, JobStatus, Queue, Worker, runner
from dtq_core.engines.redis import Keys

StartWorker = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start_worker(dtq_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str, own_group: bool = False) -> subprocess.Popen[str]:
        command = [*dtq_command(), "worker", "--plugins", "test_only", "--lease", "1", *args]
        process = subprocess.Popen(
            command,
            env=dtq_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=own_group,  # a process group of its own, as a service has
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def assert_settled_once(redis_url: str, keys: Keys, job_id: str) -> None:
    """The job has one final record and no copy left queued or leased."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        # A succeeded job's record is a field of one hash; any other final job has a hash of its own.
        assert client.exists(keys.done(job_id)) + client.hexists(keys.succeeded, job_id) == 1
        assert client.hexists(keys.jobs, job_id) == 0
        assert client.zscore(keys.ready("test_only"), job_id) is None
        assert client.zscore(keys.active("test_only"), job_id) is None
    finally:
        client.close()


def is_running(queue: Queue, job_id: str) -> bool:
    job = queue.get(job_id)
    return job is not None and job.status is JobStatus.RUNNING


def test_worker_killed_mid_job_loses_nothing(
    queue: Queue, start_worker: StartWorker, redis_url: str, keys: Keys
) -> None:
    queue.enqueue("test_only", {"action": "sleep", "seconds": 1.5}, id="survivor")
    victim = start_worker()
    wait_for(lambda: is_running(queue, "survivor"))
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = datetime.now(timezone.utc)
    victim.wait(10)
    rescuer = start_worker()
    assert queue.result("survivor", timeout=30) == {"slept": 1.5}
    restarted = queue.get("survivor")
    assert restarted is not None and restarted.started_at is not None
    # back within about a lease (1 s), plus the rescuer's start-up: not the 30 s default
    assert (restarted.started_at - killed_at).total_seconds() < 6
    rescuer.terminate()
    assert rescuer.wait(15) == 0
    final = queue.get("survivor")
    assert final is not None
    assert (final.status, final.attempts, final.lost_leases) == (JobStatus.SUCCEEDED, 2, 1)
    assert_settled_once(redis_url, keys, "survivor")


def test_job_that_kills_its_process_is_redelivered_by_the_same_worker(
    queue: Queue, start_worker: StartWorker, redis_url: str, keys: Keys
) -> None:
    """Process mode: the crash takes down the job's child, not the worker."""
    queue.enqueue("test_only", {"action": "crash", "crashes": 1}, id="phoenix")
    worker = start_worker()
    assert queue.result("phoenix", timeout=30) == {"survived": 2}
    final = queue.get("phoenix")
    assert final is not None and (final.attempts, final.lost_leases) == (2, 1)
    assert final.errors[0].type == "LeaseLost"
    worker.terminate()
    assert worker.wait(15) == 0
    assert_settled_once(redis_url, keys, "phoenix")


def test_job_that_kills_its_thread_mode_worker_is_redelivered_after_the_lease(
    queue: Queue, start_worker: StartWorker, redis_url: str, keys: Keys
) -> None:
    queue.enqueue("test_only", {"action": "crash", "crashes": 1}, id="phoenix")
    first = start_worker("--mode", "thread")
    assert first.wait(20) == -signal.SIGKILL
    second = start_worker("--mode", "thread")
    assert queue.result("phoenix", timeout=30) == {"survived": 2}
    second.terminate()
    second.wait(15)
    assert_settled_once(redis_url, keys, "phoenix")


def test_job_that_always_kills_its_process_ends_dead(queue: Queue, start_worker: StartWorker) -> None:
    queue.enqueue("test_only", {"action": "crash"}, id="poison")
    worker = start_worker()
    with pytest.raises(JobFailed):
        queue.result("poison", timeout=60)
    worker.terminate()
    worker.wait(15)
    final = queue.get("poison")
    assert final is not None and final.error is not None
    assert (final.status, final.lost_leases, final.error.type) == (JobStatus.DEAD, 3, "LeaseLost")
    assert "lost its lease 3 times" in final.error.message


def test_job_that_always_kills_its_thread_mode_worker_ends_dead(
    queue: Queue, start_worker: StartWorker
) -> None:
    queue.enqueue("test_only", {"action": "crash"}, id="poison")
    for _ in range(10):
        job = queue.get("poison")
        assert job is not None
        if job.status.is_final:
            break
        start_worker("--burst", "--mode", "thread").wait(20)
        time.sleep(1.1)  # the killed worker's 1 s lease runs out; the next burst worker recovers it
    final = queue.get("poison")
    assert final is not None and final.error is not None
    assert (final.status, final.lost_leases, final.error.type) == (JobStatus.DEAD, 3, "LeaseLost")


def test_killed_worker_takes_its_job_processes_with_it(queue: Queue, start_worker: StartWorker) -> None:
    queue.enqueue("test_only", {"action": "sleep", "seconds": 30}, id="orphan")
    worker = start_worker()
    wait_for(lambda: is_running(queue, "orphan"))
    children = wait_for(lambda: _children_of(worker.pid))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") and not _is_zombie(pid) for pid in children))


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_sigterm_finishes_the_job_in_hand_then_exits_cleanly(queue: Queue, start_worker: StartWorker) -> None:
    queue.enqueue("test_only", {"action": "sleep", "seconds": 1.0}, id="in-hand")
    queue.enqueue("test_only", {"action": "echo"}, id="next")
    worker = start_worker()
    wait_for(lambda: is_running(queue, "in-hand"))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    finished = queue.get("in-hand")
    assert finished is not None and finished.status is JobStatus.SUCCEEDED
    untouched = queue.get("next")
    assert untouched is not None and untouched.status is JobStatus.QUEUED


def test_sigterm_to_the_whole_process_group_lets_the_job_finish(
    queue: Queue, start_worker: StartWorker
) -> None:
    """As systemd stops a service (every process of it gets SIGTERM): the job process must not
    die at once, counted as a lost lease (three such stops buried a job as dead)."""
    queue.enqueue("test_only", {"action": "progress", "steps": 4, "interval": 0.25}, id="in-hand")
    worker = start_worker("--mode", "process", "--lease", "30", own_group=True)
    wait_for(lambda: (job := queue.get("in-hand")) is not None and job.progress is not None)  # it runs
    os.killpg(worker.pid, signal.SIGTERM)
    output, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0, output
    finished = queue.get("in-hand")
    assert finished is not None, output
    assert (finished.status, finished.attempts, finished.lost_leases) == (JobStatus.SUCCEEDED, 1, 0), output


def test_sigterm_stops_an_idle_worker_at_once(
    queue: Queue, start_worker: StartWorker, dtq_env: dict[str, str]
) -> None:
    # Its idle wait would otherwise last until it timed out (5 s at most, the engine's
    # longest blocking call): the signal handler asks a thread of the worker's to end it.
    dtq_env["DTQ_POLL_S"] = "30"
    worker = start_worker("--mode", "thread")
    wait_for(lambda: bool(queue.workers()))  # registered: its signal handlers are in place
    time.sleep(0.5)  # and it is idle in its blocking wait
    assert worker.poll() is None
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (never_ready, "did not say it was ready within 1 s"),
        (fails_at_start, "failed as it started (exit code 3)"),
    ],
)
def test_a_job_process_that_cannot_start_hands_the_jobs_back_without_spinning(
    queue: Queue,
    redis_url: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    entry: Callable[..., None],
    problem: str,
) -> None:
    monkeypatch.setattr(runner, "child_main", entry)  # spawn finds it by name in dtqtest
    monkeypatch.setattr(runner, "_START_TIMEOUT_S", 1.0)
    queue.enqueue_many("test_only", [{"action": "echo", "n": n} for n in range(3)])
    worker = Worker(["test_only"], redis_url, namespace=namespace, mode="process", prefetch=8, poll_s=0.05)
    stopper = threading.Timer(3.0, worker.stop)
    stopper.start()
    try:
        with caplog.at_level(logging.ERROR, logger="dtq"):
            worker.work()
    finally:
        stopper.cancel()
        worker.close()
    tries = [r.getMessage() for r in caplog.records if "a job process" in r.getMessage()]
    # Paused longer after each failure (before, a slot failed every job it was given, thousands a second).
    assert 1 <= len(tries) <= 6, tries
    assert problem in tries[0] and 'if __name__ == "__main__":' in tries[0]
    assert "handed 3 job(s) back to the queue" in tries[0]
    # Every job is back in its queue, at once: not held until its lease expires.
    [stats] = [q for q in queue.stats().queues if q.plugin == "test_only"]
    assert (stats.waiting, stats.running) == (3, 0)


def test_a_script_that_runs_a_process_worker_unguarded_is_told_how_to_fix_it(
    redis_url: str, namespace: str, queue: Queue, tmp_path: Path
) -> None:
    # The spawned child imports the script again, which runs the worker again: each one's
    # job process never starts, and every job survives.
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import threading\n"
        "import dtq_core.runner\n"
        "from dtq_core import Queue, Worker\n"
        "dtq_core.runner._START_TIMEOUT_S = 2.0\n"
        f"Queue(['test_only'], {redis_url!r}, namespace={namespace!r}).enqueue(\n"
        "    'test_only', {'action': 'echo'}, id='j1')\n"
        f"worker = Worker(['test_only'], {redis_url!r}, namespace={namespace!r}, mode='process',\n"
        "    lease_s=1, poll_s=0.05)\n"
        "threading.Timer(4.0, worker.stop).start()\n"
        "worker.work()\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'keep its code under `if __name__ == "__main__":`' in proc.stderr
    assert proc.stderr.count("handed 1 job(s) back") <= 12  # no spinning
    worker = Worker(["test_only"], redis_url, namespace=namespace, mode="thread", lease_s=1, poll_s=0.05)
    wait_for(lambda: worker.get_jobs() != [] or queue.get("j1").status is JobStatus.SUCCEEDED, timeout=15)
    assert queue.result("j1", timeout=5) == {"action": "echo"}


@pytest.mark.parametrize(("jobs", "prefetch"), [(3, 8), (9, 3)], ids=["one-share", "share-leased-ahead"])
def test_a_burst_whose_job_process_cannot_start_stops_with_the_error_and_keeps_the_jobs(
    queue: Queue, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch, jobs: int, prefetch: int
) -> None:
    monkeypatch.setattr(runner, "child_main", fails_at_start)
    queue.enqueue_many("test_only", [{"action": "echo", "n": n} for n in range(jobs)])
    worker = Worker(
        ["test_only"], redis_url, namespace=namespace, mode="process", prefetch=prefetch, poll_s=0.05
    )
    with pytest.raises(JobProcessError, match="failed as it started") as caught:
        worker.get_jobs()  # before, a burst fetched the handed-back jobs again, for ever
    worker.close()
    assert caught.value.in_a_row == 1
    [stats] = [q for q in queue.stats().queues if q.plugin == "test_only"]
    assert (stats.waiting, stats.running) == (jobs, 0)


# --- the next jobs, sent to the job process while one runs (prefetch above 1) -------------


def burst_in_process_mode(redis_url: str, namespace: str, **options: object) -> list[str]:
    worker = Worker(["test_only"], redis_url, namespace=namespace, mode="process", poll_s=0.05, **options)
    try:
        return [job.id for job in worker.get_jobs()]
    finally:
        worker.close()


def reports_progress(queue: Queue, job_id: str) -> bool:
    """The job reported progress: its child runs it, and has the jobs sent ahead already."""
    job = queue.get(job_id)
    return job is not None and (job.progress or 0) > 0


def final(queue: Queue, job_id: str) -> tuple[JobStatus, int, int]:
    job = queue.get(job_id)
    assert job is not None
    return (job.status, job.attempts, job.lost_leases)


def test_one_job_process_runs_a_whole_share_each_job_sent_while_the_one_before_runs(
    queue: Queue, redis_url: str, namespace: str
) -> None:
    ids = [f"w{n}" for n in range(6)]
    for job_id in ids:
        queue.enqueue("test_only", {"action": "whoami", "seconds": 0.05}, id=job_id)
    assert sorted(burst_in_process_mode(redis_url, namespace, prefetch=6)) == ids
    results = [queue.result(job_id, timeout=5) for job_id in ids]
    assert len({result["pid"] for result in results}) == 1  # one child for the share
    assert all(final(queue, job_id) == (JobStatus.SUCCEEDED, 1, 0) for job_id in ids)


def test_a_job_that_asks_its_worker_while_the_next_is_sent_gets_its_own_replies(
    queue: Queue, redis_url: str, namespace: str
) -> None:
    # The next job's run message reaches the child before the replies to progress
    # and to the cancel checks: the child must keep it for later, not take it for a reply.
    queue.enqueue("test_only", {"action": "progress", "steps": 5, "interval": 0.02}, id="asks")
    queue.enqueue("test_only", {"action": "follow_up"}, id="appends")
    queue.enqueue("test_only", {"action": "echo", "n": 3}, id="plain")
    burst_in_process_mode(redis_url, namespace, prefetch=3)
    assert queue.result("asks", timeout=5) == {"steps": 5}
    assert queue.result("appends", timeout=5) == {"child": "appends-child"}
    assert queue.result("plain", timeout=5) == {"action": "echo", "n": 3}
    assert final(queue, "asks") == (JobStatus.SUCCEEDED, 1, 0)


@pytest.mark.parametrize(
    ("middle", "ending"),
    [
        ({"action": "sleep", "seconds": 60}, (JobStatus.FAILED, 1, 0)),  # stopped at its time limit
        ({"action": "crash", "crashes": 1}, (JobStatus.SUCCEEDED, 2, 1)),  # lost, then ran again
    ],
    ids=["timed-out", "crashed"],
)
def test_the_job_sent_ahead_to_a_child_that_was_killed_runs_in_the_next_child_as_a_first_attempt(
    queue: Queue,
    redis_url: str,
    namespace: str,
    middle: dict[str, object],
    ending: tuple[JobStatus, int, int],
) -> None:
    queue.enqueue("test_only", {"action": "whoami", "seconds": 0}, id="before")
    queue.enqueue("test_only", middle, id="middle", timeout_s=0.5, max_retries=0)
    after = [f"after-{n}" for n in range(5)]  # the first two were sent while middle ran
    for job_id in after:
        queue.enqueue("test_only", {"action": "whoami", "seconds": 0}, id=job_id)
    burst_in_process_mode(redis_url, namespace, prefetch=7)
    before = queue.result("before", timeout=5)
    pids = {queue.result(job_id, timeout=5)["pid"] for job_id in after}
    # The first child was killed with the middle job; the next one ran all the rest, in order:
    # jobs sent ahead again to it, then the following ones (sent out of order, they would
    # have cost a child each).
    assert len(pids) == 1 and before["pid"] not in pids
    for job_id in after:
        assert final(queue, job_id) == (JobStatus.SUCCEEDED, 1, 0)  # neither lost nor counted twice
    assert final(queue, "middle") == ending


def test_a_job_past_its_time_limit_that_stops_by_itself_keeps_its_process_and_the_jobs_sent_ahead(
    queue: Queue, redis_url: str, namespace: str
) -> None:
    # whoami looks at caller.cancelled every 50 ms: told it ran out of time, it ends by itself,
    # within the grace before a kill.
    queue.enqueue("test_only", {"action": "whoami", "seconds": 0}, id="before")
    queue.enqueue("test_only", {"action": "whoami", "seconds": 30}, id="polite", timeout_s=0.5, max_retries=0)
    queue.enqueue("test_only", {"action": "whoami", "seconds": 0}, id="after")
    burst_in_process_mode(redis_url, namespace, prefetch=3)
    polite = queue.get("polite")
    assert polite is not None and polite.error is not None
    assert (polite.status, polite.error.type) == (JobStatus.FAILED, "JobTimeout")
    assert queue.result("before", timeout=5)["pid"] == queue.result("after", timeout=5)["pid"]  # not killed


def test_a_job_past_its_time_limit_is_stopped_on_time_while_the_next_is_too_big_for_the_pipe(
    queue: Queue, redis_url: str, namespace: str
) -> None:
    # The next job is sent while this one runs; more than the pipe's buffer holds, it
    # must not leave the worker stuck writing it, unable to stop the job before.
    blob = "x" * 400_000
    queue.enqueue("test_only", {"action": "sleep", "seconds": 30}, id="slow", timeout_s=0.5, max_retries=0)
    queue.enqueue("test_only", {"action": "echo", "blob": blob}, id="big")
    started = time.monotonic()
    burst_in_process_mode(redis_url, namespace, prefetch=2)
    assert time.monotonic() - started < 15
    slow = queue.get("slow")
    assert slow is not None and slow.error is not None
    assert (slow.status, slow.error.type) == (JobStatus.FAILED, "JobTimeout")
    assert queue.result("big", timeout=5) == {"action": "echo", "blob": blob}


def test_a_job_past_its_time_limit_that_keeps_asking_but_never_stops_is_killed_after_the_grace(
    queue: Queue, redis_url: str, namespace: str
) -> None:
    queue.enqueue(
        "test_only", {"action": "stubborn", "seconds": 30}, id="stubborn", timeout_s=0.5, max_retries=0
    )
    started = time.monotonic()
    burst_in_process_mode(redis_url, namespace)
    assert time.monotonic() - started < 15  # its questions, always one waiting, do not put the kill off
    stubborn = queue.get("stubborn")
    assert stubborn is not None and stubborn.error is not None
    assert (stubborn.status, stubborn.error.type) == (JobStatus.FAILED, "JobTimeout")


def test_a_job_sent_ahead_and_cancelled_while_the_one_before_ran_is_stopped(
    queue: Queue, redis_url: str, namespace: str
) -> None:
    queue.enqueue("test_only", {"action": "progress", "steps": 15, "interval": 0.1}, id="first")
    queue.enqueue("test_only", {"action": "whoami", "seconds": 30}, id="ahead")
    worker = Worker(
        ["test_only"], redis_url, namespace=namespace, mode="process", poll_s=0.05, prefetch=2, lease_s=1.5
    )
    thread = threading.Thread(target=worker.get_jobs)
    thread.start()
    try:
        wait_for(lambda: reports_progress(queue, "first"))
        assert queue.cancel("ahead") is CancelOutcome.REQUESTED  # it is leased: it must be stopped
        thread.join(25)
        assert not thread.is_alive()
    finally:
        worker.stop()
        thread.join(10)
        worker.close()
    assert final(queue, "first") == (JobStatus.SUCCEEDED, 1, 0)
    assert final(queue, "ahead")[0] is JobStatus.CANCELLED


def test_sigterm_with_prefetch_runs_the_job_in_hand_and_those_sent_ahead_and_hands_back_the_rest(
    queue: Queue, start_worker: StartWorker
) -> None:
    queue.enqueue("test_only", {"action": "progress", "steps": 30, "interval": 0.1}, id="in-hand")
    ahead = [f"ahead-{n}" for n in range(runner._AHEAD)]  # as many as a job process is sent
    for job_id in [*ahead, "later-1", "later-2"]:
        queue.enqueue("test_only", {"action": "echo"}, id=job_id)
    worker = start_worker("--prefetch", str(len(ahead) + 3), "--lease", "5")
    wait_for(lambda: reports_progress(queue, "in-hand"))
    worker.send_signal(signal.SIGTERM)
    # The jobs no slot has begun go back at once, for other workers, while the job in hand runs on.
    wait_for(lambda: final(queue, "later-2")[0] is JobStatus.QUEUED)
    assert is_running(queue, "in-hand")
    assert worker.wait(20) == 0
    for job_id in ["in-hand", *ahead]:  # those ahead already in the job process
        assert final(queue, job_id) == (JobStatus.SUCCEEDED, 1, 0)
    for job_id in ("later-1", "later-2"):
        job = queue.get(job_id)  # handed back unstarted: not an attempt, its retries intact
        assert job is not None and (job.status, job.attempts, job.lost_leases, job.started_at) == (
            JobStatus.QUEUED,
            0,
            0,
            None,
        )


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_share_leased_ahead_while_a_full_one_runs_goes_back_unstarted_at_sigterm(
    queue: Queue, start_worker: StartWorker, redis_url: str, keys: Keys, mode: str
) -> None:
    queue.enqueue("test_only", {"action": "progress", "steps": 30, "interval": 0.1}, id="in-hand")
    others = [f"e{n}" for n in range(9)]
    for job_id in others:
        queue.enqueue("test_only", {"action": "echo"}, id=job_id)
    worker = start_worker("--mode", mode, "--prefetch", "3", "--lease", "5")
    client = redis.Redis.from_url(redis_url)
    try:
        # The first share (in-hand, e0, e1) is full, so the slot leases its next (e2-e4) while
        # it runs: six jobs leased, while the queue holds the other four.
        wait_for(lambda: client.zcard(keys.active("test_only")) == 6 and reports_progress(queue, "in-hand"))
        assert client.zcard(keys.ready("test_only")) == 4
    finally:
        client.close()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert final(queue, "in-hand") == (JobStatus.SUCCEEDED, 1, 0)
    # In process mode e0 and e1 were sent to the job process already, so they ran; the share
    # leased ahead went back unstarted, as did anything not sent to a child.
    ran = ["e0", "e1"] if mode == "process" else []
    for job_id in others:
        expected = (JobStatus.SUCCEEDED, 1, 0) if job_id in ran else (JobStatus.QUEUED, 0, 0)
        assert final(queue, job_id) == expected, job_id


def test_past_the_grace_period_only_the_job_that_ran_counts_an_attempt(
    queue: Queue, redis_url: str, namespace: str
) -> None:
    queue.enqueue("test_only", {"action": "progress", "steps": 300, "interval": 0.1}, id="in-hand")
    for job_id in ("ahead-1", "ahead-2", "later"):
        queue.enqueue("test_only", {"action": "echo"}, id=job_id)
    worker = Worker(
        ["test_only"], redis_url, namespace=namespace, mode="process", poll_s=0.05, prefetch=4, grace_s=0.5
    )
    with running(worker):
        wait_for(lambda: reports_progress(queue, "in-hand"))
    worker.close()
    assert final(queue, "in-hand") == (JobStatus.QUEUED, 1, 0)  # stopped mid-run: an attempt, not lost
    for job_id in ("ahead-1", "ahead-2", "later"):  # sent ahead or waiting: never started
        assert final(queue, job_id) == (JobStatus.QUEUED, 0, 0)


def test_jobs_sent_ahead_to_a_child_that_died_go_back_when_no_new_child_can_start(
    queue: Queue, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(runner, "child_main", works_once)
    monkeypatch.setenv("DTQ_TEST_MARKER", str(tmp_path / "a-child-started"))
    queue.enqueue("test_only", {"action": "crash"}, id="crash")  # takes its child down
    for job_id in ("sent-1", "sent-2", "waiting"):  # the first two were sent to that child
        queue.enqueue("test_only", {"action": "echo"}, id=job_id)
    with pytest.raises(JobProcessError, match="failed as it started"):
        burst_in_process_mode(redis_url, namespace, prefetch=4)
    assert final(queue, "crash") == (JobStatus.QUEUED, 1, 1)
    for job_id in ("sent-1", "sent-2", "waiting"):  # none leased and forgotten: all back, none started
        assert final(queue, job_id) == (JobStatus.QUEUED, 0, 0)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_second_signal_during_the_grace_hands_the_job_in_hand_back_at_once(
    queue: Queue, start_worker: StartWorker, mode: str
) -> None:
    # The second signal landed in the grace period's wait, and the run ended without
    # handing the job back or unregistering: it stayed running until its lease expired.
    queue.enqueue("test_only", {"action": "sleep", "seconds": 30}, id="in-hand")
    worker = start_worker("--grace", "30", "--lease", "30", "--mode", mode)
    wait_for(lambda: is_running(queue, "in-hand"))
    worker.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # in the grace period's wait
    worker.send_signal(signal.SIGINT)
    assert worker.wait(20) == 128 + signal.SIGINT
    back = queue.get("in-hand")  # stopped mid-run: an attempt, not a lost lease
    assert back is not None and (back.status, back.attempts, back.lost_leases) == (JobStatus.QUEUED, 1, 0)
    assert queue.workers() == []


def test_a_thread_job_that_outlives_the_stop_leaves_a_slot_that_leases_nothing_more(
    queue: Queue, redis_url: str, namespace: str
) -> None:
    # work() returned while a thread job that would not stop went on; when it ended,
    # its slot leased and ran the queue's jobs for a worker that had unregistered.
    queue.enqueue("test_only", {"action": "sleep", "seconds": 7}, id="stubborn")
    worker = Worker(["test_only"], redis_url, namespace=namespace, mode="thread", poll_s=0.05, grace_s=0.2)
    with running(worker):
        wait_for(lambda: is_running(queue, "stubborn"))
    queue.enqueue("test_only", {"action": "echo"}, id="later")
    time.sleep(2.5)  # the stubborn job's thread ends meanwhile (7 s from its start)
    later = queue.get("later")
    assert later is not None and (later.status, later.attempts) == (JobStatus.QUEUED, 0)
    assert worker.get_jobs() == []  # stays stopped
    worker.close()
