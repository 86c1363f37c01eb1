"""The dashboard's web application: pages, their live fragments, the JSON API and the actions.

Pages are rendered on the server (Jinja2, every value escaped). Each page's
changing part is also served alone with ``?fragment=1``; ``static/dashboard.js``
fetches it every couple of seconds and swaps it in, so the page stays live
without reloading, and works (without the live part) with script turned off.
See :mod:`.security` for who may act and how forged requests are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dtq_core.config import mask_url
from dtq_core.dashboard import data
from dtq_core.dashboard.actions import ACTIONS
from dtq_core.dashboard.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    SecurityHeaders,
    Session,
    Sessions,
    bearer_token,
    check_token,
    cross_site,
    local_path,
    matches,
)
from dtq_core.errors import (
    DtqError,
    EngineUnavailable,
    InvalidJob,
    JobNotFound,
    NotSupported,
)
from dtq_core.job import Job, JobStatus
from dtq_core.queue import Queue

#: The largest request body accepted (forms are a few hundred bytes).
MAX_BODY_BYTES = 64 * 1024
#: How often the pages fetch their live part.
DEFAULT_POLL_S = 2.0
_FORM_TYPE = "application/x-www-form-urlencoded"
_FAILED_LOGIN_DELAY_S = 0.5
_THROTTLED = "too many wrong tokens in the last minute: wait a minute and try again"
Endpoint = Callable[[Request], Awaitable[Response]]


class Dashboard:
    """The web dashboard over one queue's engine and namespace.

    Args:
        queue: what the pages read and the actions steer.
        token: the ``dashboard_token``; None disables every action.
        allowed_hosts: the ``Host`` names answered (others get 400), so a page
            elsewhere cannot reach a loopback dashboard by DNS rebinding;
            ``["*"]`` answers any.
        poll_s: how often pages fetch their live part.

    Raises:
        ConfigError: ``token`` is too short to be safe.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        token: str | None = None,
        allowed_hosts: Sequence[str] = ("*",),
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        check_token(token)
        self.queue = queue
        self.token = token or None
        self.allowed_hosts = list(allowed_hosts)
        self.poll_ms = int(poll_s * 1000)
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.templates = _environment()

    def app(self) -> Starlette:
        """The ASGI application (serve it with uvicorn, or test it with Starlette's TestClient)."""
        return Starlette(
            routes=self._routes(),
            middleware=[
                Middleware(SecurityHeaders),
                Middleware(TrustedHostMiddleware, allowed_hosts=self.allowed_hosts),
            ],
            exception_handlers={DtqError: self._error, ValueError: self._error},
            max_body_size=MAX_BODY_BYTES,
        )

    def _routes(self) -> list[BaseRoute]:
        pages: list[tuple[str, Endpoint]] = [
            ("/", self.overview),
            ("/jobs", self.jobs),
            ("/job", self.job),
            ("/workers", self.workers),
            ("/plugins", self.plugins),
            ("/api/overview", self.api_overview),
            ("/api/jobs", self.api_jobs),
            ("/api/job", self.api_job),
            ("/api/workers", self.api_workers),
            ("/api/plugins", self.api_plugins),
        ]
        return [
            *(Route(path, endpoint, methods=["GET"]) for path, endpoint in pages),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/act/{action}", self.act, methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("dtq_core.dashboard", "static")]), name="static"),
        ]

    # --- pages -------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        """Every queue's counts, the live workers, dead and failed totals, the last hour's chart."""
        found = await run_in_threadpool(data.overview, self.queue)
        totals = {
            name: sum(getattr(q, name) for q in found.stats.queues)
            for name in ("waiting", "scheduled", "running")
        }
        return self._page(
            request,
            "overview",
            title="Overview",
            overview=found,
            totals=totals,
            unserved=set(found.stats.unserved()),
            chart_json=json.dumps(found.chart),
        )

    async def jobs(self, request: Request) -> Response:
        """Jobs of one status, of one queue or all, a page at a time."""
        status, plugin, offset = _job_filters(request)
        page = await run_in_threadpool(data.job_page, self.queue, status, plugin, offset)
        stats = await run_in_threadpool(self.queue.stats)
        plugins = sorted({q.plugin for q in stats.queues} | ({plugin} if plugin else set()))
        return self._page(request, "jobs", title="Jobs", page=page, plugins=plugins, statuses=data.LISTED)

    async def job(self, request: Request) -> Response:
        """One job: data, result, error with traceback, attempts, progress and timeline."""
        given = request.query_params.get("id", "")
        if not given.strip():
            return RedirectResponse("/jobs", status_code=303)
        job_id = given.strip()
        job = await run_in_threadpool(self._found_as_given, given)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r} (never appended, or its record expired)")
        events = await run_in_threadpool(data.timeline, self.queue, job.id)
        return self._page(request, "job", title=f"Job {job.id}", job=job, events=events)

    def _found_as_given(self, given: str) -> Job | None:
        """The job with id ``given``, else with it stripped: an id pasted with spaces around it
        (or a tab, which no id holds) is found, yet an id may begin or end with a space."""
        stripped = given.strip()
        if stripped != given:
            with contextlib.suppress(InvalidJob):
                if (job := self.queue.get(given)) is not None:
                    return job
        return self.queue.get(stripped)

    async def workers(self, request: Request) -> Response:
        """The live workers: host, pid, plugins served, jobs in hand, last heartbeat."""
        rows = data.worker_rows(await run_in_threadpool(self.queue.workers))
        return self._page(request, "workers", title="Workers", workers=rows)

    async def plugins(self, request: Request) -> Response:
        """Every installed plugin: distribution, version, load status, live workers serving it."""
        rows = await run_in_threadpool(data.plugin_rows, self.queue)
        return self._page(request, "plugins", title="Plugins", plugins=rows)

    # --- the JSON API (read only; for scripts and tests) ---------------------------

    async def api_overview(self, request: Request) -> Response:
        """``dtq stats --json`` plus the live workers' number and the chart's points."""
        found = await run_in_threadpool(data.overview, self.queue)
        return JSONResponse(found.to_dict())

    async def api_jobs(self, request: Request) -> Response:
        """A page of the jobs list, as ``/jobs`` shows it."""
        status, plugin, offset = _job_filters(request)
        page = await run_in_threadpool(data.job_page, self.queue, status, plugin, offset)
        return JSONResponse(page.to_dict())

    async def api_job(self, request: Request) -> Response:
        """One job as ``dtq status --json`` gives it, with its kept events."""
        job_id = request.query_params.get("id", "")
        job = await run_in_threadpool(self.queue.get, job_id) if job_id else None
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r} (never appended, or its record expired)")
        events = await run_in_threadpool(data.timeline, self.queue, job.id)
        return JSONResponse({**job.to_dict(), "events": [event.to_dict() for event in events]})

    async def api_workers(self, request: Request) -> Response:
        """The live workers."""
        rows = data.worker_rows(await run_in_threadpool(self.queue.workers))
        return JSONResponse([row.to_dict() for row in rows])

    async def api_plugins(self, request: Request) -> Response:
        """``dtq plugins --json`` plus how many live workers serve each."""
        rows = await run_in_threadpool(data.plugin_rows, self.queue)
        return JSONResponse([row.to_dict() for row in rows])

    # --- logging in and out ----------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """The form that exchanges the token for a session cookie."""
        nonce = secrets.token_urlsafe(24)
        next_path = local_path(request.query_params.get("next"))
        response = self._page(request, "login", title="Log in", login_nonce=nonce, next_path=next_path)
        _set_cookie(request, response, LOGIN_COOKIE, nonce, path="/login", max_age=900)
        return response

    async def login(self, request: Request) -> Response:
        """Check the token; on success start a session and go back where the operator was."""
        form = await _form(request)
        next_path = local_path(form.get("next"))
        refusal = self._login_refusal(request, form)
        if refusal is not None:
            return self._refused(request, *refusal)
        if not matches(form.get("token"), self.token):
            await self._wrong_token()
            return self.login_retry(request, next_path)
        session = self.sessions.create()
        session.flash("ok", "logged in: actions are enabled")
        response = RedirectResponse(next_path, status_code=303)
        _set_cookie(request, response, SESSION_COOKIE, session.id, path="/")
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    def login_retry(self, request: Request, next_path: str) -> Response:
        """The login form again, saying the token was wrong."""
        nonce = secrets.token_urlsafe(24)
        response = self._page(
            request,
            "login",
            status_code=401,
            title="Log in",
            login_nonce=nonce,
            next_path=next_path,
            login_error="wrong token",
        )
        _set_cookie(request, response, LOGIN_COOKIE, nonce, path="/login", max_age=900)
        return response

    def _login_refusal(self, request: Request, form: Mapping[str, str]) -> tuple[int, str] | None:
        why = cross_site(request)
        if why is not None:
            return 403, why
        if self.token is None:
            return 403, _DISABLED
        if self.throttle.blocked():
            return 429, _THROTTLED
        if not matches(form.get("login_nonce"), request.cookies.get(LOGIN_COOKIE)):
            return 403, "the login form expired or was not sent from this dashboard: reload it and try again"
        return None

    async def logout(self, request: Request) -> Response:
        """End the session."""
        form = await _form(request)
        refusal = await self._action_refusal(request, form)
        if refusal is not None:
            return self._refused(request, *refusal)
        self.sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- actions -----------------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        """Run one action (see :data:`.actions.ACTIONS`) for an authenticated, same-site request."""
        action = ACTIONS.get(request.path_params["action"])
        form = await _form(request)
        refusal = await self._action_refusal(request, form)
        if refusal is not None:
            return self._refused(request, *refusal)
        if action is None:
            return self._refused(request, 404, f"no action {request.path_params['action']!r}")
        try:
            message = await run_in_threadpool(action, self.queue, form)
        except DtqError as exc:
            return self._acted(request, form, str(exc), _status_of(exc))
        return self._acted(request, form, message, 200)

    async def _action_refusal(self, request: Request, form: Mapping[str, str]) -> tuple[int, str] | None:
        """Why this request may not change anything (status code and reason), or None."""
        why = cross_site(request)
        if why is not None:
            return 403, why
        if self.token is None:
            return 403, _DISABLED
        given = bearer_token(request)
        if given is not None:
            return await self._bearer_refusal(given, self.token)
        session = self._session(request)
        if session is None:
            return 401, "log in with the dashboard token first"
        if not matches(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER), session.csrf):
            return 403, "the form's CSRF token is missing or wrong: reload the page and try again"
        return None

    async def _bearer_refusal(self, given: str, token: str) -> tuple[int, str] | None:
        """A bearer token is a login of its own: throttled and slowed as the form's is,
        or it would be a way to guess the token without limit."""
        if self.throttle.blocked():
            return 429, _THROTTLED
        if matches(given, token):
            return None
        await self._wrong_token()
        return 401, "wrong token"

    async def _wrong_token(self) -> None:
        """Count a wrong token against the login limit, and answer it slowly."""
        self.throttle.failed()
        await asyncio.sleep(_FAILED_LOGIN_DELAY_S)

    def _acted(self, request: Request, form: Mapping[str, str], message: str, status_code: int) -> Response:
        if _wants_json(request):
            if status_code == 200:
                return JSONResponse({"ok": True, "message": message})
            # "error", as a refused or malformed request answers; "message" as before.
            return JSONResponse({"ok": False, "message": message, "error": message}, status_code=status_code)
        session = self._session(request)
        if session is not None:
            session.flash("ok" if status_code == 200 else "error", message)
        return RedirectResponse(local_path(form.get("next")), status_code=303)

    def _refused(self, request: Request, status_code: int, reason: str) -> Response:
        if _wants_json(request):
            return JSONResponse({"ok": False, "error": reason}, status_code=status_code)
        return self._page(request, "error", status_code=status_code, title="Refused", message=reason)

    # --- rendering -----------------------------------------------------------------------

    def _page(self, request: Request, name: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        """Render page ``name``, or only its live part when asked with ``?fragment=1``."""
        fragment = request.query_params.get("fragment") == "1" and name in _LIVE_PAGES
        template = f"_{name}_live.html" if fragment else f"{name}.html"
        html = self.templates.get_template(template).render(
            **self._common(request, fragment), page_name=name, **context
        )
        return HTMLResponse(html, status_code=status_code)

    def _common(self, request: Request, fragment: bool) -> dict[str, Any]:
        session = self._session(request)
        here = _here(request)
        return {
            "session": session,
            "can_act": self.token is not None and session is not None,
            "actions_enabled": self.token is not None,
            "csrf": session.csrf if session else "",
            "flashes": session.take_flashes() if session and not fragment else [],
            "here": here,
            "live_url": f"{here}{'&' if '?' in here else '?'}fragment=1",
            "poll_ms": self.poll_ms,
            "namespace": self.queue.settings.namespace,
            "engine_url": mask_url(self.queue.settings.url),
        }

    def _session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    async def _error(self, request: Request, exc: Exception) -> Response:
        """A dtq error (or a bad parameter) as a page, or as JSON under ``/api/`` and for a
        script's action (a bearer token, or JSON accepted), as its other answers are."""
        status_code = _status_of(exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=status_code)
        if _wants_json(request):
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=status_code)
        return self._page(request, "error", status_code=status_code, title="Error", message=str(exc))


