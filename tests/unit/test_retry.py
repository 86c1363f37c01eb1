"""The retry policy: backoff bounds and what each ending of an attempt leads to."""

from __future__ import annotations

import math

import pytest

from dtq_core import Cancelled, ErrorInfo, Job, JobStatus, Permanent, Retry, RetryPolicy
from dtq_core.retry import Attempt, Ending, decide

JOB = Job(id="j", plugin="p", data={})
BOOM = Attempt(Ending.ERROR, error=ErrorInfo("RuntimeError", "boom"))


def attempt_number(n: int) -> Job:
    return Job(id="j", plugin="p", data={}, attempts=n)


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 10, 30])
def test_backoff_doubles_with_equal_jitter_and_is_capped(attempt: int) -> None:
    policy = RetryPolicy(max_retries=50, backoff_s=2.0, backoff_max_s=60.0)
    ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
    assert policy.delay_s(attempt, rand=lambda: 0.0) == ceiling / 2
    assert policy.delay_s(attempt, rand=lambda: 1.0) == ceiling
    assert ceiling / 2 <= policy.delay_s(attempt) <= ceiling


def test_success_records_the_result() -> None:
    outcome = decide(RetryPolicy(), JOB, Attempt(Ending.OK, result_json='"x"'))
    assert (outcome.status, outcome.result_json) == (JobStatus.SUCCEEDED, '"x"')


def test_without_retries_a_failure_is_final() -> None:
    outcome = decide(RetryPolicy(max_retries=0), attempt_number(1), BOOM)
    assert (outcome.status, outcome.error) == (JobStatus.FAILED, BOOM.error)


def test_failures_are_retried_with_backoff_until_retries_run_out() -> None:
    policy = RetryPolicy(max_retries=2, backoff_s=1.0, backoff_max_s=100.0)
    first = decide(policy, attempt_number(1), BOOM)
    second = decide(policy, attempt_number(2), BOOM)
    assert (first.status, second.status) == (JobStatus.SCHEDULED, JobStatus.SCHEDULED)
    assert 0.5 <= first.retry_in_s <= 1.0
    assert 1.0 <= second.retry_in_s <= 2.0
    last = decide(policy, attempt_number(3), BOOM)
    assert last.status is JobStatus.DEAD
    assert last.error is not None and last.error.type == "RuntimeError"
    assert "retries exhausted after 3 attempt(s) (max_retries=2)" in last.error.message


def test_plugin_chosen_retry_delay_wins_and_counts_against_max_retries() -> None:
    asked = Attempt.from_exception(Retry("later", after=42.0))
    policy = RetryPolicy(max_retries=1)
    assert decide(policy, attempt_number(1), asked).retry_in_s == 42.0
    assert decide(policy, attempt_number(2), asked).status is JobStatus.DEAD
    assert decide(RetryPolicy(max_retries=0), attempt_number(1), asked).status is JobStatus.DEAD


def test_permanent_failure_is_never_retried() -> None:
    outcome = decide(
        RetryPolicy(max_retries=5), attempt_number(1), Attempt.from_exception(Permanent("no user"))
    )
    assert outcome.status is JobStatus.FAILED
    assert outcome.error is not None and outcome.error.message == "no user"


def test_cancellation_timeout_and_unrunnable() -> None:
    policy = RetryPolicy(max_retries=1)
    assert decide(policy, JOB, Attempt.from_exception(Cancelled("stop"))).status is JobStatus.CANCELLED
    timeout = Attempt(Ending.TIMEOUT, error=ErrorInfo("JobTimeout", "too slow"))
    assert decide(policy, attempt_number(1), timeout).status is JobStatus.SCHEDULED
    unrunnable = Attempt(Ending.UNRUNNABLE, error=ErrorInfo("UnknownPlugin", "gone"))
    assert decide(policy, attempt_number(1), unrunnable).status is JobStatus.DEAD


def test_attempt_survives_a_json_round_trip() -> None:
    attempt = Attempt(Ending.RETRY, error=ErrorInfo("Retry", "x", "tb"), retry_after_s=3.0)
    assert Attempt.from_dict(attempt.to_dict()) == attempt


@pytest.mark.parametrize("after", [math.inf, math.nan, -0.5, "10", True, 1e300])
def test_a_retry_whose_wait_is_no_number_of_seconds_is_a_failed_attempt_that_says_so(after: object) -> None:
    # Taken as given, an infinite wait raised OverflowError in the engine and stopped
    # the worker's recording of outcomes.
    attempt = Attempt.from_exception(Retry("later", after=after))  # type: ignore[arg-type]
    assert attempt.ending is Ending.ERROR and attempt.retry_after_s is None
    assert attempt.error is not None and attempt.error.type == "Retry"
    assert attempt.error.message.startswith("later [Retry(after=...) must be a number of seconds from 0 up")


@pytest.mark.parametrize("after", [None, 0, 2.5, 86400])
def test_a_retry_with_a_wait_in_range_keeps_it(after: float | None) -> None:
    attempt = Attempt.from_exception(Retry(after=after))
    assert (attempt.ending, attempt.retry_after_s) == (Ending.RETRY, None if after is None else float(after))
