"""Fixtures of the dashboard tests: a queue on the session's private Redis, the app, a live server.

``client`` drives the app over HTTP in process (Starlette's TestClient);
``live_url`` serves it with uvicorn on a free loopback port for the browser.
Jobs are put in each state with the engine itself, so no test waits on a
worker unless it needs one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from dashtest import TOKEN
from starlette.testclient import TestClient

from dtq_core import Job, Queue, Worker
from dtq_core.dashboard import Dashboard
from dtq_core.dashboard.server import serving_in_thread


@pytest.fixture
def dash_queue(redis_url: str, namespace: str) -> Iterator[Queue]:
    """A queue on the private Redis, in this test's namespace, allowing every installed plugin."""
    with Queue(None, redis_url, namespace=namespace) as queue:
        yield queue


@pytest.fixture
def dashboard(dash_queue: Queue) -> Dashboard:
    """The dashboard with actions enabled, refreshing its live parts quickly."""
    return Dashboard(dash_queue, token=TOKEN, allowed_hosts=["testserver", "127.0.0.1"], poll_s=0.3)


@pytest.fixture
def client(dashboard: Dashboard) -> Iterator[TestClient]:
    """HTTP to the app in process; no redirects followed, so tests see them."""
    with TestClient(dashboard.app(), follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def live_url(dashboard: Dashboard) -> Iterator[str]:
    """The dashboard served by uvicorn on a free loopback port: its base URL."""
    with serving_in_thread(dashboard.app()) as url:
        yield url


@pytest.fixture
def run_jobs(redis_url: str, namespace: str) -> Iterator[Callable[[], list[Job]]]:
    """``run_jobs()``: process every test_only job queued now in a thread-mode worker."""
    worker = Worker(["test_only"], redis_url, namespace=namespace, mode="thread", poll_s=0.05)
    yield worker.get_jobs
    worker.close()
