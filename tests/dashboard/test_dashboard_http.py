"""The dashboard over HTTP against a real Redis: pages, the JSON API, actions and their protection."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from dashtest import TOKEN, make_dead, make_running
from starlette.testclient import TestClient

from dtq_core import AppendOutcome, ConfigError, Engine, Job, JobStatus, Queue, Worker
from dtq_core.caller import Control
from dtq_core.dashboard import Dashboard, security
from dtq_core.dashboard.data import MERGED_DEPTH
from dtq_core.dashboard.security import local_path
from dtq_core.dashboard.server import allowed_hosts_for
from dtq_core.engines.memory import MemoryEngine
from dtq_core.job import encode_payload

RunJobs = Callable[[], list[Job]]
FORM = {"content-type": "application/x-www-form-urlencoded"}


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def login(client: TestClient) -> str:
    """Log in through the form as a browser would; return the session's CSRF token."""
    form = client.get("/login")
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    done = client.post("/login", data={"token": TOKEN, "login_nonce": nonce.group(1), "next": "/jobs"})
    assert done.status_code == 303 and done.headers["location"] == "/jobs"
    cookie = done.headers["set-cookie"]
    assert "dtq_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/jobs").text)
    assert csrf is not None
    return csrf.group(1)


def status_of(queue: Queue, job_id: str) -> JobStatus | None:
    job = queue.get(job_id)
    return None if job is None else job.status


# --- reading -------------------------------------------------------------------------


