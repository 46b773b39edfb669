"""The inbox's pages: login and logout, the inbox with its live feed, one message, its JSON
export, and the quarantine.

Owns: the routes ``/login``, ``/logout``, ``/``, ``/events``, ``/message/{ref}``,
``/message/{ref}.json`` and ``/quarantine``; ``row_of`` (the one small row both the inbox
table and the live feed show), ``handling_view`` (the banner), ``due_view`` (the reply
deadline of a request, EU 2023/977 classes as ``tfshare.audit.report`` counts them).

Everything taken from a message is untrusted: it goes to templates (autoescaped) or into JSON
(app.js inserts it with ``textContent``); a link is built from a msg_id only when it is hex.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from aiohttp import web

from tfshare.audit.report import RESPONSE_LIMITS
from tfshare.desk import api
from tfshare.envelope import Envelope, Header
from tfshare.errors import TfshareError
from tfshare.lineage import RELATIONS
from tfshare.web.pages import DESK, msg_href, render
from tfshare.web.security import LOGINS, check_csrf, end_session, start_session

INBOX_LIMIT: Final = 1000
TITLE_CHARS: Final = 200
HEARTBEAT_S: Final = 15.0

KINDS: Final = {"tf.alert": "alert", "tf.red_flag": "red-flag", "tf.tip_summary": "tip"}

# TLP 2.0 labels (FIRST) -> CSS class; the class is chosen here, never taken from a message.
TLP_CLASSES: Final = {
    "RED": "tlp-red",
    "AMBER+STRICT": "tlp-amber-strict",
    "AMBER": "tlp-amber",
    "GREEN": "tlp-green",
    "CLEAR": "tlp-clear",
}
SEVERITIES: Final = ("low", "medium", "high", "critical")
LOUD_SEVERITIES: Final = frozenset({"high", "critical"})

# The indicator vocabularies the schemas name (indicator_code's description).
VOCABULARIES: Final = {
    "ilo": "ILO indicators of forced labour",
    "htcds": "IOM Human Trafficking Case Data Standard",
    "fincen": "FinCEN advisory FIN-2020-A008 financial red flags",
    "polaris": "Polaris typology of trafficking",
}

# What to do about a quarantined envelope, by code (docs/PROTOCOL.md 8.5 says what each means).
QUARANTINE_HINTS: Final = {
    "E_TOO_LARGE": "the envelope is over 512 KiB; ask the sender to shorten the message",
    "E_MALFORMED": "not a well-formed envelope: a broken or hostile sender; report the code",
    "E_NONCANONICAL": "not canonically encoded: the sender's software is faulty; report it",
    "E_VERSION": "an envelope version or mode this agent does not accept; check both are current",
    "E_CHANNEL": "arrived on a channel or subject it does not belong to; report the code",
    "E_STALE": "older than the receive window: ask the sender to send it again",
    "E_FUTURE": "dated in the future: the sender's clock (or this machine's) is wrong",
    "E_UNKNOWN_SENDER": "signed with a key the roster does not list; check the roster is current",
    "E_REVOKED": "signed with a revoked key: do not act on it; tell the coordinator",
    "E_NOT_AUTHORIZED": "the sender may not write this channel (or is suspended)",
    "E_BAD_SIG": "the signature does not verify: do not act on it; report the code",
    "E_EQUIVOCATION": "a different message under an id seen before: report it to the coordinator",
    "E_NOT_RECIPIENT": "not addressed to this agency",
    "E_WRAP": "the key wrap does not open: ask the sender to resend it",
    "E_EPOCH": "epoch mode is not supported yet",
    "E_COMMIT": "the sender gave recipients different keys: report it to the coordinator",
    "E_DECRYPT": "the payload does not decrypt: ask the sender to resend it",
    "E_SCHEMA": "an unknown schema version: update the registry (tfshare schema), then resend",
    "E_BODY": "the body does not decode: the sender's software is faulty; report it",
    "E_INTERNAL": "this agent could not finish its checks; see `tfshare agent status` errors",
}
DEFAULT_HINT: Final = "do not act on this message; ask the sender to resend it, or report the code"


def setup(app: web.Application) -> None:
    app.router.add_get("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", inbox_page)
    app.router.add_get("/events", events)
    app.router.add_get("/message/{ref:[0-9a-fA-F]{1,64}}.json", message_json)
    app.router.add_get("/message/{ref:[0-9a-fA-F]{1,64}}", message_page)
    app.router.add_get("/quarantine", quarantine_page)
    feeds: set[asyncio.Task[Any]] = set()
    app[FEEDS] = feeds
    app.on_shutdown.append(_end_feeds)


FEEDS: Final[web.AppKey[set[asyncio.Task[Any]]]] = web.AppKey("feeds", set)


# -- access -----------------------------------------------------------------------------------


async def login(request: web.Request) -> web.StreamResponse:
    token = request.query.get("token")
    if token is None:
        return render(request, "login.html", status=401, problem=None)
    if not request.app[LOGINS].redeem(token):
        return render(request, "login.html", status=403, problem="expired")
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        # Opened from outside the inbox (the forwarding file of `web open --browser`): a
        # redirect would stay in that cross-site navigation, where the SameSite=Strict cookie
        # just set is not sent. The inbox's own page moves on, same-site.
        response = web.Response(
            text=LOGGED_IN_PAGE, content_type="text/html", headers={"Refresh": "0; url=/"}
        )
    else:
        response = web.Response(status=303, headers={"Location": "/"})
    start_session(request, response)
    return response


LOGGED_IN_PAGE: Final = (
    '<!doctype html>\n<meta charset="utf-8">\n<title>tfshare web inbox</title>\n'
    '<p>Logged in. <a href="/">Open the inbox</a>.</p>\n'
)


async def logout(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    response = render(request, "login.html", problem="logged-out")
    end_session(request, response)
    return response


# -- rows ---------------------------------------------------------------------------------------


def _iso_ms(text: str) -> int:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def title_of(body: object) -> str:
    """A line that names the message: its title, else the start of its summary or context."""
    if not isinstance(body, Mapping):
        return ""
    for key in ("title", "summary", "context", "recommended_action"):
        text = _text(body.get(key))
        if text:
            return text[:TITLE_CHARS]
    entity = body.get("entity")
    if isinstance(entity, Mapping):
        return f"{_text(entity.get('kind'))} {_text(entity.get('value'))}"[:TITLE_CHARS]
    return ""


def handling_of(body: object) -> dict[str, Any]:
    block = body.get("handling") if isinstance(body, Mapping) else None
    return dict(block) if isinstance(block, Mapping) else {}


def row_of(item: api.Message | api.Unreadable, row: api.InboxRow | None = None) -> dict[str, Any]:
    """The inbox row of a message (strings only, all untrusted but ``href``)."""
    if isinstance(item, api.Unreadable):
        return {
            "msg_id": item.msg_id,
            "href": msg_href(item.msg_id),
            "sender": item.sender,
            "channel": row.channel if row else "",
            "schema": row.schema if row else "",
            "received": row.received if row else "",
            "received_ms": _iso_ms(row.received) if row else 0,
            "title": f"unreadable: {item.code}",
            "severity": "",
            "tlp": "",
            "unreadable": item.code,
            "warning": "",
            "loud": False,
        }
    body = item.body
    severity = _text(body.get("severity")) if isinstance(body, Mapping) else ""
    tlp = _text(handling_of(body).get("tlp"))
    return {
        "msg_id": item.msg_id,
        "href": msg_href(item.msg_id),
        "sender": item.sender,
        "channel": item.channel,
        "schema": item.schema,
        "received": item.received,
        "received_ms": item.received_ms or _iso_ms(item.received),
        "title": title_of(body),
        "severity": severity if severity in SEVERITIES else "",
        "tlp": tlp if tlp in TLP_CLASSES else "",
        "unreadable": "",
        "warning": item.warning or "",
        "loud": severity in LOUD_SEVERITIES,
    }


def _read(desk: Any, row: api.InboxRow) -> api.Message | api.Unreadable:
    try:
        message = desk.message(f"{row.sender}:{row.msg_id}")
    except TfshareError as exc:
        return api.Unreadable(row.msg_id, row.sender, exc.code or "E_INTERNAL", exc.message)
    assert isinstance(message, api.Message)
    return message


async def inbox_page(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    listing: api.InboxRows = desk.inbox(limit=INBOX_LIMIT)
    messages = getattr(desk, "messages", None)
    if messages is not None:  # one pass over the store, decrypted (the same newest-first order)
        by_key = {(r.sender, r.msg_id): r for r in listing.rows}
        rows = [row_of(v, by_key.get((v.sender, v.msg_id))) for v in messages(limit=INBOX_LIMIT)]
    else:
        rows = [row_of(_read(desk, r), r) for r in listing.rows]
    return render(
        request,
        "inbox.html",
        rows=rows,
        channels=sorted({r["channel"] for r in rows if r["channel"]}),
        senders=sorted({r["sender"] for r in rows if r["sender"]}),
        severities=SEVERITIES,
        tlps=list(TLP_CLASSES),
        tlp_classes=TLP_CLASSES,
    )


# -- the live feed ------------------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: one ``message`` event per stored message, its data the row as JSON."""
    desk = request.app[DESK]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    task = asyncio.current_task()
    feeds = request.app[FEEDS]
    if task is not None:
        feeds.add(task)
    try:
        await response.write(b"retry: 2000\n: connected\n\n")
        async with desk.subscribe() as feed:
            items: AsyncIterator[api.FeedItem] = feed.__aiter__()
            pending = asyncio.ensure_future(items.__anext__())
            try:
                while True:
                    done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_S)
                    if not done:
                        await response.write(b": keep-alive\n\n")
                        continue
                    try:
                        fed = pending.result()
                    except StopAsyncIteration:
                        break
                    pending = asyncio.ensure_future(items.__anext__())
                    data = msgspec.json.encode(row_of(fed.item))
                    await response.write(b"event: message\ndata: " + data + b"\n\n")
            finally:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if task is not None:
            feeds.discard(task)
    return response


