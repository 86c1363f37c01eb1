"""The dashboard's security: who may act, forged requests, and the headers every response carries.

The model:

* Reading is open to whoever reaches the server, which binds to 127.0.0.1 by
  default and, bound there, answers only requests that name a loopback host
  (so a web page cannot reach it by DNS rebinding).
* Every action that changes something needs the ``dashboard_token``: sent as
  ``Authorization: Bearer <token>`` by scripts, or exchanged once at the login
  form for a session cookie (random, server-side, HttpOnly, SameSite=Strict)
  by a browser. Without a token configured, actions are disabled.
* A browser's action must also carry the session's CSRF token (a hidden form
  field, or the ``X-CSRF-Token`` header) and must not come from another site
  (``Origin`` and ``Sec-Fetch-Site`` are checked when the browser sends them).
* Responses forbid inline script (Content-Security-Policy), framing, MIME
  sniffing and caching; templates escape everything a job holds.
"""

from __future__ import annotations

import collections
import hmac
import secrets
import threading
import time
import urllib.parse

import attrs
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dtq_core.errors import ConfigError

SESSION_COOKIE = "dtq_session"
LOGIN_COOKIE = "dtq_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

#: No inline script or style, nothing from elsewhere, no framing, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


#: The shortest dashboard token accepted: a short one could be guessed.
MIN_TOKEN_CHARS = 16


def check_token(token: str | None) -> None:
    """Refuse a dashboard token too short to be safe (None, no token, is fine: actions are off).

    Raises:
        ConfigError: it is shorter than :data:`MIN_TOKEN_CHARS`.
    """
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"dashboard_token must be at least {MIN_TOKEN_CHARS} characters; make one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def matches(given: str | None, expected: str | None) -> bool:
    """Whether a secret given by a client equals the expected one, compared in constant time."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def cross_site(request: Request) -> str | None:
    """Why a state-changing request looks forged by another site, or None when it does not.

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` with a POST; scripts
    usually send neither, and then have no cookie for a forger to ride on.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"the request came from another site (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own:
        return "the request came from another origin"
    return None


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this server (a redirect to it stays on the site), else ``default``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urllib.parse.urlsplit(target)
    return default if parts.scheme or parts.netloc else target


@attrs.define
class Session:
    """A logged-in browser: the cookie holds ``id``, forms carry ``csrf``."""

    id: str
    csrf: str
    expires_at: float
    flashes: list[tuple[str, str]] = attrs.field(factory=list)

    def flash(self, kind: str, message: str) -> None:
        """Keep a message (``kind`` ok or error) for the next page this browser sees."""
        self.flashes = [*self.flashes[-4:], (kind, message)]

    def take_flashes(self) -> list[tuple[str, str]]:
        """The kept messages, forgotten once taken."""
        taken, self.flashes = self.flashes, []
        return taken


class Sessions:
    """Logged-in sessions, kept in this process only: a restart logs everyone out.

    Only a correct token creates one, so their number stays small; the oldest
    go first past ``max_sessions``.
    """

    def __init__(self, *, idle_s: float = 8 * 3600, max_sessions: int = 1000) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._lock = threading.Lock()

    def create(self) -> Session:
        """A new session with fresh random id and CSRF token."""
        expires_at = time.monotonic() + self.idle_s
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), expires_at)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (its idle time restarts), or None."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if session.expires_at <= time.monotonic():
                del self._sessions[session_id]
                return None
            session.expires_at = time.monotonic() + self.idle_s
            self._sessions.move_to_end(session_id)
            return session

    def drop(self, session_id: str | None) -> None:
        """End a session (log out)."""
        with self._lock:
            self._sessions.pop(session_id or "", None)


class LoginThrottle:
    """Refuses logins for ``window_s`` after ``failures`` wrong tokens within ``window_s``,
    whoever sent them."""

    def __init__(self, *, failures: int = 10, window_s: float = 60.0) -> None:
        self.failures = failures
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    def blocked(self) -> bool:
        """Whether logins are refused now."""
        with self._lock:
            return time.monotonic() < self._blocked_until

    def failed(self) -> None:
        """Count a wrong token; the one that reaches the limit starts a block of ``window_s``
        (counted from it, not from the first of them: spread over the window, the
        wrong tokens would otherwise buy a block of only a few seconds)."""
        with self._lock:
            now = time.monotonic()
            self._times.append(now)
            self._forget_old()
            if len(self._times) >= self.failures:
                self._blocked_until = now + self.window_s

    def _forget_old(self) -> None:
        while self._times and self._times[0] <= time.monotonic() - self.window_s:
            self._times.popleft()


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, and no caching except static files."""

    def __init__(self, app: ASGIApp, *, static_prefix: str = "/static/") -> None:
        self.app = app
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the headers as the response starts."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith(self.static_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers.setdefault(name, value)
                headers["cache-control"] = "public, max-age=300" if static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