#: The pages with a live part (a ``_<name>_live.html`` template) that scripts refresh.
_LIVE_PAGES = frozenset({"overview", "jobs", "job", "workers"})
_DISABLED = (
    "actions are disabled: no dashboard token is configured; set dashboard_token "
    "(DTQ_DASHBOARD_TOKEN) and restart dtq dashboard"
)


def _status_of(exc: Exception) -> int:
    """The HTTP status of an error: 404 no such job, 400 bad input, 501, 503, else 500."""
    codes: list[tuple[type[Exception], int]] = [
        (JobNotFound, 404),
        (InvalidJob, 400),
        (NotSupported, 501),
        (EngineUnavailable, 503),
        (DtqError, 500),
        (ValueError, 400),
    ]
    return next((code for kind, code in codes if isinstance(exc, kind)), 500)


def _job_filters(request: Request) -> tuple[JobStatus, str | None, int]:
    """The jobs list's status, queue and offset from the query string.

    Raises:
        ValueError: the status or the offset is not one the list takes.
    """
    params = request.query_params
    status_name = params.get("status") or JobStatus.QUEUED.value
    status = next((s for s in data.LISTED if s.value == status_name), None)
    if status is None:
        raise ValueError(f"status must be one of {', '.join(s.value for s in data.LISTED)}")
    offset_text = params.get("offset") or "0"
    if not offset_text.isdigit() or int(offset_text) > 1_000_000:
        raise ValueError("offset must be a whole number from 0 to 1000000")
    return status, params.get("queue") or None, int(offset_text)


