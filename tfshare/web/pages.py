"""Pages of the web inbox: the desk they show, and the one way a page is rendered.

Owns: ``DESK`` (the app key of the agent's ``Desk``), the Jinja2 environment over
``tfshare/web/templates`` (autoescape on for every template: a string from a message, a card
or a roster is always text, never markup), the filters templates use to show untrusted text
(``visible``, ``visible_text``), and ``render``, which puts the session's CSRF token and the
agency's name in every page's context.

Never: mark a string from outside ``|safe`` or build a URL from it without quoting; an ``href``
the inbox builds holds only a msg_id's hex digits (``msg_href``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from tfshare import visible
from tfshare.web.security import session_of

DESK: Final[web.AppKey[Any]] = web.AppKey("desk", Any)  # the agent's tfshare.desk.service.Desk

TEMPLATES_DIR: Final = Path(__file__).with_name("templates")
STATIC_DIR: Final = Path(__file__).with_name("static")

_HEX: Final = re.compile(r"[0-9a-f]{1,64}")


def visible_text(value: object) -> Markup:
    """Multi-line untrusted text: each line escaped (HTML), hidden characters (controls, bidi
    overrides, zero-width) shown as their escapes; line breaks kept as <br>."""
    lines = str(value).split("\n")
    return Markup("<br>").join(escape(visible.escape(line)) for line in lines)


def visible_line(value: object) -> str:
    """One line of untrusted text with hidden characters shown as escapes (autoescape does HTML)."""
    return visible.escape(str(value))


def msg_href(msg_id: object, suffix: str = "") -> str:
    """/message/<hex> for a msg_id, or "" for anything that is not plain hex (never a link)."""
    text = str(msg_id).lower()
    if not _HEX.fullmatch(text):
        return ""
    return f"/message/{text}{suffix}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # every template is HTML
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the test, not the page silently
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["visible"] = visible_line
    env.filters["visible_text"] = visible_text
    env.globals["msg_href"] = msg_href
    return env


ENV: Final = _environment()


def render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    """Template ``name`` with ``context``, plus ``csrf_token``, ``agency`` and ``taskforce``.

    The security headers are added to every response by ``security.add_security_headers``."""
    session = session_of(request)
    desk = request.app.get(DESK)
    context.setdefault("csrf_token", session.csrf if session is not None else "")
    context.setdefault("logged_in", session is not None)
    context.setdefault("agency", str(getattr(desk, "agency_id", "")))
    context.setdefault("taskforce", str(getattr(desk, "taskforce", "")))
    context.setdefault("path", request.path)
    text = ENV.get_template(name).render(**context)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
