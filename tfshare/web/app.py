"""Starting and stopping the web inbox in the agent's asyncio loop.

Owns: ``build_app`` (the aiohttp application: middleware, headers, routes of inbox, compose and
coord, static files), ``start`` (bind, serve) and ``WebInbox`` (its address, login links,
``close``).

Why the socket is bound before the app is built: the ``Host`` check must know the port, and
with ``port=0`` only the bound socket knows it.
"""

from __future__ import annotations

import importlib
import socket
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tfshare.desk import api
from tfshare.errors import UsageError
from tfshare.urls import is_loopback_host
from tfshare.web import inbox
from tfshare.web.pages import DESK, STATIC_DIR
from tfshare.web.security import (
    LOGINS,
    SESSIONS,
    SETTINGS,
    Clock,
    Logins,
    Sessions,
    Settings,
    add_security_headers,
    guard,
)

# Parts written beside the inbox; each has ``setup(app)`` adding its routes. A part not (yet)
# present is left out; an import error inside a present part is not hidden.
OPTIONAL_PARTS = ("tfshare.web.compose", "tfshare.web.coord")


def build_app(
    desk: Any, *, settings: Settings | None = None, clock: Clock = time.time
) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=2 * 1024 * 1024)
    app[DESK] = desk
    app[LOGINS] = Logins(clock)
    app[SESSIONS] = Sessions(clock)
    app[SETTINGS] = settings if settings is not None else Settings()
    app.on_response_prepare.append(add_security_headers)
    inbox.setup(app)
    for name in OPTIONAL_PARTS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.setup(app)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False, append_version=False)
    return app


class WebInbox:
    """The running web inbox: its ``url``, one-time ``login_link``s, and ``close``."""

    def __init__(self, app: web.Application, runner: web.AppRunner, host: str, port: int) -> None:
        self.app = app
        self._runner = runner
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"

    def login_link(self) -> api.LoginLink:
        token, expires = self.app[LOGINS].issue()
        when = (
            datetime.fromtimestamp(expires, UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z")
        )
        return api.LoginLink(url=f"{self.url}login?token={token}", expires=when)

    async def close(self) -> None:
        await self._runner.cleanup()


async def start(
    desk: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
    clock: Clock = time.time,
) -> WebInbox:
    """Serve the web inbox for ``desk`` in the running loop; ``port=0`` picks a free port."""
    if not allow_remote and not is_loopback_host(host):
        raise UsageError(
            f"the web inbox listens on the loopback address only, not {host!r}",
            hint="use 127.0.0.1 (the default) and reach it from this machine",
        )
    if host == "localhost":
        host = "127.0.0.1"  # one address: the Host check and the cookie's host agree
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"the web inbox cannot listen on {host} port {port}: {exc.strerror}",
            hint="choose another port with --web-port, or stop what uses this one",
        ) from None
    bound_port = int(sock.getsockname()[1])
    settings = Settings()
    settings.allow(host, bound_port)
    app = build_app(desk, settings=settings, clock=clock)
    # Open event streams are ended on shutdown (inbox._end_feeds); no handler waits 60 s.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    return WebInbox(app, runner, host, bound_port)