def test_every_page_renders_with_security_headers(client: TestClient) -> None:
    for path in ("/", "/jobs", "/jobs?status=dead", "/workers", "/plugins", "/login", "/api/overview"):
        response = client.get(path)
        assert response.status_code == 200, path
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert (headers["x-frame-options"], headers["x-content-type-options"]) == ("DENY", "nosniff")
        assert headers["cache-control"] == "no-store"
    script = client.get("/static/dashboard.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "max-age" in script.headers["cache-control"]


def test_overview_counts_every_state_of_every_queue(
    client: TestClient, dash_queue: Queue, run_jobs: RunJobs
) -> None:
    make_dead(dash_queue, "dead-1")
    dash_queue.enqueue("test_only", {"action": "fail"}, id="failed-1")
    dash_queue.enqueue("test_only", {"action": "echo"}, id="done-1")
    run_jobs()
    make_running(dash_queue, "running-1")
    for n in range(3):
        dash_queue.enqueue("test_only", {"action": "echo"}, id=f"waiting-{n}")
    dash_queue.enqueue("test_only", {"action": "echo"}, id="later", delay_s=600)
    dash_queue.enqueue("test_only_async", {}, id="async-1")

    overview = client.get("/api/overview").json()
    queues = {q["plugin"]: q for q in overview["queues"]}
    test_only = queues["test_only"]
    assert [test_only[k] for k in ("waiting", "scheduled", "running", "succeeded", "failed", "dead")] == [
        3,
        1,
        1,
        1,
        1,
        1,
    ]
    assert queues["test_only_async"]["waiting"] == 1
    assert (overview["dead"], overview["failed"], overview["workers"]) == (1, 1, 0)
    assert sum(point["finished"] for point in overview["chart"]) == 3
    assert sum(point["failures"] for point in overview["chart"]) == 2
    assert len(overview["chart"]) == 60
    page = client.get("/").text
    row = page.split('data-queue="test_only"')[1].split("</tr>")[0]
    cells = dict(re.findall(r'data-col="(\w+)"><a [^>]*>(\d+)</a>', row))
    assert cells == {"waiting": "3", "scheduled": "1", "running": "1", "failed": "1", "dead": "1"}
    assert 'id="total-dead">1<' in page and "unserved" in page


def test_jobs_are_browsed_by_queue_and_status_a_page_at_a_time(client: TestClient, dash_queue: Queue) -> None:
    for n in range(53):
        dash_queue.enqueue("test_only", {"action": "echo"}, id=f"job-{n:02d}")
    dash_queue.enqueue("test_only_async", {}, id="async-job")
    first = client.get("/api/jobs?queue=test_only&status=queued").json()
    assert [j["id"] for j in first["jobs"]][:2] == ["job-00", "job-01"] and len(first["jobs"]) == 50
    assert first["has_more"] is True
    rest = client.get("/api/jobs?queue=test_only&status=queued&offset=50").json()
    assert [j["id"] for j in rest["jobs"]] == ["job-50", "job-51", "job-52"] and not rest["has_more"]
    everything = client.get("/api/jobs?status=queued&offset=50").json()
    assert [j["id"] for j in everything["jobs"]] == ["job-50", "job-51", "job-52", "async-job"]
    page = client.get("/jobs?queue=test_only&status=queued&offset=50").text
    assert 'data-job-id="job-51"' in page and 'data-job-id="job-01"' not in page
    assert "offset=0" in page  # a link back to the first page
    assert client.get("/jobs?status=nonsense").status_code == 400
    assert client.get("/api/jobs?status=succeeded").status_code == 400
    assert client.get("/jobs?offset=-1").status_code == 400


def test_dead_and_failed_jobs_are_listed_and_filtered_by_queue(
    client: TestClient, dash_queue: Queue, run_jobs: RunJobs
) -> None:
    make_dead(dash_queue, "dead-1")
    dash_queue.enqueue("test_only", {"action": "fail", "message": "boom"}, id="failed-1")
    run_jobs()
    dead = client.get("/api/jobs?status=dead").json()
    assert [j["id"] for j in dead["jobs"]] == ["dead-1"]
    failed = client.get("/api/jobs?status=failed&queue=test_only").json()
    assert [j["id"] for j in failed["jobs"]] == ["failed-1"] and "newest" in failed["note"]
    assert client.get("/api/jobs?status=failed&queue=other").json()["jobs"] == []
    page = client.get("/jobs?status=failed").text
    assert "RuntimeError</span>: boom" in page


def test_job_page_shows_data_result_error_traceback_attempts_and_timeline(
    client: TestClient, dash_queue: Queue, run_jobs: RunJobs
) -> None:
    dash_queue.enqueue("test_only", {"action": "fail", "message": "disk full"}, id="broken")
    dash_queue.enqueue("test_only", {"text": "ab", "action": "duplicate_text"}, id="fine")
    run_jobs()
    page = client.get("/job", params={"id": "broken"}).text
    assert "RuntimeError</span>: disk full" in page
    assert "Traceback (most recent call last)" in page
    assert re.search(r'id="job-attempts">1<', page)
    timeline = page.split('id="timeline"')[1]
    assert re.findall(r'data-event="(\w+)"', timeline) == ["appended", "started", "failed"]
    assert "&#34;message&#34;: &#34;disk full&#34;" in page  # the data, escaped
    fine = client.get("/job", params={"id": "fine"}).text
    assert 'id="job-result">&#34;abab&#34;</pre>' in fine
    api = client.get("/api/job", params={"id": "broken"}).json()
    assert api["status"] == "failed" and api["error"]["message"] == "disk full"
    assert [e["type"] for e in api["events"]] == ["appended", "started", "failed"]


def test_live_parts_are_served_alone_and_a_final_job_stops_refreshing(
    client: TestClient, dash_queue: Queue, run_jobs: RunJobs
) -> None:
    dash_queue.enqueue("test_only", {"action": "echo"}, id="j1")
    fragment = client.get("/?fragment=1").text
    assert "<html" not in fragment and 'data-queue="test_only"' in fragment
    assert "data-live-stop" not in client.get("/job?id=j1&fragment=1").text
    run_jobs()
    assert "data-live-stop" in client.get("/job?id=j1&fragment=1").text
    assert 'data-live="/jobs?status=dead&amp;fragment=1"' in client.get("/jobs?status=dead").text


def test_unknown_job_is_a_404_and_an_empty_search_goes_to_the_list(client: TestClient) -> None:
    missing = client.get("/job", params={"id": "nope"})
    assert missing.status_code == 404 and "no job with id" in missing.text
    assert client.get("/api/job?id=nope").status_code == 404
    assert client.get("/job?id=").headers["location"] == "/jobs"


def test_workers_and_plugins_pages_list_what_serves_what(
    client: TestClient, dash_queue: Queue, redis_url: str, namespace: str
) -> None:
    info = {"host": "web-3", "pid": "4121", "plugins": "test_only", "concurrency": "2", "mode": "thread"}
    dash_queue.engine.heartbeat("web-3:4121:abc", {**info, "in_hand": "j7,j8"}, ttl_s=30)
    [worker] = client.get("/api/workers").json()
    assert (worker["host"], worker["pid"], worker["concurrency"], worker["plugins"], worker["in_hand"]) == (
        "web-3",
        4121,  # numbers, though the registry keeps text
        2,
        ["test_only"],
        ["j7", "j8"],
    )
    assert worker["heartbeat_age_s"] is not None and worker["heartbeat_age_s"] < 5
    page = client.get("/workers").text
    assert 'href="/job?id=j7"' in page and "s ago" in page
    plugins = {row["name"]: row for row in client.get("/api/plugins").json()}
    assert plugins["test_only"]["distribution"] == "dtq-plugins-testonly"
    assert plugins["test_only"]["status"] == "ok" and plugins["test_only"]["served_by"] == 1
    assert "dtq-plugins-testonly" in client.get("/plugins").text


def test_job_data_cannot_inject_markup(client: TestClient, dash_queue: Queue) -> None:
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    make_dead(dash_queue, "<b>id</b>", {"action": "echo", "note": evil})
    pages = [
        client.get("/job", params={"id": "<b>id</b>"}).text,
        client.get("/jobs?status=dead").text,
        client.get("/jobs?status=dead&fragment=1").text,
    ]
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>id</b>" not in page
        assert "&lt;b&gt;id&lt;/b&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert 'href="/job?id=%3Cb%3Eid%3C/b%3E"' in pages[1]


def test_a_bad_host_header_is_refused(client: TestClient) -> None:
    response = client.get("/", headers={"host": "attacker.example"})
    assert response.status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_bound_to_loopback_only_loopback_names_are_answered(dash_queue: Queue, host: str) -> None:
    # Bound to ::1 it answered any Host (DNS rebinding): only the IPv4 names were loopback.
    allowed = allowed_hosts_for(host)
    assert allowed == ["127.0.0.1", "localhost", "[::1]"]
    with TestClient(
        Dashboard(dash_queue, allowed_hosts=allowed).app(), base_url="http://[::1]:8000"
    ) as client:
        assert client.get("/api/overview").status_code == 200
        assert client.get("/api/overview", headers={"host": "evil.example"}).status_code == 400
    assert allowed_hosts_for("0.0.0.0") == ["*"]  # bound to every address: any name


def test_the_list_of_all_queues_together_stops_at_its_depth(client: TestClient) -> None:
    # Each page of it reads offset + 50 jobs of every queue: offset=1000000 made any
    # visitor have the server read every job. One queue's list goes as deep as it likes.
    deep = client.get(f"/api/jobs?status=queued&offset={MERGED_DEPTH}")
    assert deep.status_code == 400 and "pick a queue" in deep.json()["error"]
    assert client.get(f"/api/jobs?status=queued&queue=test_only&offset={MERGED_DEPTH}").status_code == 200
    assert client.get(f"/api/jobs?status=queued&offset={MERGED_DEPTH - 51}").status_code == 200


# --- acting --------------------------------------------------------------------------


def test_an_action_without_the_token_is_refused_and_changes_nothing(
    client: TestClient, dash_queue: Queue
) -> None:
    make_dead(dash_queue, "d1")
    anonymous = client.post("/act/requeue", data={"id": "d1"})
    assert anonymous.status_code == 401 and "log in" in anonymous.text
    wrong = client.post("/act/requeue", data={"id": "d1"}, headers=bearer("not-the-token-at-all"))
    assert wrong.status_code == 401 and wrong.json() == {"ok": False, "error": "wrong token"}
    assert client.post("/act/purge", headers={"accept": "application/json"}).status_code == 401
    assert status_of(dash_queue, "d1") is JobStatus.DEAD


def test_a_logged_in_action_needs_the_csrf_token_and_the_same_site(
    client: TestClient, dash_queue: Queue
) -> None:
    make_dead(dash_queue, "d1")
    csrf = login(client)
    assert client.post("/act/requeue", data={"id": "d1"}).status_code == 403
    assert client.post("/act/requeue", data={"id": "d1", "csrf": "guess"}).status_code == 403
    forged = [{"origin": "https://attacker.example"}, {"sec-fetch-site": "cross-site"}]
    for headers in forged:
        response = client.post("/act/requeue", data={"id": "d1", "csrf": csrf}, headers=headers)
        assert response.status_code == 403 and "another" in response.text
    assert status_of(dash_queue, "d1") is JobStatus.DEAD
    same_site = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}
    done = client.post("/act/requeue", data={"id": "d1", "csrf": csrf, "next": "/jobs"}, headers=same_site)
    assert done.status_code == 303 and done.headers["location"] == "/jobs"
    assert status_of(dash_queue, "d1") is JobStatus.QUEUED
    assert "job d1 requeued" in client.get("/jobs").text  # the flash message, shown once
    assert "job d1 requeued" not in client.get("/jobs").text