async def _end_feeds(app: web.Application) -> None:
    feeds = app[FEEDS]
    for task in list(feeds):
        task.cancel()


# -- one message --------------------------------------------------------------------------------


def handling_view(body: object) -> dict[str, Any]:
    block = handling_of(body)
    tlp = _text(block.get("tlp"))
    return {
        "tlp": tlp or "none given",
        "tlp_class": TLP_CLASSES.get(tlp, "tlp-unknown"),
        "pap": _text(block.get("pap")) or "not given",
        "code": _text(block.get("code")) or "H1",
        "code_note": _text(block.get("code_note")),
        "no_forward": block.get("no_forward") is True,
    }


def indicators_view(body: object) -> list[dict[str, str]]:
    codes = body.get("indicators") if isinstance(body, Mapping) else None
    if not isinstance(codes, list):
        return []
    shown = []
    for code in codes:
        text = _text(code)
        namespace = text.split(":", 1)[0]
        shown.append(
            {"code": text, "vocabulary": VOCABULARIES.get(namespace, "unknown vocabulary")}
        )
    return shown


def grading_view(body: object) -> list[tuple[str, str]]:
    block = body.get("grading") if isinstance(body, Mapping) else None
    if not isinstance(block, Mapping):
        return []
    return [(str(k), str(v)) for k, v in block.items()]


