"""The coordinator's view in the web inbox: the audit log as pictures.

Owns: the routes under ``/coord`` - the overview (``/coord``: overdue replies, handling flags,
equivocations, the latest messages), a message's trace (``/coord/trace/{ref}``: lineage as a
graph, each recipient's receipt on a timeline, the inclusion proof), the period report as
charts (``/coord/report?since=&until=``) and the evidence bundle of a message
(``/coord/evidence/{ref}``, a zip to check offline with ``tfshare audit check``) - and turning
the audit workflows' results (``tfshare.workflows.audit``) into what those pages show.

The log is the one ``tfshare audit serve`` keeps in the agency's state directory; an agency
without one (not a coordinator) is told so, with a 404, never a traceback. The log is read in
a worker thread (each call opens its own connection, so the agent's loop never waits on a
scan); the agency's own state database is touched only on the loop's thread, where the agent
uses it.

Every name shown (agencies, channels, schemas, codes) came from members: templates autoescape
it and ``charts`` draws it as text. A link is built here from a msg_id's hex digits and a
sender name quoted for a URL path, never from text as it came.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote

from aiohttp import web

from tfshare import visible
from tfshare.audit import report as reports
from tfshare.audit.entry import RECEIPT_OF, RELATIONS, LogEntry
from tfshare.audit.logstore import AuditStore
from tfshare.audit.service import HandlingFlag, handling_flags
from tfshare.errors import BrokerError, InputError, TfshareError, UsageError
from tfshare.web import charts
from tfshare.web.pages import DESK, render
from tfshare.workflows import audit, audit_remote
from tfshare.workflows.filekinds import read_kind
from tfshare.workflows.live import Agency

T = TypeVar("T")

# How far the lineage graph reaches from the message traced, and how many messages it shows:
# a picture of a few dozen boxes is still readable; the trace lists the rest.
LINEAGE_DEPTH: Final = 4
LINEAGE_NODES: Final = 40
RECENT: Final = 25  # messages listed on the overview
FLAG_SCAN: Final = 20_000  # entries scanned for handling flags (the newest)
DEFAULT_PERIOD_DAYS: Final = 7

NO_LOG_HINT: Final = (
    "the audit log is kept by a coordinator's agency: run 'tfshare audit serve' with this "
    "agency's profile, then reload this page"
)


def setup(app: web.Application) -> None:
    app.router.add_get("/coord", overview_page)
    app.router.add_get("/coord/trace", trace_lookup)
    app.router.add_get("/coord/trace/{ref}", trace_page)
    app.router.add_get("/coord/report", report_page)
    app.router.add_get("/coord/evidence/{ref}", evidence_download)


# --- links ---------------------------------------------------------------------------------


def trace_href(entry: LogEntry) -> str:
    """``/coord/trace/SENDER:HEX``: the sender named (two senders may use one msg_id), quoted
    for a path segment."""
    return sender_href(entry.sender, entry.msg_id)


def sender_href(sender: str, msg_id: bytes) -> str:
    return "/coord/trace/" + quote(f"{sender}:{msg_id.hex()}", safe=":")


def hex_href(msg_id: bytes) -> str:
    """``/coord/trace/HEX`` for a msg_id alone (a parent the log may not hold)."""
    return "/coord/trace/" + msg_id.hex()


def evidence_href(entry: LogEntry) -> str:
    return "/coord/evidence/" + quote(f"{entry.sender}:{entry.msg_id.hex()}", safe=":")


def iso(ms: int) -> str:
    return reports.iso(ms)


# --- errors --------------------------------------------------------------------------------


def _status_of(error: TfshareError) -> int:
    if isinstance(error, BrokerError):
        return 503  # the witnesses' cosignatures are fetched from the broker
    if isinstance(error, UsageError):
        return 400
    if isinstance(error, InputError):
        return 404
    return 500  # a log that fails its own checks (damaged, tampered): said, not hidden


def _failed(request: web.Request, error: TfshareError, *, title: str) -> web.Response:
    no_log = isinstance(error, InputError) and error.message.startswith("no audit log")
    return render(
        request,
        "coord_error.html",
        status=404 if no_log else _status_of(error),
        title="No audit log here" if no_log else title,
        message=error.message,
        hint=NO_LOG_HINT if no_log else error.hint,
        no_log=no_log,
    )


def _agency(request: web.Request) -> Agency:
    agency = getattr(request.app[DESK], "agency", None)
    assert isinstance(agency, Agency)
    return agency


async def _in_thread(work: Callable[[], T]) -> T:
    return await asyncio.to_thread(work)


# --- overview ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    size: int
    checkpoint_size: int
    checkpoint_signed: bool
    recent: list[tuple[int, LogEntry]]
    overdue: reports.OverdueReport
    flags: list[HandlingFlag]
    equivocations: list[reports.Equivocation]


def overview_of(agency: Agency, *, now_ms: int) -> Overview:
    """What the overview shows, from one read of the log."""
    audit.existing_log(agency)
    overdue = audit.overdue(agency, now_ms=now_ms)
    with audit.open_log(agency) as store:
        size = store.size
        latest = store.latest_checkpoint()
        recent = [
            (i, e)
            for i, e in store.entries(max(0, size - 400), size)
            if e.entry_type in ("message", "retraction")
        ][-RECENT:][::-1]
        flags: list[HandlingFlag] = []
        for index, entry in store.entries(max(0, size - FLAG_SCAN), size):
            if entry.refs and entry.entry_type != "receipt":
                flags.extend(handling_flags(store, index, entry))
        equivocations = reports.report(store, since_ms=0).equivocations
    return Overview(
        size=size,
        checkpoint_size=0 if latest is None else latest[0],
        checkpoint_signed=latest is not None,
        recent=recent,
        overdue=overdue,
        flags=flags,
        equivocations=equivocations,
    )


async def overview_page(request: web.Request) -> web.Response:
    agency = _agency(request)
    now = time.time_ns() // 1_000_000
    try:
        view = await _in_thread(lambda: overview_of(agency, now_ms=now))
    except TfshareError as error:
        return _failed(request, error, title="The audit log could not be read")
    return render(
        request,
        "coord_overview.html",
        view=view,
        iso=iso,
        duration=reports.duration,
        trace_href=trace_href,
        hex_href=hex_href,
        sender_href=sender_href,
        relation_of=_relation_of,
    )


async def trace_lookup(request: web.Request) -> web.StreamResponse:
    """The overview's "trace a message" form: on to the trace page of what was typed."""
    ref = request.query.get("ref", "").strip()
    if not ref:
        raise web.HTTPSeeOther("/coord")
    raise web.HTTPSeeOther("/coord/trace/" + quote(ref, safe=":"))


