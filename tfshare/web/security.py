"""Who may use the web inbox, and how a page proves it was the inbox's own.

Owns: one-time login tokens (``Logins``), sessions (``Sessions``, the session cookie), the
CSRF check (``check_csrf``), the ``Host``/``Origin`` checks against DNS rebinding and foreign
pages, and the security headers every response carries (``add_security_headers``).

Why this shape: the inbox runs on the analyst's own machine, but any web page the analyst opens
can send requests to 127.0.0.1. So nothing is served without a session; a session starts only
from a login link the CLI printed (a one-time token: 60 s, single use, stored hashed, compared
in constant time); its cookie is HttpOnly and SameSite=Strict; every change (a non-GET) carries
the session's CSRF token in a form field and an ``Origin`` of the inbox itself; and a request
whose ``Host`` is not the inbox's own address is refused, so a DNS name rebound to 127.0.0.1
cannot read a page either. A refused ``Host`` is answered 421 Misdirected Request (the server
does not serve that authority); a refused session 401; a refused CSRF token or ``Origin`` 403.

Nothing here prints or logs a token: they are secrets of the session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDictProxy

LOGIN_TOKEN_LIFE_S: Final = 60.0
SESSION_LIFE_S: Final = 12 * 3600.0
SESSION_COOKIE: Final = "tfshare_session"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "X-CSRF-Token"  # for fetch() from app.js, same token

# The paths a request without a session may ask for: the login itself and the static files
# the login page uses (no data in them).
PUBLIC_PREFIXES: Final = ("/static/",)
PUBLIC_PATHS: Final = frozenset({"/login"})

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

Clock = Callable[[], float]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Logins:
    """One-time login tokens: each is good once, for ``LOGIN_TOKEN_LIFE_S`` seconds.

    Only the SHA-256 of a token is kept, so the table itself is no login; a token is looked up by
    comparing every stored digest in constant time (there are only ever a few)."""

    def __init__(self, clock: Clock = time.time, life_s: float = LOGIN_TOKEN_LIFE_S) -> None:
        self._clock = clock
        self._life_s = life_s
        self._pending: list[tuple[bytes, float]] = []  # (digest, expires at)

    def issue(self) -> tuple[str, float]:
        """A new token and when it expires (epoch seconds)."""
        now = self._clock()
        self._forget_expired(now)
        token = secrets.token_urlsafe(32)
        expires = now + self._life_s
        self._pending.append((_digest(token), expires))
        return token, expires

    def redeem(self, token: str) -> bool:
        """True once for a token issued less than its life ago; it is gone afterwards."""
        now = self._clock()
        self._forget_expired(now)
        wanted = _digest(token)
        found: tuple[bytes, float] | None = None
        for entry in self._pending:  # every entry compared: the time says nothing of which
            if hmac.compare_digest(entry[0], wanted):
                found = entry
        if found is None:
            return False
        self._pending.remove(found)
        return True

    def _forget_expired(self, now: float) -> None:
        self._pending = [(d, exp) for d, exp in self._pending if exp > now]


@dataclass
class Session:
    csrf: str = field(repr=False)  # a secret of the session: never in a log
    expires: float


@dataclass
class Sessions:
    """The server-side session table: the cookie holds a random 32-byte token, the table its
    digest. A session ends at logout or ``SESSION_LIFE_S`` after login, whichever comes first."""

    clock: Clock = time.time
    life_s: float = SESSION_LIFE_S
    _table: dict[bytes, Session] = field(default_factory=dict, repr=False)

    def create(self) -> tuple[str, Session]:
        now = self.clock()
        self._table = {k: s for k, s in self._table.items() if s.expires > now}
        token = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=now + self.life_s)
        self._table[_digest(token)] = session
        return token, session

    def find(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._table.get(_digest(token))
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._table[_digest(token)]
            return None
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._table.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._table)


@dataclass
class Settings:
    """What the checks compare against: the ``Host`` values of the inbox's own address (filled in
    once the socket is bound, so the port is known)."""

    allowed_hosts: set[str] = field(default_factory=set)

    def allow(self, host: str, port: int) -> None:
        """Accept the address the server listens on, and localhost for a loopback server."""
        shown = f"[{host}]" if ":" in host else host
        self.allowed_hosts.add(f"{shown}:{port}".lower())
        if host in ("127.0.0.1", "::1", "localhost"):
            self.allowed_hosts.update({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})

    def allowed_origins(self) -> set[str]:
        return {f"http://{h}" for h in self.allowed_hosts}


LOGINS: Final = web.AppKey("logins", Logins)
SESSIONS: Final = web.AppKey("sessions", Sessions)
SETTINGS: Final = web.AppKey("settings", Settings)
SESSION_KEY: Final = web.RequestKey("session", Session)  # the request's Session


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION_KEY)


def start_session(request: web.Request, response: web.StreamResponse) -> Session:
    """A new session for a request that just redeemed a login token; its cookie on ``response``."""
    sessions = request.app[SESSIONS]
    sessions.end(request.cookies.get(SESSION_COOKIE))  # a login replaces the old session
    token, session = sessions.create()
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(sessions.life_s),
        path="/",
        httponly=True,
        samesite="Strict",
        # Not Secure: the inbox speaks plain HTTP on the loopback address, where a Secure cookie
        # would not be sent back by every browser.
    )
    request[SESSION_KEY] = session
    return session


def end_session(request: web.Request, response: web.StreamResponse) -> None:
    request.app[SESSIONS].end(request.cookies.get(SESSION_COOKIE))
    response.del_cookie(SESSION_COOKIE, path="/")
    request.pop(SESSION_KEY, None)


async def check_csrf(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The posted form, if it carries this session's CSRF token (field ``csrf``, or the
    ``X-CSRF-Token`` header); else 403. Call it first in every non-GET handler."""
    session = session_of(request)
    form = await request.post()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str):
        sent = request.headers.get(CSRF_HEADER)
    if (
        session is None
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), session.csrf.encode())
    ):
        raise web.HTTPForbidden(
            text="the form's security token is missing or wrong: reload the page and try again"
        )
    return form


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host first (a rebound name learns nothing, not even the login page), then the origin of a
    change, then the session."""
    settings = request.app[SETTINGS]
    host = request.headers.get("Host", "").lower()
    if host not in settings.allowed_hosts:
        raise web.HTTPMisdirectedRequest(text="this web inbox answers only at its own address")
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("Origin")
        claimed = origin if origin is not None else request.headers.get("Referer")
        if claimed is None or _origin_of(claimed) not in settings.allowed_origins():
            raise web.HTTPForbidden(text="a change may only come from the web inbox's own pages")
    session = request.app[SESSIONS].find(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        request[SESSION_KEY] = session
    elif not _is_public(request.path):
        if request.method == "GET" and request.path != "/events":
            raise web.HTTPSeeOther("/login")  # a person: the page that says how to log in
        raise web.HTTPUnauthorized(text="not logged in: run `tfshare web open` for a login link")
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response (pages, errors, the event stream, static files), as
    ``on_response_prepare``."""
    headers = response.headers
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: under no-referrer Chromium sends "Origin: null" with a
    # same-origin form POST, which the Origin check must refuse; other sites still get none.
    headers["Referrer-Policy"] = "same-origin"
    headers["X-Frame-Options"] = "DENY"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if not request.path.startswith(PUBLIC_PREFIXES):
        headers["Cache-Control"] = "no-store"