def test_every_action_through_the_api_with_the_bearer_token(
    client: TestClient, dash_queue: Queue, run_jobs: RunJobs
) -> None:
    def act(action: str, **form: str) -> tuple[int, dict[str, object]]:
        response = client.post(f"/act/{action}", data=form, headers=bearer())
        return response.status_code, response.json()

    dash_queue.enqueue("test_only", {"action": "fail"}, id="f1")
    run_jobs()
    make_dead(dash_queue, "d1")
    make_dead(dash_queue, "d2")
    make_dead(dash_queue, "d3")
    dash_queue.enqueue("test_only", {"action": "echo"}, id="q1")
    assert act("cancel", id="q1") == (200, {"ok": True, "message": "job q1: cancelled"})
    assert act("requeue", id="f1")[0] == 200 and status_of(dash_queue, "f1") is JobStatus.QUEUED
    assert act("delete", id="d1") == (200, {"ok": True, "message": "job d1 deleted"})
    assert status_of(dash_queue, "d1") is None
    code, body = act("delete", id="f1")
    assert code == 404 and "only final jobs can be deleted" in str(body["message"])
    assert act("requeue-all", status="dead") == (200, {"ok": True, "message": "requeued 2 dead job(s)"})
    assert act("purge", status="dead") == (200, {"ok": True, "message": "deleted 0 dead job(s)"})
    assert {status_of(dash_queue, job_id) for job_id in ("d2", "d3")} == {JobStatus.QUEUED}
    assert act("purge", status="running")[0] == 400
    assert act("requeue")[0] == 400
    assert act("explode", id="x")[0] == 404
    assert act("cancel", id="missing")[0] == 404