# --- trace ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptRow:
    recipient: str
    outcome: str  # "accepted", "rejected CODE", or "no receipt"
    received_ms: int | None
    delay_ms: int | None
    index: int | None


@dataclass(frozen=True)
class TraceView:
    trace: audit.Trace
    lineage: Any  # charts' Markup
    receipts: Any
    receipt_rows: list[ReceiptRow]
    hidden: int  # lineage messages beyond what the graph shows
    parents: list[tuple[str, LogEntry | None, bytes]] = field(default_factory=list)


def _relation_of(entry: LogEntry) -> str:
    names = [RELATIONS.get(r, str(r)) for r, _, _ in entry.refs if r != RECEIPT_OF]
    return ", ".join(dict.fromkeys(names)) or "original"


def _logged_parent(store: AuditStore, msg_id: bytes, env_hash: bytes) -> LogEntry | None:
    found = [e for _, e in store.find(msg_id) if e.msg_id == msg_id and e.entry_type != "receipt"]
    exact = [e for e in found if e.env_sha256 == env_hash]
    chosen = exact or found
    return chosen[0] if chosen else None


def lineage_graph(
    store: AuditStore, entry: LogEntry, flagged: set[bytes]
) -> tuple[list[charts.Node], list[charts.Edge], int]:
    """The message's ancestors and descendants in the log, ``LINEAGE_DEPTH`` generations each
    way and at most ``LINEAGE_NODES`` messages; returns the nodes, the edges and how many
    more messages the walk found but left out."""
    nodes: dict[str, charts.Node] = {}
    edges: list[charts.Edge] = []
    left_out = 0

    def add(e: LogEntry | None, msg_id: bytes, depth: int, *, focus: bool = False) -> bool:
        nonlocal left_out
        key = msg_id.hex()
        if key in nodes:
            return False
        if len(nodes) >= LINEAGE_NODES:
            left_out += 1
            return False
        nodes[key] = charts.Node(
            key=key,
            sender=e.sender if e is not None else "unknown sender",
            relation=_relation_of(e) if e is not None else "",
            depth=depth,
            label=key[:8],
            focus=focus,
            flagged=msg_id in flagged,
            logged=e is not None,
        )
        return True

    add(entry, entry.msg_id, 0, focus=True)
    up: list[tuple[LogEntry, int]] = [(entry, 0)]
    while up:
        child, depth = up.pop(0)
        if depth <= -LINEAGE_DEPTH:
            continue
        for relation, parent_id, parent_hash in child.refs:
            if relation == RECEIPT_OF:
                continue
            parent = _logged_parent(store, parent_id, parent_hash)
            if add(parent, parent_id, depth - 1) and parent is not None:
                up.append((parent, depth - 1))
            if parent_id.hex() in nodes:
                edges.append(charts.Edge(parent_id.hex(), child.msg_id.hex()))
    down: list[tuple[LogEntry, int]] = [(entry, 0)]
    while down:
        parent, depth = down.pop(0)
        if depth >= LINEAGE_DEPTH:
            continue
        for _, other in store.referencing(parent.msg_id):
            if other.entry_type == "receipt":
                continue
            if not any(pid == parent.msg_id for r, pid, _ in other.refs if r != RECEIPT_OF):
                continue
            if add(other, other.msg_id, depth + 1):
                down.append((other, depth + 1))
            if other.msg_id.hex() in nodes:
                edge = charts.Edge(parent.msg_id.hex(), other.msg_id.hex())
                if edge not in edges:
                    edges.append(edge)
    return list(nodes.values()), edges, left_out


