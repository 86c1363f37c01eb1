"""Take the README's screenshots of the dashboard: docs/dashboard-*.png.

Starts a private redis-server on a free loopback port, fills a namespace with
jobs in every state (an hour of per-minute outcome counts, dead and failed
jobs, waiting and scheduled ones, a worker running two jobs with progress),
serves the dashboard on another free port, logs in, and photographs the main
pages with headless Chromium (Debian's ``chromium`` package, driven by
Playwright). Needs ``redis-server`` and ``/usr/bin/chromium`` and the test and
dashboard extras::

    python3 scripts/screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import math
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from playwright.sync_api import Page, sync_playwright

from dtq_core import JobStatus, Queue, Worker
from dtq_core.dashboard import Dashboard
from dtq_core.dashboard.server import serving_in_thread
from dtq_core.engines.redis import Keys

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NAMESPACE = "shop"
TOKEN = secrets.token_urlsafe(32)
PAGES = {
    "overview": "/",
    "jobs": "/jobs?status=dead",
    "job": "/job?id=resize-photo-1042",
    "workers": "/workers",
}


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port, without persistence; yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            client.close()
            process.terminate()
            process.wait(10)


def seed_history(url: str) -> None:
    """An hour of per-minute outcome counts (the ``P:rate:<minute>`` hashes of the data model)."""
    keys = Keys(namespace=NAMESPACE)
    client = redis.Redis.from_url(url)
    now_minute = int(time.time() // 60)
    for ago in range(1, 60):
        wave = 30 + 22 * math.sin(ago / 7) + (ago * 7 % 11)
        counts = {
            "test_only|succeeded": int(wave),
            "test_only|failed": 3 if ago % 9 == 0 else 0,
            "test_only|dead": 1 if ago % 13 == 0 else 0,
            "test_only_async|succeeded": int(wave / 3),
        }
        key = keys.rate(now_minute - ago)
        client.hset(key, mapping={field: n for field, n in counts.items() if n})
        client.expire(key, 7200)
    client.close()


def seed_jobs(queue: Queue, url: str) -> Worker:
    """Jobs in every state; return the worker left running two of them."""
    for n in range(3):
        queue.enqueue("test_only", {"action": "echo", "order": 5000 + n}, id=f"send-receipt-{5000 + n}")
    queue.enqueue(
        "test_only",
        {"action": "fail", "message": "image service answered 503 <Service Unavailable>"},
        id="resize-photo-1042",
        max_retries=2,
        retry_backoff_s=0.01,
    )
    queue.enqueue(
        "test_only", {"action": "fail", "message": "timeout"}, id="resize-photo-1043", max_retries=1
    )
    queue.enqueue("test_only", {"action": "permanent", "message": "no such user 77"}, id="welcome-mail-77")
    burst = Worker(["test_only"], url, namespace=NAMESPACE, mode="thread", poll_s=0.05)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(queue.dead()) < 2:
        burst.get_jobs()
        time.sleep(0.05)
    burst.close()
    worker = Worker(
        ["test_only"], url, namespace=NAMESPACE, mode="thread", concurrency=2, poll_s=0.2, grace_s=0.5
    )
    threading.Thread(target=worker.work, name="screenshot-worker", daemon=True).start()
    for n in (1, 2):
        data = {"action": "progress", "steps": 400, "interval": 0.5}
        queue.enqueue("test_only", data, id=f"nightly-report-{n}", priority=10)
    while len(queue.browse(JobStatus.RUNNING, "test_only")) < 2:
        time.sleep(0.05)
    for n in range(6):
        text = {"text": f"order {6000 + n}", "action": "duplicate_text"}
        queue.enqueue("test_only", text, id=f"invoice-{6000 + n}", priority=n % 3)
    for n, delay in enumerate((300, 900, 3600)):
        queue.enqueue("test_only", {"action": "echo"}, id=f"reminder-{n}", delay_s=delay)
    for n in range(2):
        queue.enqueue("test_only_async", {"seconds": 0}, id=f"webhook-{n}")
    return worker


def photograph(page: Page, base_url: str, out: Path) -> None:
    """Log in, then save a full-page PNG of each page in :data:`PAGES`."""
    page.goto(f"{base_url}/login")
    page.fill("input[name=token]", TOKEN)
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"{base_url}/")
    for name, path in PAGES.items():
        page.goto(base_url + path)
        page.wait_for_timeout(2600 if name == "overview" else 600)  # the chart, the live status
        target = out / f"dashboard-{name}.png"
        page.screenshot(path=str(target), full_page=True)
        print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")


def main() -> None:
    """Take the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    out = parser.parse_args().out
    with private_redis() as url:
        seed_history(url)
        with Queue(None, url, namespace=NAMESPACE) as queue:
            worker = seed_jobs(queue, url)
            app = Dashboard(queue, token=TOKEN, allowed_hosts=["127.0.0.1"]).app()
            try:
                with serving_in_thread(app) as base_url, sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    page = browser.new_page(viewport={"width": 1280, "height": 800})
                    photograph(page, base_url, out)
                    browser.close()
            finally:
                worker.stop()
                worker.close()


if __name__ == "__main__":
    main()