async def _form(request: Request) -> dict[str, str]:
    """A POST's form fields (URL-encoded; the first value of each), empty for an empty body.

    Raises:
        InvalidJob: the body is not a URL-encoded form.
    """
    body = await request.body()
    if not body:
        return {}
    if request.headers.get("content-type", "").split(";")[0].strip() != _FORM_TYPE:
        raise InvalidJob(f"send the form as {_FORM_TYPE}")
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidJob(f"the form cannot be read: {exc}") from exc
    return dict(reversed(pairs))


def _wants_json(request: Request) -> bool:
    return bearer_token(request) is not None or "application/json" in request.headers.get("accept", "")


def _here(request: Request) -> str:
    """This page's path and query, without ``fragment``: where an action returns to."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "fragment"]
    query = urllib.parse.urlencode(params)
    return f"{request.url.path}?{query}" if query else request.url.path


def _set_cookie(
    request: Request, response: Response, name: str, value: str, *, path: str, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# --- templates -------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    """Templates from the package, every value escaped, an unknown name an error."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dtq_core.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pretty=_pretty, when=_when, when_ms=_when_ms, age=_age)
    return env


def _pretty(value: Any) -> str:
    """A JSON value indented for reading (escaped by the template, like everything)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _when(moment: datetime | None) -> str:
    """``2026-11-28 16:05:01 UTC``, or ``-``."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when_ms(time_ms: int) -> str:
    """An engine time in ms as :func:`_when` shows it, with milliseconds."""
    moment = datetime.fromtimestamp(time_ms / 1000, timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{time_ms % 1000:03d} UTC"


def _age(seconds: float | None) -> str:
    """``4 s ago``, ``3 min ago``, or ``-``."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"