def receipt_rows(t: audit.Trace) -> list[ReceiptRow]:
    """One row per recipient in the header (its receipts, or "no receipt"), then receipts
    from anyone else, as ``audit trace`` lists them."""
    sent = t.entry.ts_ms
    named = list(dict.fromkeys(t.facts.recipients)) if t.facts is not None else []
    rows: list[ReceiptRow] = []

    def row(who: str, index: int, words: Any) -> ReceiptRow:
        outcome = (
            "accepted"
            if words.outcome == "accepted"
            else (f"rejected {words.code or 'without a code'}")
        )
        return ReceiptRow(who, outcome, words.received_ms, words.received_ms - sent, index)

    for who in named:
        mine = [(i, w) for i, w in t.receipts if w.receiver == who]
        if not mine:
            rows.append(ReceiptRow(who, "no receipt", None, None, None))
        rows.extend(row(who, i, w) for i, w in mine)
    rows.extend(row(w.receiver, i, w) for i, w in t.receipts if w.receiver not in named)
    return rows


def trace_view(agency: Agency, ref: str) -> TraceView:
    """The trace (``audit.trace``: the inclusion proof verified against the latest signed
    checkpoint) and its pictures."""
    t = audit.trace(agency, ref)
    flagged = {f.child.msg_id for f in t.flags}
    with audit.open_log(agency) as store:
        nodes, edges, hidden = lineage_graph(store, t.entry, flagged)
    rows = receipt_rows(t)
    sender = t.entry.sender
    points = [
        charts.ReceiptPoint(
            f"{r.recipient} (sender)" if r.recipient == sender else r.recipient,
            r.delay_ms,
            "accepted" if r.outcome == "accepted" else "rejected",
            None if r.outcome in ("accepted", "no receipt") else r.outcome.split(" ", 1)[1],
        )
        for r in rows
    ]
    return TraceView(
        trace=t,
        lineage=charts.lineage_svg(nodes, edges, title=f"lineage of {t.entry.msg_id.hex()}"),
        receipts=charts.receipts_svg(points, title="receipts by time since sending"),
        receipt_rows=rows,
        hidden=hidden,
        parents=t.parents,
    )


async def trace_page(request: web.Request) -> web.Response:
    agency = _agency(request)
    ref = request.match_info["ref"]
    try:
        view = await _in_thread(lambda: trace_view(agency, ref))
    except TfshareError as error:
        return _failed(request, error, title="No trace for this message")
    t = view.trace
    return render(
        request,
        "coord_trace.html",
        view=view,
        t=t,
        e=t.entry,
        facts=t.facts,
        iso=iso,
        duration=reports.duration,
        trace_href=trace_href,
        hex_href=hex_href,
        evidence=evidence_href(t.entry),
    )


# --- report --------------------------------------------------------------------------------


def _default_since(now_ms: int) -> str:
    day = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC).date()
    return (day - dt.timedelta(days=DEFAULT_PERIOD_DAYS)).isoformat()


