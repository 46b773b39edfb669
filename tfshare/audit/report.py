"""What coordinators ask of the audit log beyond one message: overdue replies and who sent,
received and rejected how much.

Owns: ``overdue`` / ``overdue_report`` (requests whose response-class deadline passed without
a reply), ``report`` (per agency and channel: sent, received, rejected by code, median
receipt delay; and the equivocations: one sender, one msg_id, different envelopes) and their
renderings (``overdue_json``, ``overdue_table``, ``report_json``,
``report_rows``, ``report_markdown``).

Pure: no clock (``now_ms`` is passed in), no files, no output. The functions take the audit
store (or anything with its read API, ``AuditReader``) and only read it: the log entries, the
receipts' words and the message facts kept beside them. Each call reads the log once, in
windows, so its cost grows with the log and its memory with the receipts and facts.

Overdue replies (EU Directive 2023/977 time limits, counted from receipt):

- A request is a message entry whose facts give ``response_class`` urgent-8h (8 hours),
  urgent-3d (3 calendar days, 72 hours) or 7d (7 days); "none", an unknown class or no class
  asks for nothing. Every recipient in the header except the sender owes a reply.
- The deadline counts from that recipient's receipt for exactly that envelope (msg_id and
  env hash): its first accepted receipt, else its last rejected one. With no receipt at all it
  counts from the message's own time (``received_ms`` None, shown as "no receipt"): a
  recipient that never acknowledged must not escape its deadline.
- A reply is a message entry from that recipient with a ref of relation 6 (reply) to the
  request's msg_id and env hash; a reply from any other agency does not count. Any reply in
  the log closes the obligation, even one sent after the deadline: the command lists what is
  still open, not how late each answer was.
- A request its sender retracted (a retraction from the sender with a relation-5 ref to it)
  is withdrawn: nothing is owed.
- A recipient whose receipt rejected the message (and never accepted it) could not read it
  and so owes nothing; once the deadline passes unanswered it is listed with the status
  "rejected <code>" instead of "overdue", so the coordinator knows the requester must resend,
  not chase. Either way a row appears only once ``now_ms`` is past the deadline.
- The auditor reads a body only where it is a recipient. Messages whose body it could not
  read (or logged without facts) may or may not be requests: they are counted as ``unread``
  so the blind spot is said, never silently dropped.

Report (``since_ms`` <= t < ``until_ms``, half-open; ``until_ms`` None: no end):

- sent: message and retraction entries by the agency, by their ``ts_ms``; messages on the
  receipts channel are receipts (counted as such) and are left out.
- received / rejected: receipts by the agency as receiver, by their ``received_ms``, under the
  channel of the message they acknowledge (matched by msg_id and env hash; a message the log
  does not hold counts under channel "(unlogged)"). Rejected receipts count per code.
- median receipt delay: receipt ``received_ms`` minus message ``ts_ms`` over all of the
  agency's receipts on that channel (accepted and rejected: both say when it was processed),
  as an exact ``statistics.median`` always returned as a float in ms (a half millisecond at
  most from an integer); None without a receipt of a logged message. Clocks differ between
  agencies, so a small negative delay is possible and is kept as it is.
- totals: the same over every row (the total median is over all receipts, not of the rows).
- equivocations: every (sender, msg_id) under which the log holds two or more different
  envelopes (message, retraction or receipt entries; a redelivery has the same bytes and is
  logged once), when one of them was sent (``ts_ms``) in the period. Listed apart from the
  rows (JSON ``equivocations``, a Markdown section when there is one; the CSV rows keep their
  columns), and the same judgment as the service's ``equivocation`` event and the
  ``E_EQUIVOCATION`` flag of ``audit trace``.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from tfshare.audit.entry import RETRACT, LogEntry
from tfshare.audit.logstore import MessageFacts, ReceiptWords
from tfshare.protocol import RECEIPTS_CHANNEL

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
# The response classes that ask for a reply, and how long the recipient has from receipt.
RESPONSE_LIMITS: Final = {"urgent-8h": 8 * HOUR_MS, "urgent-3d": 3 * DAY_MS, "7d": 7 * DAY_MS}
REPLY: Final = 6  # the envelope's relation number for "reply"
UNLOGGED: Final = "(unlogged)"  # the channel of receipts for messages the log does not hold
ALL: Final = "(all)"  # agency and channel of the totals row
# Entries read per query: bounded memory whatever the log's size.
_WINDOW: Final = 20_000


class AuditReader(Protocol):
    """The read API of ``AuditStore`` these functions use."""

    @property
    def size(self) -> int: ...

    def entries(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, LogEntry]]: ...

    def all_receipts(self) -> list[tuple[int, ReceiptWords]]: ...

    def all_facts(self) -> list[tuple[int, MessageFacts]]: ...


def _scan(store: AuditReader) -> Iterator[tuple[int, LogEntry]]:
    size = store.size
    for start in range(0, size, _WINDOW):
        yield from store.entries(start, min(start + _WINDOW, size))


# --- overdue replies -------------------------------------------------------------------------


@dataclass(frozen=True)
class Overdue:
    """One recipient that owes a reply to one request, past the deadline."""

    index: int  # the request's log entry
    msg_id: bytes
    requester: str
    recipient: str
    response_class: str
    channel: str
    sent_ms: int
    received_ms: int | None  # the recipient's receipt; None: no receipt (counted from sent)
    deadline_ms: int
    overdue_by_ms: int
    status: str  # "overdue", or "rejected <code>": the recipient refused the message

    @property
    def rejected(self) -> bool:
        return self.status != "overdue"


@dataclass(frozen=True)
class OverdueReport:
    """The overdue rows, and what the auditor could and could not judge."""

    now_ms: int
    rows: list[Overdue]  # most overdue first
    requests: int  # messages asking for a reply (a known response class other than none)
    withdrawn: int  # of those, retracted by their sender
    unread: int  # messages whose body the auditor could not read: requests or not, unknown


def overdue(store: AuditReader, *, now_ms: int) -> list[Overdue]:
    """The recipients past their reply deadline, most overdue first (module docstring)."""
    return overdue_report(store, now_ms=now_ms).rows


def overdue_report(store: AuditReader, *, now_ms: int) -> OverdueReport:
    """``overdue`` with the counts a coordinator needs to read it: requests judged, withdrawn,
    and messages the auditor could not judge."""
    facts = dict(store.all_facts())
    requests: list[tuple[int, LogEntry, str]] = []
    # (parent msg_id, parent env hash, who) of every reply and of every retraction.
    replies: set[tuple[bytes, bytes, str]] = set()
    retractions: set[tuple[bytes, bytes, str]] = set()
    unread = 0
    for index, entry in _scan(store):
        if entry.entry_type == "retraction":
            retractions.update((p, h, entry.sender) for r, p, h in entry.refs if r == RETRACT)
            continue
        if entry.entry_type != "message" or entry.channel == RECEIPTS_CHANNEL:
            continue
        replies.update((p, h, entry.sender) for r, p, h in entry.refs if r == REPLY)
        known = facts.get(index)
        if known is None or not known.read:
            unread += 1
        elif known.response_class in RESPONSE_LIMITS:
            requests.append((index, entry, known.response_class))

    receipts: dict[tuple[bytes, bytes, str], list[ReceiptWords]] = defaultdict(list)
    for _, words in store.all_receipts():  # in log order
        receipts[(words.msg_id, words.env_hash, words.receiver)].append(words)

    rows: list[Overdue] = []
    withdrawn = 0
    for index, entry, response_class in requests:
        key = (entry.msg_id, entry.env_sha256)
        if (*key, entry.sender) in retractions:
            withdrawn += 1
            continue
        for recipient in dict.fromkeys(facts[index].recipients):
            if recipient == entry.sender or (*key, recipient) in replies:
                continue
            row = _judge(index, entry, response_class, recipient,
                         receipts.get((*key, recipient), []), now_ms)  # fmt: skip
            if row is not None:
                rows.append(row)
    rows.sort(key=lambda r: (-r.overdue_by_ms, r.msg_id, r.recipient))
    return OverdueReport(now_ms, rows, len(requests), withdrawn, unread)


def _judge(
    index: int,
    entry: LogEntry,
    response_class: str,
    recipient: str,
    receipts: list[ReceiptWords],
    now_ms: int,
) -> Overdue | None:
    accepted = [w for w in receipts if w.outcome == "accepted"]
    rejected = [w for w in receipts if w.outcome != "accepted"]
    status = "overdue"
    received: int | None = None
    if accepted:
        # The clock starts at the first time the recipient could read it.
        received = min(w.received_ms for w in accepted)
    elif rejected:
        received = rejected[-1].received_ms
        status = f"rejected {rejected[-1].code or 'without a code'}"
    deadline = (entry.ts_ms if received is None else received) + RESPONSE_LIMITS[response_class]
    if now_ms <= deadline:
        return None
    return Overdue(
        index=index,
        msg_id=entry.msg_id,
        requester=entry.sender,
        recipient=recipient,
        response_class=response_class,
        channel=entry.channel,
        sent_ms=entry.ts_ms,
        received_ms=received,
        deadline_ms=deadline,
        overdue_by_ms=now_ms - deadline,
        status=status,
    )


def overdue_json(result: OverdueReport) -> dict[str, Any]:
    """The whole result as one JSON object (times as RFC 3339 UTC, durations in ms)."""
    return {
        "now": iso(result.now_ms),
        "requests": result.requests,
        "withdrawn": result.withdrawn,
        "unread": result.unread,
        "overdue": [
            {
                "index": row.index,
                "msg_id": row.msg_id.hex(),
                "requester": row.requester,
                "recipient": row.recipient,
                "response_class": row.response_class,
                "channel": row.channel,
                "sent": iso(row.sent_ms),
                "received": None if row.received_ms is None else iso(row.received_ms),
                "deadline": iso(row.deadline_ms),
                "overdue_by_ms": row.overdue_by_ms,
                "status": row.status,
            }
            for row in result.rows
        ],
    }


_OVERDUE_HEADER: Final = ("OVERDUE BY", "MESSAGE", "CLASS", "CHANNEL", "REQUESTER",
                          "RECIPIENT", "RECEIVED", "DEADLINE", "STATUS")  # fmt: skip


def overdue_table(rows: list[Overdue]) -> list[str]:
    """Aligned lines for people: a header, then one line per row (none without rows)."""
    if not rows:
        return []
    cells = [_OVERDUE_HEADER] + [
        (
            duration(row.overdue_by_ms),
            row.msg_id.hex(),
            row.response_class,
            row.channel,
            row.requester,
            row.recipient,
            "no receipt" if row.received_ms is None else iso(row.received_ms),
            iso(row.deadline_ms),
            row.status,
        )
        for row in rows
    ]
    return _align(cells)


# --- sent, received, rejected ----------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """What one agency did on one channel in the period (or the totals)."""

    agency: str
    channel: str
    sent: int = 0
    received: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    median_delay_ms: float | None = None

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_code.values())


@dataclass(frozen=True)
class Equivocation:
    """Different envelopes one sender logged under one msg_id."""

    sender: str
    msg_id: bytes
    channels: tuple[str, ...]  # of the envelopes, in log order (usually one)
    indices: tuple[int, ...]  # every entry of that sender and msg_id, in log order


@dataclass(frozen=True)
class Report:
    since_ms: int
    until_ms: int | None
    rows: list[Tally]  # by agency, then channel
    totals: Tally
    equivocations: list[Equivocation] = field(default_factory=list)  # by first index


@dataclass
class _Counts:
    sent: int = 0
    received: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    delays: list[int] = field(default_factory=list)


def report(store: AuditReader, *, since_ms: int, until_ms: int | None = None) -> Report:
    """Per (agency, channel) over ``since_ms`` <= t < ``until_ms`` (module docstring)."""

    def within(ms: int) -> bool:
        return ms >= since_ms and (until_ms is None or ms < until_ms)

    counts: dict[tuple[str, str], _Counts] = defaultdict(_Counts)
    # (msg_id, env hash) -> (channel, sent ms) of every logged message, for the receipts.
    messages: dict[tuple[bytes, bytes], tuple[str, int]] = {}
    # (sender, msg_id) -> (index, env hash, channel, sent ms) of every envelope entry.
    by_id: dict[tuple[str, bytes], list[tuple[int, bytes, str, int]]] = defaultdict(list)
    for index, entry in _scan(store):
        if entry.entry_type not in ("message", "retraction", "receipt"):
            continue
        by_id[(entry.sender, entry.msg_id)].append(
            (index, entry.env_sha256, entry.channel, entry.ts_ms)
        )
        if entry.entry_type == "receipt":
            continue
        messages[(entry.msg_id, entry.env_sha256)] = (entry.channel, entry.ts_ms)
        if entry.channel != RECEIPTS_CHANNEL and within(entry.ts_ms):
            counts[(entry.sender, entry.channel)].sent += 1
    for _, words in store.all_receipts():
        if not within(words.received_ms):
            continue
        logged = messages.get((words.msg_id, words.env_hash))
        channel = UNLOGGED if logged is None else logged[0]
        if channel == RECEIPTS_CHANNEL:
            continue  # a receipt of a receipt: not a delivery
        tally = counts[(words.receiver, channel)]
        if words.outcome == "accepted":
            tally.received += 1
        else:
            tally.rejected[words.code or "(no code)"] += 1
        if logged is not None:
            tally.delays.append(words.received_ms - logged[1])

    rows = [_tally(agency, channel, c) for (agency, channel), c in sorted(counts.items())]
    everything = _Counts()
    for c in counts.values():
        everything.sent += c.sent
        everything.received += c.received
        everything.delays.extend(c.delays)
        for code, n in c.rejected.items():
            everything.rejected[code] += n
    equivocations = [
        Equivocation(
            sender,
            msg_id,
            tuple(dict.fromkeys(channel for _, _, channel, _ in seen)),
            tuple(index for index, _, _, _ in seen),
        )
        for (sender, msg_id), seen in by_id.items()
        if len({env for _, env, _, _ in seen}) > 1 and any(within(ts) for *_, ts in seen)
    ]
    equivocations.sort(key=lambda e: e.indices[0])
    return Report(since_ms, until_ms, rows, _tally(ALL, ALL, everything), equivocations)


def _tally(agency: str, channel: str, c: _Counts) -> Tally:
    return Tally(
        agency,
        channel,
        sent=c.sent,
        received=c.received,
        rejected_by_code=dict(sorted(c.rejected.items())),
        median_delay_ms=float(statistics.median(c.delays)) if c.delays else None,
    )


def report_json(result: Report) -> dict[str, Any]:
    """The report as one JSON object: the period, a row per agency and channel, the totals."""

    def row(t: Tally) -> dict[str, Any]:
        return {
            "agency": t.agency,
            "channel": t.channel,
            "sent": t.sent,
            "received": t.received,
            "rejected": t.rejected,
            "rejected_by_code": t.rejected_by_code,
            "median_delay_ms": t.median_delay_ms,
        }

    return {
        "since": iso(result.since_ms),
        "until": None if result.until_ms is None else iso(result.until_ms),
        "rows": [row(t) for t in result.rows],
        "totals": row(result.totals),
        "equivocations": [
            {
                "sender": e.sender,
                "msg_id": e.msg_id.hex(),
                "channels": list(e.channels),
                "entries": list(e.indices),
            }
            for e in result.equivocations
        ],
    }


REPORT_COLUMNS: Final = ("agency", "channel", "sent", "received", "rejected",
                         "rejected_by_code", "median_delay_ms")  # fmt: skip


def report_rows(result: Report) -> list[dict[str, str | int | float | None]]:
    """Flat rows (``REPORT_COLUMNS``) for CSV: one per agency and channel, then the totals
    (agency and channel "(all)"). ``rejected_by_code`` reads "CODE=n;CODE=n"."""
    return [
        {
            "agency": t.agency,
            "channel": t.channel,
            "sent": t.sent,
            "received": t.received,
            "rejected": t.rejected,
            "rejected_by_code": ";".join(f"{c}={n}" for c, n in t.rejected_by_code.items()),
            "median_delay_ms": t.median_delay_ms,
        }
        for t in [*result.rows, result.totals]
    ]


def report_markdown(result: Report) -> str:
    """The report as a Markdown document (a heading, the period, one table)."""
    until = "now" if result.until_ms is None else iso(result.until_ms)
    lines = [
        "# Audit report",
        "",
        f"From {iso(result.since_ms)} (inclusive) to {until} (exclusive). Sent counts "
        "messages and retractions by their send time; received and rejected count receipts "
        "by their time of receipt; the delay is from sending to receipt.",
        "",
        "| agency | channel | sent | received | rejected | median receipt delay |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for t in [*result.rows, result.totals]:
        rejected = str(t.rejected)
        if t.rejected_by_code:
            rejected += " (" + ", ".join(f"{c} {n}" for c, n in t.rejected_by_code.items()) + ")"
        delay = "-" if t.median_delay_ms is None else duration(t.median_delay_ms)
        name, channel = ("**all**", "") if t.agency == ALL else (t.agency, t.channel)
        lines.append(f"| {name} | {channel} | {t.sent} | {t.received} | {rejected} | {delay} |")
    if not result.rows:
        lines += ["", "Nothing was sent or received in this period."]
    if result.equivocations:
        lines += [
            "",
            f"## Equivocations: {len(result.equivocations)}",
            "",
            "A sender signed different envelopes under one message id (E_EQUIVOCATION): "
            "readers may have been shown different messages. Every envelope is in the log.",
            "",
            "| sender | msg_id | channels | log entries |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {e.sender} | {e.msg_id.hex()} | {', '.join(e.channels)} | "
            f"{', '.join(map(str, e.indices))} |"
            for e in result.equivocations
        ]
    return "\n".join(lines) + "\n"


# --- formatting ------------------------------------------------------------------------------


def iso(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, as the other audit commands print times (exact:
    no float rounding)."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds")


def duration(ms: float) -> str:
    """A duration for people: "850 ms", "4.2 s", "12 min 5 s", "5 h 12 min", "3 d 4 h"."""
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    if ms < 1000:
        return f"{sign}{ms:g} ms"
    if ms < 60_000:
        return f"{sign}{ms / 1000:.1f} s"
    seconds = int(ms // 1000)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{sign}{days} d {hours} h"
    if hours:
        return f"{sign}{hours} h {minutes} min"
    return f"{sign}{minutes} min {seconds} s"


def _align(cells: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]  # fmt: skip
