"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright.

The browser is the system's ``/usr/bin/chromium``; Playwright's own browser
download is never used. ``.ci/run`` installs it when missing, so a missing
browser fails these tests rather than skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from dashtest import TOKEN, make_dead
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from dtq_core import Job, JobStatus, Queue
from dtq_core.testing import wait_for

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
RunJobs = Callable[[], list[Job]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module's tests."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, live_url: str) -> Iterator[Page]:
    """A fresh browser context (no cookies) and page; fails the test on any script error (CSP included).

    It asks for ``live_url`` so that the server outlives the page's last refresh.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda message: errors.append(message.text) if _script_error(message) else None)
    yield opened
    context.close()
    assert errors == [], f"the page reported errors: {errors}"


def _script_error(message: ConsoleMessage) -> bool:
    """An error the page's script logged (refused requests, which some tests make on purpose, aside)."""
    return message.type == "error" and not message.text.startswith("Failed to load resource")


def log_in(page: Page, live_url: str) -> None:
    page.goto(f"{live_url}/login")
    page.fill("input[name=token]", TOKEN)
    page.click("form.login button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text("logged in")


def cell(page: Page, queue: str, column: str) -> str:
    return page.locator(f'tr[data-queue="{queue}"] td[data-col="{column}"]').inner_text().strip()


def test_overview_shows_the_right_counts_and_draws_the_chart(
    page: Page, live_url: str, dash_queue: Queue, run_jobs: RunJobs
) -> None:
    for n in range(4):
        dash_queue.enqueue("test_only", {"action": "echo"}, id=f"ok-{n}")
    dash_queue.enqueue("test_only", {"action": "fail"}, id="bad")
    run_jobs()
    make_dead(dash_queue, "dead-1")
    for n in range(3):
        dash_queue.enqueue("test_only", {"action": "echo"}, id=f"waiting-{n}")
    dash_queue.enqueue("test_only", {"action": "echo"}, id="later", delay_s=600)

    page.goto(live_url)
    counts = {
        col: cell(page, "test_only", col) for col in ("waiting", "scheduled", "running", "failed", "dead")
    }
    assert counts == {"waiting": "3", "scheduled": "1", "running": "0", "failed": "1", "dead": "1"}
    assert page.locator("#total-dead").inner_text() == "1"
    chart = page.locator("canvas#chart")
    expect(chart).to_have_attribute("data-points", "60")
    assert (chart.get_attribute("data-finished"), chart.get_attribute("data-failures")) == ("6", "2")
    painted = chart.evaluate(
        """canvas => {
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let count = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) count++;
            return count;
        }"""
    )
    assert painted > 1000, "the chart drew next to nothing"


def test_the_overview_updates_live_without_reloading(page: Page, live_url: str, dash_queue: Queue) -> None:
    dash_queue.enqueue("test_only", {"action": "echo"}, id="first")
    page.goto(live_url)
    assert cell(page, "test_only", "waiting") == "1"
    page.evaluate("window.notReloaded = true")
    for n in range(4):
        dash_queue.enqueue("test_only", {"action": "echo"}, id=f"more-{n}")
    expect(page.locator('tr[data-queue="test_only"] td[data-col="waiting"]')).to_have_text("5")
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#live-status")).to_have_text("live")


def test_a_requeue_click_moves_a_dead_job_back_to_waiting(
    page: Page, live_url: str, dash_queue: Queue
) -> None:
    make_dead(dash_queue, "dead-1")
    log_in(page, live_url)
    page.goto(f"{live_url}/jobs?status=dead")
    row = page.locator('tr[data-job-id="dead-1"]')
    row.locator('button[data-action="requeue"]').click()
    expect(page.locator(".flash.ok")).to_have_text("job dead-1 requeued")
    job = dash_queue.get("dead-1")
    assert job is not None and job.status is JobStatus.QUEUED
    expect(page.locator('tr[data-job-id="dead-1"]')).to_have_count(0)
    page.goto(live_url)
    assert cell(page, "test_only", "waiting") == "1"


def test_delete_all_dead_asks_first(page: Page, live_url: str, dash_queue: Queue) -> None:
    make_dead(dash_queue, "dead-1")
    log_in(page, live_url)
    page.goto(f"{live_url}/jobs?status=dead")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator('button[data-action="purge"]').click()
    assert dash_queue.get("dead-1") is not None
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('button[data-action="purge"]').click()
    expect(page.locator(".flash.ok")).to_have_text("deleted 1 dead job(s)")
    assert dash_queue.get("dead-1") is None


def test_an_action_without_the_token_is_refused(page: Page, live_url: str, dash_queue: Queue) -> None:
    make_dead(dash_queue, "dead-1")
    page.goto(f"{live_url}/jobs?status=dead")
    expect(page.locator('tr[data-job-id="dead-1"]')).to_be_visible()
    expect(page.locator('button[data-action="requeue"]')).to_have_count(0)
    expect(page.locator("#login-link")).to_be_visible()
    status = page.evaluate(
        """async () => (await fetch("/act/requeue", {
            method: "POST",
            headers: {"Content-Type": "application/x-www-form-urlencoded"},
            body: "id=dead-1",
        })).status"""
    )
    assert status == 401
    log_in(page, live_url)
    forged = page.evaluate(
        """async () => (await fetch("/act/requeue", {
            method: "POST",
            headers: {"Content-Type": "application/x-www-form-urlencoded"},
            body: "id=dead-1&csrf=not-the-token",
        })).status"""
    )
    assert forged == 403
    job = dash_queue.get("dead-1")
    assert job is not None and job.status is JobStatus.DEAD


def test_a_job_whose_data_holds_script_is_shown_as_text(page: Page, live_url: str, dash_queue: Queue) -> None:
    evil = "<script>window.injected = 1</script><img src=x onerror=window.injected=2>"
    make_dead(dash_queue, "evil", {"action": "echo", "note": evil})
    log_in(page, live_url)
    page.goto(f"{live_url}/job?id=evil")
    expect(page.locator("#job-data")).to_contain_text(evil)
    page.goto(f"{live_url}/jobs?status=dead")
    expect(page.locator('tr[data-job-id="evil"]')).to_be_visible()
    page.wait_for_timeout(800)  # a live refresh or two swap the list in again
    assert page.evaluate("typeof window.injected") == "undefined"
    assert page.locator("#job-data img, #jobs img, #jobs script").count() == 0


def test_the_job_page_follows_a_running_job_to_its_end(
    page: Page, live_url: str, dash_queue: Queue, run_jobs: RunJobs
) -> None:
    dash_queue.enqueue("test_only", {"text": "ab", "action": "duplicate_text"}, id="j1")
    page.goto(f"{live_url}/job?id=j1")
    expect(page.locator("#job-status")).to_have_text("queued")
    run_jobs()
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#job-result")).to_have_text('"abab"')
    wait_for(lambda: page.locator("#timeline [data-event]").count() == 3)


def test_the_search_box_opens_a_job_and_workers_and_plugins_pages_show(
    page: Page, live_url: str, dash_queue: Queue
) -> None:
    dash_queue.enqueue("test_only", {"action": "echo"}, id="find me")
    info = {"host": "web-3", "pid": "4121", "plugins": "test_only", "in_hand": "find me"}
    dash_queue.engine.heartbeat("web-3:4121:abc", info, ttl_s=30)
    page.goto(live_url)
    page.fill("input[name=id]", "find me")
    page.press("input[name=id]", "Enter")
    expect(page.locator("#job-id")).to_have_text("find me")
    page.click("nav >> text=Workers")
    expect(page.locator('tr[data-worker-id="web-3:4121:abc"] td[data-col="in-hand"]')).to_have_text("find me")
    page.click("nav >> text=Plugins")
    expect(page.locator('tr[data-plugin="test_only"]')).to_contain_text("dtq-plugins-testonly")