async def report_page(request: web.Request) -> web.Response:
    agency = _agency(request)
    since = request.query.get("since", "").strip() or _default_since(time.time_ns() // 1_000_000)
    until = request.query.get("until", "").strip() or None
    try:
        result = await _in_thread(lambda: audit.report(agency, since=since, until=until))
    except UsageError as error:  # the period as typed: the form again, with what is wrong
        return render(
            request,
            "coord_report.html",
            status=400,
            since=since,
            until=until or "",
            result=None,
            charts=[],
            error=error,
            iso=iso,
            duration=reports.duration,
        )
    except TfshareError as error:
        return _failed(request, error, title="No report")
    return render(
        request,
        "coord_report.html",
        since=since,
        until=until or "",
        result=result,
        charts=charts.report_charts(result),
        error=None,
        iso=iso,
        duration=reports.duration,
    )


# --- evidence ------------------------------------------------------------------------------

CHECK_README: Final = """\
Evidence that a message is in the task force's audit log
==========================================================

message   {msg_id}
sender    {sender}
channel   {channel}
sent      {sent}
log entry {index}, proved against the signed checkpoint of size {size}

Files
  {proof}    the log entry, its inclusion proof and the signed checkpoint (tfshare audit prove)
  tf.roster  the task force's roster as the coordinator held it, naming the keys that sign
             checkpoints
{envelope_line}
Check it offline with the task force anchor YOU pinned (not one handed over with this zip):

  tfshare audit check {proof} --roster tf.roster --anchor YOUR-tf.anchor{envelope_option}

With your agency's profile the roster is also checked against the one your agency trusts
(a newer roster's revocations and witness threshold apply).
"""


@dataclass(frozen=True)
class Evidence:
    filename: str
    data: bytes


def _bundle_of(
    agency: Agency, ref: str, broker_url: str | None
) -> tuple[LogEntry, int, int, bytes, bytes]:
    """(entry, index, checkpoint size, the bundle ``audit prove`` writes, the roster file).
    Where the roster asks for witnesses, their cosignatures are fetched from the broker the
    agent uses (as ``audit prove`` does), on this worker thread's own connection."""
    t = audit.trace(agency, ref)
    named = f"{t.entry.sender}:{t.entry.msg_id.hex()}"

    def cosignatures() -> list[tuple[str, bytes]]:
        assert broker_url is not None
        return audit_remote.fetch_cosignatures(agency, url=broker_url)

    with tempfile.TemporaryDirectory(prefix="tfshare-evidence-") as tmp:
        out = Path(tmp) / "x.tfproof"
        size = audit.prove(
            agency, named, out, cosignatures=cosignatures if broker_url is not None else None
        )
        bundle = out.read_bytes()
    return t.entry, t.index, size, bundle, read_kind(agency.roster_path, "roster")


def _held_envelope(agency: Agency, entry: LogEntry) -> bytes | None:
    """The envelope itself, if this agency holds exactly the logged one (received it, or
    sent it): its SHA-256 must be the entry's. On the loop's thread (the state database)."""
    received, own = agency.store.find_by_prefix(entry.msg_id.hex())
    for item in received:
        if item.msg_id == entry.msg_id and item.env_hash == entry.env_sha256:
            return item.envelope
    for sent in own:
        if sent.msg_id == entry.msg_id and sent.env_hash == entry.env_sha256:
            return sent.envelope
    return None


def evidence_zip(
    entry: LogEntry, index: int, size: int, bundle: bytes, roster: bytes, envelope: bytes | None
) -> Evidence:
    """The zip: the proof bundle, the roster, the envelope if held, and how to check them."""
    stem = f"{entry.msg_id.hex()[:16]}"
    proof = f"{stem}.tfproof"
    text = CHECK_README.format(
        msg_id=entry.msg_id.hex(),
        sender=visible.escape(entry.sender),
        channel=visible.escape(entry.channel),
        sent=iso(entry.ts_ms),
        index=index,
        size=size,
        proof=proof,
        envelope_line=(
            f"  {stem}.tfenv  the envelope itself (signed by its sender; still encrypted)\n"
            if envelope is not None
            else "  (no envelope: this agency neither received nor sent it; ask a recipient)\n"
        ),
        envelope_option=f" --envelope {stem}.tfenv" if envelope is not None else "",
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(proof, bundle)
        zf.writestr("tf.roster", roster)
        if envelope is not None:
            zf.writestr(f"{stem}.tfenv", envelope)
        zf.writestr("README.txt", text)
    return Evidence(f"tfshare-evidence-{stem}.zip", out.getvalue())


async def evidence_download(request: web.Request) -> web.StreamResponse:
    agency = _agency(request)
    ref = request.match_info["ref"]
    url = getattr(getattr(request.app[DESK], "agent", None), "url", None)
    broker_url = url if isinstance(url, str) else None
    try:
        entry, index, size, bundle, roster = await _in_thread(
            lambda: _bundle_of(agency, ref, broker_url)
        )
        envelope = _held_envelope(agency, entry)
    except TfshareError as error:
        return _failed(request, error, title="No evidence bundle for this message")
    evidence = evidence_zip(entry, index, size, bundle, roster, envelope)
    return web.Response(
        body=evidence.data,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{evidence.filename}"'},
    )


def shown_list(values: Sequence[str]) -> str:
    return ", ".join(visible.escape(v) for v in values)
