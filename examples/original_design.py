"""The original design's example, end to end.

Appends the job from Distributed::Tasks::Queue's synopsis, starts a worker in
another process (``dtq worker --burst``), waits for the job's result and prints
it. Run it as often as you like: the id is fixed, so the second run finds the
job already done and prints the same result.

Uses ``$DTQ_URL`` (default ``redis://localhost:6379/0``).
"""

from __future__ import annotations

import subprocess
import sys

from dtq_core import Queue

JOB = {
    "id": "test_job_one",
    "job": {
        "plugin": "test_only",
        "data": {"text": "To be processed!", "action": "duplicate_text"},
    },
}


def main() -> None:
    with Queue(plugins=["test_only"]) as jobs_adder:
        jobs_adder.append(JOB)
        jobs_worker = subprocess.Popen(
            [sys.executable, "-m", "dtq_core", "worker", "--plugins", "test_only", "--burst"]
        )
        result = jobs_adder.result("test_job_one", timeout=60)
        jobs_worker.wait(timeout=60)
    print(result)


if __name__ == "__main__":
    main()