def due_view(message: api.Message, *, now_ms: int, replied: bool) -> dict[str, Any] | None:
    """When a reply is due (counted from receipt, as the audit report counts it), or None."""
    body = message.body
    response_class = _text(body.get("response")) if isinstance(body, Mapping) else ""
    limit = RESPONSE_LIMITS.get(response_class)
    if limit is None:
        return None
    received = message.received_ms or _iso_ms(message.received)
    due = received + limit
    return {
        "class": response_class,
        "due": _iso(due),
        "overdue": not replied and now_ms > due,
        "replied": replied,
    }


def fields_view(body: object) -> list[tuple[str, object]]:
    """The body's other fields, in order, for the generic part of the view."""
    if not isinstance(body, Mapping):
        return [("body", body)]
    shown = ("handling", "grading", "indicators")
    return [(str(k), v) for k, v in body.items() if k not in shown]


def _lineage(desk: Any, message: api.Message) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    lineage = getattr(desk, "lineage", None)
    if lineage is None:
        return [], []
    try:
        parents, children = lineage(message.msg_id)
    except TfshareError:
        return [], []
    return [_link(p) for p in parents], [_link(c) for c in children]


def _link(item: Any) -> dict[str, str]:
    msg_id = str(getattr(item, "msg_id", ""))
    body = getattr(item, "body", None)
    return {
        "msg_id": msg_id,
        "href": msg_href(msg_id),
        "sender": str(getattr(item, "sender", "")),
        "schema": str(getattr(item, "schema", "")),
        "relation": str(getattr(item, "relation", "")),
        "title": title_of(body),
    }