def test_login_refuses_a_wrong_token_a_missing_nonce_and_then_everyone_for_a_while(
    dash_queue: Queue,
) -> None:
    dashboard = Dashboard(dash_queue, token=TOKEN, allowed_hosts=["testserver"])
    dashboard.throttle.failures = 2
    with TestClient(dashboard.app(), follow_redirects=False) as client:
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', client.get("/login").text)
        assert nonce is not None
        no_nonce = client.post("/login", data={"token": TOKEN})
        assert no_nonce.status_code == 403 and "login form expired" in no_nonce.text
        for _ in range(2):
            response = client.post("/login", data={"token": "wrong" * 5, "login_nonce": nonce.group(1)})
            assert response.status_code == 401 and "wrong token" in response.text
            nonce = re.search(r'name="login_nonce" value="([^"]+)"', response.text)
            assert nonce is not None
        blocked = client.post("/login", data={"token": TOKEN, "login_nonce": nonce.group(1)})
        assert blocked.status_code == 429


def test_wrong_bearer_tokens_count_against_the_same_limit_as_logins(dash_queue: Queue) -> None:
    # A bearer token was compared with no count and no delay: guesses without limit.
    dashboard = Dashboard(dash_queue, token=TOKEN, allowed_hosts=["testserver"])
    dashboard.throttle.failures = 2
    make_dead(dash_queue, "d1")
    with TestClient(dashboard.app(), follow_redirects=False) as client:
        for _ in range(2):
            wrong = client.post("/act/requeue", data={"id": "d1"}, headers=bearer("wrong" * 5))
            assert wrong.status_code == 401
        blocked = client.post("/act/requeue", data={"id": "d1"}, headers=bearer())
        assert blocked.status_code == 429 and "too many wrong tokens" in blocked.json()["error"]
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', client.get("/login").text)
        assert nonce is not None  # the form's login is blocked by the same count
        assert client.post("/login", data={"token": TOKEN, "login_nonce": nonce.group(1)}).status_code == 429
    assert status_of(dash_queue, "d1") is JobStatus.DEAD


