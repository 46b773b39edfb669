"""Composing in the web inbox: an alert, a red flag or a tip summary from a form generated from
the registry's JSON Schema, and the actions on a message (reply, escalate, reshare, amend,
retract), published through the agent's desk.

Owns: the routes ``GET/POST /compose/{kind}`` and ``GET /compose/done/{msg_id}``; the drafts
(the values last typed, per session, kind and action, kept in memory only: a reload or a
refused message shows them again); the channel and recipient choices from the roster.

The handling rules are the desk's (``Desk.publish`` -> ``live.compose``), exactly as for the
CLI: a reshare of a no_forward message is refused there (HandlingRefused, exit 3) and shown on
the page with its hint; nothing is published. The body is checked here first, field by field
(``forms.parse_form``), so each invalid field is named beside it and the other values stay.

Everything from a message (a parent's body, its sender) is untrusted: it reaches the page only
through autoescaped templates, as form values.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from tfshare.desk import api
from tfshare.errors import TfshareError, ValidationError
from tfshare.web.forms import Field, FormInvalid, form_fields, form_values, parse_form
from tfshare.web.pages import DESK, render
from tfshare.web.security import check_csrf, session_of
from tfshare.workflows.bodies import safe_handling

SUBJECTS: Final = {"alert": "tf.alert", "red-flag": "tf.red_flag", "tip": "tf.tip_summary"}
KIND_LABELS: Final = {"alert": "alert", "red-flag": "red flag", "tip": "tip summary"}
RELATIONS: Final = ("reply", "escalate", "reshare", "amend", "retract")
RELATION_LABELS: Final = {
    "reply": "Reply to",
    "escalate": "Escalation of",
    "reshare": "Reshare of",
    "amend": "Amendment of",
    "retract": "Retraction of",
}
# Form names outside any schema (schema property names are lower-case identifiers).
CHANNEL_FIELD: Final = "_channel"
TO_FIELD: Final = "_to"
RELATION_FIELD: Final = "_relation"
PARENT_FIELD: Final = "_parent"
MAX_PARENT_REF: Final = 200  # SENDER:MSG_ID at most; the desk checks the syntax
MAX_DRAFTS: Final = 500  # kept in memory for all sessions together, oldest dropped first
MAX_RESULTS: Final = 200
_MSG_ID: Final = re.compile(r"[0-9a-f]{32}")
_LOCAL_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,3})?)?"
)


@dataclass
class Done:
    """What the confirmation page shows for one published message."""

    kind: str
    published: api.Published
    channel: str | None
    relation: str | None
    parent: str | None
    notes: list[str]


@dataclass
class ComposeState:
    drafts: OrderedDict[tuple[str, ...], dict[str, str]] = field(default_factory=OrderedDict)
    done: OrderedDict[tuple[str, str], Done] = field(default_factory=OrderedDict)

    def keep_draft(self, key: tuple[str, ...], values: dict[str, str]) -> None:
        self.drafts[key] = values
        self.drafts.move_to_end(key)
        while len(self.drafts) > MAX_DRAFTS:
            self.drafts.popitem(last=False)

    def keep_done(self, key: tuple[str, str], done: Done) -> None:
        self.done[key] = done
        while len(self.done) > MAX_RESULTS:
            self.done.popitem(last=False)


COMPOSE: Final = web.AppKey("compose", ComposeState)


@dataclass(frozen=True)
class Section:
    """A run of fields under one legend; ``variant`` = (tag field name, tag value) for the
    fields of one grading system (compose.js shows only the chosen one's)."""

    legend: str
    variant: tuple[str, str] | None
    fields: list[Field]


def sections(fields: list[Field]) -> list[Section]:
    out: list[Section] = []
    for f in fields:
        if out and out[-1].legend == f.group and out[-1].variant == f.variant:
            out[-1].fields.append(f)
        else:
            out.append(Section(f.group, f.variant, [f]))
    return out


def _session_key(request: web.Request) -> str:
    session = session_of(request)
    secret = session.csrf if session is not None else ""
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in SUBJECTS:
        raise web.HTTPNotFound(text="compose an alert, a red-flag or a tip")
    return kind


def _channels(desk: Any, kind: str) -> list[str]:
    """The channels this agency may write to that carry this kind of message."""
    roster = desk.agency.roster
    me = desk.agency_id
    subject = SUBJECTS[kind]
    return sorted(
        name
        for name, channel in roster.channels.items()
        if me in roster.writers.get(name, ())
        and (not channel.schemas or subject in channel.schemas)
    )


def _recipients(desk: Any, channels: list[str]) -> list[str]:
    """Agencies that read at least one of ``channels`` (the desk checks the chosen one)."""
    roster = desk.agency.roster
    me = desk.agency_id
    return sorted({a for c in channels for a in roster.readers.get(c, ()) if a != me})


def _relation_of(query: Any) -> tuple[str, str] | None:
    given = [(r, str(query.get(r, ""))) for r in RELATIONS if r in query]
    if not given:
        return None
    if len(given) > 1:
        raise web.HTTPBadRequest(
            text="one action at a time: reply, escalate, reshare, amend or retract"
        )
    relation, parent = given[0]
    parent = parent.strip()
    if not parent or len(parent) > MAX_PARENT_REF:
        raise web.HTTPBadRequest(text=f"{relation}: give the message's id")
    return relation, parent


def _subject_of(schema_name: str) -> str:
    return schema_name.partition("/")[0]


@dataclass
class Parent:
    ref: str
    message: api.Message | None
    problem: str | None  # why its body cannot be shown (not in the inbox: an own message)


def _parent(desk: Any, relation: str, ref: str) -> Parent:
    try:
        message = desk.message(ref)
    except TfshareError as exc:
        if relation in ("amend", "retract"):
            # One's own messages are amended and retracted; the agency keeps their handling,
            # not their bodies (live.find_parent), so there is nothing to start from.
            return Parent(
                ref,
                None,
                "this agency keeps no copy of the bodies it sent: fill in the whole "
                + ("amended message" if relation == "amend" else "retraction"),
            )
        return Parent(ref, None, f"{exc.message} ({exc.hint})")
    return Parent(ref, message, None)


def _no_forward(message: api.Message | None) -> bool:
    body = message.body if message is not None else None
    handling = body.get("handling") if isinstance(body, dict) else None
    return isinstance(handling, dict) and handling.get("no_forward") is True


def _page(
    request: web.Request,
    kind: str,
    document: dict[str, Any],
    values: dict[str, str],
    *,
    derive: tuple[str, str] | None,
    parent: Parent | None,
    channel: str,
    to: list[str],
    errors: dict[str, str] | None = None,
    problem: TfshareError | None = None,
    status: int = 200,
) -> web.Response:
    desk = request.app[DESK]
    fields = form_fields(document, _body_for_layout(document, values))
    channels = _channels(desk, kind)
    errors = errors or {}
    names = {f.name for f in fields} | {CHANNEL_FIELD, TO_FIELD}
    return render(
        request,
        "compose.html",
        status=status,
        kind=kind,
        kind_label=KIND_LABELS[kind],
        sections=sections(fields),
        values=values,
        errors=errors,
        general_errors=[line for name, line in errors.items() if name not in names],
        problem=problem,
        relation=derive[0] if derive else "",
        relation_label=RELATION_LABELS[derive[0]] if derive else "",
        parent_ref=derive[1] if derive else "",
        parent=parent,
        no_forward_parent=derive is not None
        and derive[0] == "reshare"
        and parent is not None
        and _no_forward(parent.message),
        channels=channels,
        channel=channel,
        recipients=_recipients(desk, channels),
        to=to,
        local_time=_LOCAL_TIME,
    )


def _body_for_layout(document: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """A stand-in body with as many items per list of objects as ``values`` fill in, so a
    re-shown form has a place for each (and one blank)."""
    layout: dict[str, Any] = {}
    for name, value in values.items():
        if not value.strip():
            continue
        parts = name.split(".")
        for i in range(1, len(parts)):
            if parts[i].isdigit() and len(parts[i]) <= 3:
                node: Any = layout
                for key in parts[: i - 1]:
                    node = node.setdefault(key.partition("@")[0], {})
                    if not isinstance(node, dict):
                        break
                else:
                    items = node.setdefault(parts[i - 1], [])
                    if isinstance(items, list):
                        while len(items) <= int(parts[i]):
                            items.append({})
                break
    return layout


def _document(desk: Any, kind: str) -> dict[str, Any]:
    document = desk.schema_document(kind).document
    if not isinstance(document, dict):
        raise ValidationError(
            f"the registry's schema for {kind} is not a JSON object",
            hint="update the registry (tfshare schema) and restart the agent",
        )
    return document


async def compose_page(request: web.Request) -> web.Response:
    kind = _kind(request)
    desk = request.app[DESK]
    derive = _relation_of(request.query)
    try:
        document = _document(desk, kind)
    except TfshareError as exc:
        return render(request, "compose_done.html", status=500, done=None, problem=exc, kind=kind)
    parent = _parent(desk, *derive) if derive else None
    state = request.app[COMPOSE]
    draft = state.drafts.get(_draft_key(request, kind, derive))
    if draft is not None:
        values = dict(draft)
    elif parent is not None and parent.message is not None and derive is not None:
        values = form_values(document, _start_body(kind, derive[0], parent.message))
    else:
        values = {}
    return _page(
        request,
        kind,
        document,
        values,
        derive=derive,
        parent=parent,
        channel=values.pop(CHANNEL_FIELD, ""),
        to=[t for t in values.pop(TO_FIELD, "").split("\n") if t],
    )


def _start_body(kind: str, relation: str, message: api.Message) -> Any:
    """What a derived message starts from: the parent's body for a reshare, escalation or
    amendment of the same type (as the CLI does); nothing for a reply or another type."""
    if relation == "reply" or _subject_of(message.schema) != SUBJECTS[kind]:
        return None
    return message.body


def _draft_key(request: web.Request, kind: str, derive: tuple[str, str] | None) -> tuple[str, ...]:
    return (_session_key(request), kind, *(derive or ()))


async def compose_submit(request: web.Request) -> web.StreamResponse:
    kind = _kind(request)
    form = await check_csrf(request)
    desk = request.app[DESK]
    values: dict[str, str] = {}
    for name, value in form.items():
        if isinstance(value, str) and name not in values and name != "csrf":
            values[name] = value
    to = sorted({v for v in form.getall(TO_FIELD, []) if isinstance(v, str) and v})
    channel = values.pop(CHANNEL_FIELD, "").strip()
    values.pop(TO_FIELD, None)
    relation = values.pop(RELATION_FIELD, "").strip()
    parent_ref = values.pop(PARENT_FIELD, "").strip()
    derive: tuple[str, str] | None = None
    if relation:
        if relation not in RELATIONS or not parent_ref or len(parent_ref) > MAX_PARENT_REF:
            raise web.HTTPBadRequest(text="unknown action or message id")
        derive = (relation, parent_ref)
    try:
        document = _document(desk, kind)
    except TfshareError as exc:
        return render(request, "compose_done.html", status=500, done=None, problem=exc, kind=kind)
    state = request.app[COMPOSE]
    key = _draft_key(request, kind, derive)
    # The draft keeps the channel and recipients too, so a reload shows all that was typed.
    state.keep_draft(key, {**values, CHANNEL_FIELD: channel, TO_FIELD: "\n".join(to)})
    parent = _parent(desk, *derive) if derive else None

    def again(errors: dict[str, str] | None, problem: TfshareError | None) -> web.Response:
        return _page(
            request,
            kind,
            document,
            values,
            derive=derive,
            parent=parent,
            channel=channel,
            to=to,
            errors=errors,
            problem=problem,
            status=422,
        )

    try:
        body = parse_form(document, values)
    except FormInvalid as invalid:
        return again(invalid.errors, invalid)
    if not channel and derive is None:
        return again({CHANNEL_FIELD: "channel: choose the channel to publish on"}, None)
    notes: list[str] = []
    safe_handling(document, body, notes.append)
    request_ = api.PublishRequest(
        kind=kind,
        channel=channel or None,
        to=to or None,
        body=json.dumps(body).encode(),  # ASCII: no text can fail to encode
        derive=derive,
    )
    try:
        published = await desk.publish(request_)
    except TfshareError as exc:
        return again(_errors_of(exc, document, body), exc)
    state.drafts.pop(key, None)
    state.keep_done(
        (_session_key(request), published.msg_id),
        Done(kind, published, channel or None, relation or None, parent_ref or None, notes),
    )
    raise web.HTTPSeeOther(f"/compose/done/{published.msg_id}")


def _errors_of(exc: TfshareError, document: dict[str, Any], body: dict[str, Any]) -> dict[str, str]:
    """A desk's ValidationError beside the fields its paths name."""
    if not isinstance(exc, ValidationError):
        return {}
    names = {f.path: f.name for f in form_fields(document, body) if f.variant is None}
    out: dict[str, str] = {}
    for path in exc.paths:
        shown = path.removeprefix("$").removeprefix(".")
        if shown in names:
            out[names[shown]] = f"{shown}: {exc.message}"
    return out


async def done_page(request: web.Request) -> web.Response:
    msg_id = request.match_info["msg_id"]
    done = (
        request.app[COMPOSE].done.get((_session_key(request), msg_id))
        if _MSG_ID.fullmatch(msg_id)
        else None
    )
    if done is None:
        raise web.HTTPNotFound(text="no message published from this session under that id")
    return render(request, "compose_done.html", done=done, problem=None, kind=done.kind)


def setup(app: web.Application) -> None:
    app[COMPOSE] = ComposeState()
    app.router.add_get("/compose/done/{msg_id}", done_page)
    app.router.add_get("/compose/{kind}", compose_page)
    app.router.add_post("/compose/{kind}", compose_submit)