_REPLY: Final = RELATIONS["reply"]


def replied_by_me(desk: Any, msg_id: str) -> bool:
    """Whether this agency sent a reply to ``msg_id``. A reply goes to the requester only, so
    it is not in this agency's own inbox: its sent list holds it, with the refs in the
    envelope's signed header (this agency's own envelopes: nothing to decrypt)."""
    store = getattr(getattr(desk, "agency", None), "store", None)
    if store is None:
        return False
    for sent in store.sent(limit=10_000):
        try:
            envelope = msgspec.msgpack.decode(sent.envelope, type=Envelope)
            header = msgspec.msgpack.decode(envelope.hdr, type=Header)
        except msgspec.DecodeError:
            continue
        if any(r.relation == _REPLY and r.msg_id.hex() == msg_id for r in header.refs):
            return True
    return False


def _receipts(desk: Any, message: api.Message) -> list[Any]:
    receipts = getattr(desk, "receipts", None)
    if receipts is None or message.sender != getattr(desk, "agency_id", None):
        return []
    try:
        return list(receipts(message.msg_id))
    except TfshareError:
        return []


def _message(request: web.Request) -> api.Message:
    ref = request.match_info["ref"].lower()
    try:
        message = request.app[DESK].message(ref)
    except TfshareError as exc:
        raise web.HTTPNotFound(text=f"{exc.message} ({exc.hint})") from None
    assert isinstance(message, api.Message)
    return message


async def message_page(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    message = _message(request)
    parents, children = _lineage(desk, message)
    me = str(getattr(desk, "agency_id", ""))
    replied = replied_by_me(desk, message.msg_id)
    kind = KINDS.get(message.schema.split("/", 1)[0], "")
    return render(
        request,
        "message.html",
        m=message,
        href=msg_href(message.msg_id),
        kind=kind,
        own=message.sender == me,
        handling=handling_view(message.body),
        indicators=indicators_view(message.body),
        grading=grading_view(message.body),
        fields=fields_view(message.body),
        due=due_view(message, now_ms=time.time_ns() // 1_000_000, replied=replied),
        parents=parents,
        children=children,
        receipts=_receipts(desk, message),
        severity=row_of(message)["severity"],
    )


async def message_json(request: web.Request) -> web.StreamResponse:
    message = _message(request)
    data = msgspec.json.encode(message)
    name = f"tfshare-{message.msg_id}.json" if msg_href(message.msg_id) else "tfshare-message.json"
    return web.Response(
        body=msgspec.json.format(data, indent=2),
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# -- quarantine ---------------------------------------------------------------------------------


async def quarantine_page(request: web.Request) -> web.StreamResponse:
    listing: api.QuarantineRows = request.app[DESK].quarantine(limit=100)
    rows = [{"row": r, "hint": QUARANTINE_HINTS.get(r.code, DEFAULT_HINT)} for r in listing.rows]
    return render(request, "quarantine.html", rows=rows)
