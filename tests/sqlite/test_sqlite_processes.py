"""The SQLite engine with several real worker processes on one file, one of them killed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from dtqtest import dtq_command, wait_for

from dtq_core import JobStatus, Queue
from dtq_core.engines.sqlite import SqliteEngine


def test_worker_processes_share_one_file_and_a_killed_one_loses_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dtq.db'}"
    env = dict(os.environ, DTQ_URL=url, DTQ_NAMESPACE="procs")
    ids = [f"j{i}" for i in range(40)]
    with Queue(["test_only"], url, namespace="procs") as queue:
        # a long job that stops when cancelled (thread mode cannot kill it)
        queue.enqueue("test_only", {"action": "progress", "steps": 3000, "interval": 0.01}, id="long")
        for job_id in ids:
            queue.enqueue("test_only", {"action": "duplicate_text", "text": job_id}, id=job_id)
        command = [*dtq_command(), "worker", "--plugins", "test_only", "--mode", "thread"]
        # The victim has one slot, so the only job it holds is "long" (the first
        # queued), and a short lease, so that job comes back fast. The others have
        # a long lease: a loaded machine must not expire a live lease (a second run).
        victim = subprocess.Popen(
            [*command, "--lease", "1", "-c", "1"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: (j := queue.get("long")) is not None and j.status is JobStatus.RUNNING)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        others = [*command, "--lease", "10", "-c", "2"]
        workers = [
            subprocess.Popen(others, env=env, cwd=tmp_path, stderr=subprocess.DEVNULL) for _ in range(3)
        ]
        try:
            results = [queue.result(job_id, timeout=60) for job_id in ids]
            assert results == [job_id * 2 for job_id in ids]
            assert queue.cancel("long").value in ("requested", "cancelled")
            wait_for(lambda: (j := queue.get("long")) is not None and j.status.is_final, timeout=30)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                assert worker.wait(30) == 0
        attempts = {job_id: job.attempts for job_id in ids if (job := queue.get(job_id)) is not None}
        assert attempts == dict.fromkeys(ids, 1)  # each ran once
        long = queue.get("long")
        assert long is not None and long.lost_leases == 1  # the killed worker's lease was recovered


def _open_together(path: str, start: Any, answers: Any) -> None:
    start.wait()
    try:
        SqliteEngine(path).ping()
        answers.put("ok")
    except Exception as exc:  # reported to the test, which names it
        answers.put(f"{type(exc).__name__}: {exc}")


def test_processes_that_open_a_new_file_together_all_open_it(tmp_path: Path) -> None:
    # Switching a file to WAL needs it alone, and SQLite answers "database is locked" at
    # once, without its busy timeout, to a second process switching it too: one of six
    # workers started together on a new file failed about one time in twenty.
    context = multiprocessing.get_context("fork")
    answers = []
    for round_ in range(12):
        start, told = context.Barrier(6), context.Queue()
        path = str(tmp_path / f"new-{round_}.db")
        processes = [context.Process(target=_open_together, args=(path, start, told)) for _ in range(6)]
        for process in processes:
            process.start()
        answers += [told.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(10)
    assert [answer for answer in answers if answer != "ok"] == []
