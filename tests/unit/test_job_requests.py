"""A job's own mistakes, and errors in what it asks of its worker, fail that job as in thread
mode: never its process's death (a lost lease, run again, buried as dead), never a spoiled record."""

from __future__ import annotations

import uuid

import pytest
from dtqtest import FakeSite, unique_module

from dtq_core import JobStatus, Queue, Worker

SOURCE = """
from dtq_core import DuplicateJob, Plugin

class Unprintable(Exception):
    def __str__(self):
        raise TypeError("no str for you")

class Misuse(Plugin):
    def validate(self, job):
        if job.data.get("what") == "picky":
            raise ValueError("misuse refuses picky jobs")  # not a ValidationError: as some plugins do

    def process(self, job, caller):
        what = job.data["what"]
        if what == "fraction":
            caller.progress("half")
        elif what == "nan":
            caller.progress(float("nan"))
        elif what == "refused":
            try:
                caller.enqueue("misuse", {"what": "picky"})
            except ValueError as exc:  # its class kept across the pipe, in either mode
                return {"refused": str(exc)}
        elif what == "surrogate":
            caller.progress(0.5, "bad \\ud800 text")
        elif what == "unprintable":
            raise Unprintable()
        elif what == "twice":
            caller.enqueue("misuse", {"what": "noop"}, id=job.id + "-kid")
            try:
                caller.enqueue("misuse", {"what": "other"}, id=job.id + "-kid")
            except DuplicateJob as exc:  # a class of its own in either mode
                return {"duplicate": exc.job_id}
        return "ran"
"""


WHATS = ("fraction", "surrogate", "unprintable", "twice", "nan", "refused")


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_job_that_misuses_its_caller_fails_once_with_its_own_error(fake_site: FakeSite, mode: str) -> None:
    module = unique_module("misuse")
    fake_site.add("dtq-plugin-misuse", "1.0", {"misuse": f"{module}:Misuse"}, {module: SOURCE})
    url = f"memory://{uuid.uuid4().hex}"
    with Queue(["misuse"], url) as queue:
        for what in WHATS:
            queue.enqueue("misuse", {"what": what}, id=what)
        worker = Worker(["misuse"], url, mode=mode, lease_s=5)
        try:
            worker.get_jobs()
        finally:
            worker.close()
        jobs = {what: queue.get(what) for what in WHATS}
    ended = {what: (job.status, job.attempts, job.lost_leases) for what, job in jobs.items() if job}
    assert ended == {
        "fraction": (JobStatus.FAILED, 1, 0),
        "surrogate": (JobStatus.FAILED, 1, 0),  # its record still reads
        "unprintable": (JobStatus.FAILED, 1, 0),
        "twice": (JobStatus.SUCCEEDED, 1, 0),
        "nan": (JobStatus.FAILED, 1, 0),  # its record still reads (JSON has no NaN)
        "refused": (JobStatus.SUCCEEDED, 1, 0),
    }
    errors = {what: job.error for what, job in jobs.items() if job and job.error}
    assert (
        errors["fraction"].type == "TypeError" and "takes a number from 0 to 1" in errors["fraction"].message
    )
    assert errors["surrogate"].type == "ValueError" and "not valid Unicode" in errors["surrogate"].message
    assert errors["unprintable"].type == "Unprintable"
    assert errors["unprintable"].message == "<str() of the exception failed: TypeError>"
    assert jobs["twice"] is not None and jobs["twice"].result == {"duplicate": "twice-kid"}
    assert errors["nan"].type == "ValueError" and "must be a finite number" in errors["nan"].message
    assert jobs["refused"] is not None and jobs["refused"].result == {"refused": "misuse refuses picky jobs"}