def test_logout_ends_the_session(client: TestClient, dash_queue: Queue) -> None:
    make_dead(dash_queue, "d1")
    csrf = login(client)
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    refused = client.post("/act/requeue", data={"id": "d1", "csrf": csrf})
    assert refused.status_code == 401


def test_without_a_token_the_dashboard_is_read_only(dash_queue: Queue) -> None:
    make_dead(dash_queue, "d1")
    dashboard = Dashboard(dash_queue, token=None, allowed_hosts=["testserver"])
    with TestClient(dashboard.app(), follow_redirects=False) as client:
        page = client.get("/jobs?status=dead").text
        assert 'id="read-only"' in page and "dashboard_token" in page and 'data-action="requeue"' not in page
        refused = client.post("/act/requeue", data={"id": "d1"}, headers=bearer())
        assert refused.status_code == 403 and "actions are disabled" in refused.json()["error"]
        assert client.post("/login", data={"token": TOKEN}).status_code == 403
    assert status_of(dash_queue, "d1") is JobStatus.DEAD


def test_a_short_token_is_refused_at_start(dash_queue: Queue) -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        Dashboard(dash_queue, token="short")


def test_an_unreachable_engine_is_a_503_page(redis_url: str) -> None:
    closed = "redis://127.0.0.1:1/0"
    with Queue(None, closed, engine_options={"retries": 0}) as queue:
        dashboard = Dashboard(queue, allowed_hosts=["testserver"])
        with TestClient(dashboard.app()) as client:
            page = client.get("/")
            assert page.status_code == 503 and "cannot reach Redis" in page.text
            assert client.get("/api/overview").status_code == 503


def test_redirects_only_go_to_paths_of_this_site() -> None:
    assert local_path("/jobs?status=dead") == "/jobs?status=dead"
    for target in ("//attacker.example/x", "https://attacker.example/", "jobs", "/\\attacker.example", None):
        assert local_path(target) == "/"


class _NoBrowsing(MemoryEngine):
    """An engine written before browsing existed: it keeps the contract's defaults."""

    browse = Engine.browse
    delete = Engine.delete


def test_an_engine_without_browsing_gets_a_clear_page_and_the_rest_works() -> None:
    with Queue(None, engine=_NoBrowsing()) as queue:
        queue.enqueue("test_only", {"action": "echo"}, id="j1")
        with TestClient(Dashboard(queue, token=TOKEN, allowed_hosts=["testserver"]).app()) as client:
            page = client.get("/jobs?status=queued")
            assert page.status_code == 501 and "does not implement Engine.browse" in page.text
            assert client.get("/jobs?status=dead").status_code == 200
            assert client.get("/").status_code == 200
            make_dead(queue, "d1")
            refused = client.post("/act/delete", data={"id": "d1"}, headers=bearer())
            assert refused.status_code == 501 and "cannot delete one job" in refused.json()["message"]
            assert client.post("/act/requeue", data={"id": "d1"}, headers=bearer()).status_code == 200


# --- found in session 15's review ------------------------------------------------------


def test_a_job_whose_id_begins_or_ends_with_a_space_has_its_page(
    client: TestClient, dash_queue: Queue
) -> None:
    # The page stripped the id it was given, so the list's link to such a job was a 404.
    for job_id in (" report", "report "):
        dash_queue.enqueue("test_only", {"action": "echo"}, id=job_id)
        page = client.get("/job", params={"id": job_id})
        assert page.status_code == 200 and f"Job {job_id}" in page.text
    dash_queue.enqueue("test_only", {"action": "echo"}, id="plain")
    assert client.get("/job", params={"id": "  plain\t"}).status_code == 200  # a pasted id still found


def _append(queue: Queue, plugin: str, job_id: str, **options: object) -> None:
    """A job of any queue name, appended with the engine (no plugin need be installed)."""
    job = Job(id=job_id, plugin=plugin, data={"n": 1}, priority=int(options.pop("priority", 0)))  # type: ignore[call-overload]
    assert queue.engine.append(job, encode_payload(job), **options) is AppendOutcome.CREATED  # type: ignore[arg-type]


def test_the_list_of_all_queues_merges_them_in_each_status_order(
    client: TestClient, dash_queue: Queue
) -> None:
    # The queues' lists were put one after another: a deep queue hid every other queue's jobs,
    # a priority job or one due sooner included.
    for n in range(60):
        _append(dash_queue, "a_queue", f"a-{n}")
    _append(dash_queue, "b_queue", "b-urgent", priority=10)
    _append(dash_queue, "a_queue", "a-due-30", delay_s=30)
    _append(dash_queue, "a_queue", "a-due-300", delay_s=300)
    _append(dash_queue, "b_queue", "b-due-60", delay_s=60)
    queued = client.get("/api/jobs?status=queued").json()["jobs"]
    assert [job["id"] for job in queued[:3]] == ["b-urgent", "a-0", "a-1"]
    second = client.get("/api/jobs?status=queued&offset=50").json()["jobs"]
    assert [job["id"] for job in second] == [f"a-{n}" for n in range(49, 60)]
    scheduled = client.get("/api/jobs?status=scheduled").json()["jobs"]
    assert [job["id"] for job in scheduled] == ["a-due-30", "b-due-60", "a-due-300"]


def test_a_job_id_with_a_comma_shows_whole_among_a_workers_jobs(
    client: TestClient, dash_queue: Queue, redis_url: str, namespace: str
) -> None:
    # The registry joined the ids a worker holds with commas, which an id may hold.
    worker = Worker(["test_only"], redis_url, namespace=namespace, mode="thread")
    try:
        dash_queue.enqueue("test_only", {"action": "echo"}, id="order,2024,17")
        [lease] = dash_queue.engine.fetch(["test_only"], count=1, lease_s=60, worker_id="w").leases
        worker._in_hand[(lease.job.id, lease.token)] = Control(lease)
        dash_queue.engine.heartbeat("w", worker.describe(), ttl_s=30)
    finally:
        worker.close()
    [row] = client.get("/api/workers").json()
    assert row["in_hand"] == ["order,2024,17"]
    assert 'href="/job?id=order%2C2024%2C17"' in client.get("/workers").text


def test_a_scripts_malformed_or_failed_action_is_answered_in_json_with_its_error(
    client: TestClient, dash_queue: Queue
) -> None:
    # A malformed request got the HTML error page, whatever the script asked for.
    malformed = client.post(
        "/act/requeue", content=b"id=x", headers={**bearer(), "content-type": "text/plain"}
    )
    assert malformed.status_code == 400 and malformed.headers["content-type"] == "application/json"
    assert malformed.json()["ok"] is False and "x-www-form-urlencoded" in malformed.json()["error"]
    failed = client.post("/act/cancel", data={"id": "missing"}, headers=bearer())
    assert failed.status_code == 404 and failed.json()["error"] == failed.json()["message"]


def test_a_login_block_lasts_its_whole_window_from_the_failure_that_reached_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ten wrong tokens spread over 55 s blocked logins for only about 5 s.
    now = [1000.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: now[0])
    throttle = security.LoginThrottle(failures=3, window_s=60)
    for at in (0.0, 30.0, 55.0):
        assert not throttle.blocked()
        now[0] = 1000.0 + at
        throttle.failed()
    assert throttle.blocked()
    now[0] = 1000.0 + 55 + 59  # the first wrong token is long out of the window
    assert throttle.blocked()
    now[0] = 1000.0 + 55 + 61
    assert not throttle.blocked()
    throttle.failed()  # one more, alone in its window: no block
    assert not throttle.blocked()
