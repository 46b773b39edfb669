"""Overdue replies and the period report (tfshare.audit.report) over a real audit log.

Every test appends hand-built entries, receipts' words and message facts to a real
``AuditStore`` in a temporary directory, then asserts the exact rows a coordinator would see.
The times are chosen so every deadline, delay and median can be checked by hand (the
comments say how).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tfkit import NOW_MS, build_taskforce

from tfshare.audit import report as R
from tfshare.audit.entry import RECEIPT_OF, LogEntry
from tfshare.audit.logstore import AuditStore, MessageFacts, ReceiptWords
from tfshare.audit.service import message_record
from tfshare.errors import ExitCode, UsageError
from tfshare.workflows.audit import parse_when

H: Final = 3_600_000
T0: Final = 1_795_000_000_000
READ: Final = "tf.alert/1"  # facts with a schema: the auditor read the body


def digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def other_envelope(entry: LogEntry) -> LogEntry:
    """``entry`` with another env hash: a ref to it names the same msg_id, another envelope."""
    fields = {name: getattr(entry, name) for name in entry.__struct_fields__}
    return LogEntry(**{**fields, "env_sha256": digest("another envelope", entry.msg_id)})


@dataclass
class Log:
    """Builds a log: each ``message``/``receipt`` appends one entry (with its facts or words)."""

    store: AuditStore
    count: int = 0
    names: dict[str, LogEntry] = field(default_factory=dict)

    def message(
        self,
        name: str,
        sender: str,
        *,
        ts: int,
        channel: str = "alerts",
        to: Sequence[str] = (),
        response: str | None = None,
        read: bool = True,
        facts: bool = True,
        refs: Sequence[tuple[int, LogEntry]] = (),
        retraction: bool = False,
        env: bytes | None = None,
    ) -> LogEntry:
        entry = LogEntry(
            entry_type="retraction" if retraction else "message",
            msg_id=digest("msg", name)[:16],
            sender=sender,
            sender_kid=digest("kid", sender)[:8],
            taskforce="nl-north",
            channel=channel,
            ts_ms=ts,
            env_sha256=env or digest("env", name),
            refs=[(relation, parent.msg_id, parent.env_sha256) for relation, parent in refs],
            observed_ms=ts + 50,
        )
        known = MessageFacts(
            (sender, *to),
            schema=READ if read else None,
            no_forward=False if read else None,
            handling_code="H1" if read else None,
            response_class=response if read else None,
        )
        assert self.store.append([entry], (), [known] if facts else ()) == [self.count]
        self.count += 1
        self.names[name] = entry
        return entry

    def receipt(
        self,
        receiver: str,
        of: LogEntry,
        *,
        at: int,
        outcome: str = "accepted",
        code: str | None = None,
        env_hash: bytes | None = None,
    ) -> None:
        words = ReceiptWords(receiver, of.msg_id, env_hash or of.env_sha256, outcome, code, at)
        entry = LogEntry(
            entry_type="receipt",
            msg_id=digest("receipt", self.count)[:16],
            sender=receiver,
            sender_kid=digest("kid", receiver)[:8],
            taskforce="nl-north",
            channel="receipts",
            ts_ms=at + 10,
            env_sha256=digest("receipt env", self.count),
            refs=[(RECEIPT_OF, words.msg_id, words.env_hash)],
            observed_ms=at + 60,
        )
        assert self.store.append([entry], [words]) == [self.count]
        self.count += 1


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    with AuditStore(tmp_path / "audit.db") as store:
        yield Log(store)


# --- overdue -------------------------------------------------------------------------------


def test_overdue_rows_are_exact_and_most_overdue_first(log: Log) -> None:
    """One urgent-8h request from police to eight agencies, each in another situation, plus
    requests that must not show up; at T0 + 20 h."""
    req1 = log.message("req1", "police", ts=T0, response="urgent-8h",
                       to=("ngo", "labour", "fiu", "shelter", "hotline", "border"))  # fmt: skip
    log.receipt("ngo", req1, at=T0 + 1 * H)
    log.message("ngo-reply", "ngo", ts=T0 + 3 * H, refs=[(6, req1)])  # replied in time
    log.receipt("labour", req1, at=T0 + 2 * H)  # deadline T0+10h (the first accepted receipt)
    log.receipt("labour", req1, at=T0 + 4 * H)
    log.receipt("fiu", req1, at=T0 + 1 * H)
    # fiu answers: that closes fiu's obligation, not labour's.
    log.message("fiu-reply", "fiu", ts=T0 + 5 * H, refs=[(6, req1)])
    # shelter sends nothing: the deadline counts from sending, T0+8h.
    log.receipt("hotline", req1, at=T0 + H + H // 2, outcome="rejected", code="E_BAD_SIG")
    # border rejects, fetches the schema, then accepts: it owes a reply from T0+3h.
    log.receipt("border", req1, at=T0 + 1 * H, outcome="rejected", code="E_SCHEMA")
    log.receipt("border", req1, at=T0 + 3 * H)

    # Not yet due: urgent-3d from labour's receipt at T0+1h, due T0+73h.
    req2 = log.message("req2", "labour", ts=T0, response="urgent-3d", to=("police",))
    log.receipt("police", req2, at=T0 + 1 * H)
    # Answered late (7d, received T0-10d+1h, reply at T0): answered, so not listed.
    req3 = log.message("req3", "police", ts=T0 - 240 * H, response="7d", to=("ngo",))
    log.receipt("ngo", req3, at=T0 - 239 * H)
    log.message("ngo-late-reply", "ngo", ts=T0, refs=[(6, req3)])
    # No reply wanted, never a row.
    log.message("req4", "police", ts=T0 - 100 * H, response="none", to=("ngo",))
    # Withdrawn by its sender: nothing owed. Retracted by someone else: still owed.
    req6 = log.message("req6", "police", ts=T0, response="urgent-8h", to=("ngo",))
    log.message("req6-retraction", "police", ts=T0 + H, refs=[(5, req6)], retraction=True)
    req7 = log.message("req7", "police", ts=T0 + 1 * H, response="urgent-8h", to=("ngo",))
    log.message("req7-bad-retraction", "ngo", ts=T0 + 2 * H, refs=[(5, req7)], retraction=True)
    # A "reply" that names another envelope under req8's msg_id does not answer req8.
    req8 = log.message("req8", "police", ts=T0, response="urgent-8h", to=("ngo",))
    log.receipt("ngo", req8, at=T0 + H // 2)
    log.message("ngo-wrong-reply", "ngo", ts=T0 + H,
                refs=[(6, other_envelope(req8))])  # fmt: skip
    # Bodies the auditor could not read (or has no facts for): counted, never judged.
    log.message("unread", "police", ts=T0, response="urgent-8h", read=False, to=("ngo",))
    log.message("no-facts", "police", ts=T0, facts=False)

    now = T0 + 20 * H
    result = R.overdue_report(log.store, now_ms=now)
    got = [(r.msg_id, r.recipient, r.received_ms, r.deadline_ms, r.overdue_by_ms, r.status)
           for r in result.rows]  # fmt: skip
    assert got == [
        (req1.msg_id, "shelter", None, T0 + 8 * H, 12 * H, "overdue"),
        (req8.msg_id, "ngo", T0 + H // 2, T0 + 8 * H + H // 2, 11 * H + H // 2, "overdue"),
        (req7.msg_id, "ngo", None, T0 + 9 * H, 11 * H, "overdue"),
        (req1.msg_id, "hotline", T0 + H + H // 2, T0 + 9 * H + H // 2, 10 * H + H // 2,
         "rejected E_BAD_SIG"),
        (req1.msg_id, "labour", T0 + 2 * H, T0 + 10 * H, 10 * H, "overdue"),
        (req1.msg_id, "border", T0 + 3 * H, T0 + 11 * H, 9 * H, "overdue"),
    ]  # fmt: skip
    first = result.rows[0]
    assert (first.index, first.requester, first.response_class, first.channel, first.sent_ms) == (
        0, "police", "urgent-8h", "alerts", T0,
    )  # fmt: skip
    assert [r.rejected for r in result.rows] == [False, False, False, True, False, False]
    # req1, req2, req3, req6, req7, req8 ask for a reply; req6 was withdrawn; two unjudged.
    assert (result.requests, result.withdrawn, result.unread) == (6, 1, 2)
    assert R.overdue(log.store, now_ms=now) == result.rows


def test_the_deadline_is_strict_and_each_class_has_its_own(log: Log) -> None:
    """Overdue only once now is past the deadline: 8 hours, 72 hours, 7 days from receipt."""
    limits = {"urgent-8h": 8 * H, "urgent-3d": 72 * H, "7d": 168 * H}
    for response, limit in limits.items():
        request = log.message(response, "police", ts=T0, response=response, to=("ngo",))
        log.receipt("ngo", request, at=T0 + 1000)
        assert R.overdue(log.store, now_ms=T0 + 1000 + limit) == []
        (row,) = R.overdue(log.store, now_ms=T0 + 1000 + limit + 1)
        assert (row.msg_id, row.deadline_ms, row.overdue_by_ms) == (
            request.msg_id, T0 + 1000 + limit, 1,
        )  # fmt: skip
        log.message(f"reply {response}", "ngo", ts=T0 + 2000, refs=[(6, request)])
        assert R.overdue(log.store, now_ms=T0 + 1000 + limit + 1) == []


def test_a_receipt_for_another_envelope_does_not_start_the_clock(log: Log) -> None:
    """ngo's receipt names req's msg_id with another env hash: for req, ngo sent nothing."""
    request = log.message("req", "police", ts=T0, response="urgent-8h", to=("ngo",))
    log.receipt("ngo", request, at=T0 + 5 * H, env_hash=digest("other"))
    (row,) = R.overdue(log.store, now_ms=T0 + 9 * H)
    assert (row.received_ms, row.deadline_ms) == (None, T0 + 8 * H)


def test_an_empty_log_has_nothing_overdue(log: Log) -> None:
    result = R.overdue_report(log.store, now_ms=T0)
    assert (result.rows, result.requests, result.withdrawn, result.unread) == ([], 0, 0, 0)


def test_overdue_json_and_table(log: Log) -> None:
    request = log.message("req", "police", ts=T0, response="urgent-8h", to=("ngo", "labour"))
    log.receipt("labour", request, at=T0 + H, outcome="rejected", code="E_STALE")
    result = R.overdue_report(log.store, now_ms=T0 + 10 * H)
    as_json = R.overdue_json(result)
    assert as_json["now"] == "2026-11-18T21:06:40.000+00:00"
    assert (as_json["requests"], as_json["withdrawn"], as_json["unread"]) == (1, 0, 0)
    assert as_json["overdue"] == [
        {
            "index": 0, "msg_id": request.msg_id.hex(), "requester": "police",
            "recipient": "ngo", "response_class": "urgent-8h", "channel": "alerts",
            "sent": "2026-11-18T11:06:40.000+00:00", "received": None,
            "deadline": "2026-11-18T19:06:40.000+00:00", "overdue_by_ms": 2 * H,
            "status": "overdue",
        },
        {
            "index": 0, "msg_id": request.msg_id.hex(), "requester": "police",
            "recipient": "labour", "response_class": "urgent-8h", "channel": "alerts",
            "sent": "2026-11-18T11:06:40.000+00:00", "received": "2026-11-18T12:06:40.000+00:00",
            "deadline": "2026-11-18T20:06:40.000+00:00", "overdue_by_ms": H,
            "status": "rejected E_STALE",
        },
    ]  # fmt: skip
    header, ngo, labour = R.overdue_table(result.rows)
    assert header.split() == ["OVERDUE", "BY", "MESSAGE", "CLASS", "CHANNEL", "REQUESTER",
                              "RECIPIENT", "RECEIVED", "DEADLINE", "STATUS"]  # fmt: skip
    assert ngo.split() == ["2", "h", "0", "min", request.msg_id.hex(), "urgent-8h", "alerts",
                           "police", "ngo", "no", "receipt", "2026-11-18T19:06:40.000+00:00",
                           "overdue"]  # fmt: skip
    assert labour.endswith("rejected E_STALE")
    # Columns line up: every row's message id starts where the header's MESSAGE does.
    assert ngo.index(request.msg_id.hex()) == header.index("MESSAGE")
    assert R.overdue_table([]) == []


def test_facts_from_a_real_sealed_alert_make_it_a_request() -> None:
    """The auditor's own pipeline: a sealed example alert (its body asks "urgent-8h") through
    ``message_record`` as coord, logged with its facts, is overdue for its recipients 8 hours
    after sending when nobody acknowledged it."""
    tf = build_taskforce()
    sealed = tf.seal("police")
    entry, facts = message_record(sealed.data, identity=tf.ids["coord"], roster=tf.trusted(),
                                  schemas=tf.schemas, subject=None, now_ms=NOW_MS)  # fmt: skip
    assert facts.read and facts.no_forward is True and facts.handling_code == "H2"
    with tempfile.TemporaryDirectory() as tmp, AuditStore(Path(tmp) / "audit.db") as store:
        store.append([entry], (), [facts])
        assert facts.response_class == "urgent-8h", "the auditor did not record the class"
        rows = R.overdue(store, now_ms=entry.ts_ms + 8 * H + 1)
        assert sorted(r.recipient for r in rows) == ["coord", "labour", "ngo"]


# --- report ----------------------------------------------------------------------------------

D: Final = int(dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()) * 1000


@pytest.fixture
def period(log: Log) -> Log:
    """The scenario of the report tests (delays in ms after each message's send time)."""
    m0 = log.message("m0", "police", ts=D - H)  # before the period
    m1 = log.message("m1", "police", ts=D + 1 * H)
    m2 = log.message("m2", "police", ts=D + 2 * H)
    t1 = log.message("t1", "ngo", ts=D + 3 * H, channel="tips")
    r1 = log.message("r1", "police", ts=D + 5 * H, refs=[(5, m2)], retraction=True)
    # A receipt logged as a message (an auditor that does not read receipts): not "sent".
    log.message("as-message", "labour", ts=D + 1 * H, channel="receipts")
    log.receipt("ngo", m0, at=D - H + 100)  # before the period
    log.receipt("ngo", m1, at=D + 1 * H + 1000)  # 1000
    log.receipt("labour", m1, at=D + 1 * H + 3000)  # 3000
    log.receipt("ngo", m2, at=D + 2 * H + 2000)  # 2000
    log.receipt("labour", m2, at=D + 2 * H + 500, outcome="rejected", code="E_STALE")  # 500
    log.receipt("labour", r1, at=D + 5 * H + 4000, outcome="rejected", code="E_BAD_SIG")  # 4000
    log.receipt("police", t1, at=D + 3 * H + 10_000)  # 10000
    unknown = LogEntry("message", digest("never logged")[:16], "police", b"\0" * 8, "nl-north",
                       "alerts", D, digest("never logged env"), [], D)  # fmt: skip
    log.receipt("ngo", unknown, at=D + 6 * H)  # counted under "(unlogged)", no delay
    return log


def tally(
    agency: str,
    channel: str,
    sent: int = 0,
    received: int = 0,
    rejected: dict[str, int] | None = None,
    median: float | None = None,
) -> R.Tally:
    return R.Tally(agency, channel, sent, received, rejected or {}, median)


def test_report_counts_by_agency_and_channel(period: Log) -> None:
    result = R.report(period.store, since_ms=D)
    assert result.rows == [
        tally("labour", "alerts", received=1, rejected={"E_BAD_SIG": 1, "E_STALE": 1},
              median=3000.0),  # 500, 3000, 4000
        tally("ngo", "(unlogged)", received=1),
        tally("ngo", "alerts", received=2, median=1500.0),  # 1000, 2000
        tally("ngo", "tips", sent=1),
        tally("police", "alerts", sent=3),  # m1, m2 and the retraction r1
        tally("police", "tips", received=1, median=10_000.0),
    ]  # fmt: skip
    # 500, 1000, 2000, 3000, 4000, 10000: the median of all receipts, not of the rows.
    assert result.totals == tally(
        "(all)", "(all)", sent=4, received=5, rejected={"E_BAD_SIG": 1, "E_STALE": 1}, median=2500.0
    )
    assert result.totals.rejected == 2
    assert all(isinstance(t.median_delay_ms, float) for t in result.rows if t.received > 1)


def test_report_since_and_until_bound_the_period(period: Log) -> None:
    """[D, D+2h+1000): m1 and m2 sent; receipts up to labour's rejection at D+2h+500."""
    result = R.report(period.store, since_ms=D, until_ms=D + 2 * H + 1000)
    assert result.rows == [
        tally("labour", "alerts", received=1, rejected={"E_STALE": 1}, median=1750.0),
        tally("ngo", "alerts", received=1, median=1000.0),
        tally("police", "alerts", sent=2),
    ]
    assert result.totals == tally("(all)", "(all)", sent=2, received=2,
                                  rejected={"E_STALE": 1}, median=1000.0)  # fmt: skip
    # Inclusive start: moving it one ms past m1 drops m1 and nothing else that was sent.
    later = R.report(period.store, since_ms=D + H + 1, until_ms=D + 2 * H + 1000)
    assert later.totals.sent == 1
    # Exclusive end: ending exactly at m2's send time and at labour's receipt of m1.
    assert R.report(period.store, since_ms=D, until_ms=D + 2 * H).totals.sent == 1
    ending = R.report(period.store, since_ms=D, until_ms=D + H + 3000).totals
    assert (ending.received, ending.median_delay_ms) == (1, 1000.0)
    assert R.report(period.store, since_ms=D + 7 * H).rows == []


def test_report_renderings(period: Log) -> None:
    result = R.report(period.store, since_ms=D, until_ms=D + 2 * H + 1000)
    assert R.report_rows(result) == [
        {"agency": "labour", "channel": "alerts", "sent": 0, "received": 1, "rejected": 1,
         "rejected_by_code": "E_STALE=1", "median_delay_ms": 1750.0},
        {"agency": "ngo", "channel": "alerts", "sent": 0, "received": 1, "rejected": 0,
         "rejected_by_code": "", "median_delay_ms": 1000.0},
        {"agency": "police", "channel": "alerts", "sent": 2, "received": 0, "rejected": 0,
         "rejected_by_code": "", "median_delay_ms": None},
        {"agency": "(all)", "channel": "(all)", "sent": 2, "received": 2, "rejected": 1,
         "rejected_by_code": "E_STALE=1", "median_delay_ms": 1000.0},
    ]  # fmt: skip
    as_json = R.report_json(result)
    assert (as_json["since"], as_json["until"]) == (
        "2026-03-01T00:00:00.000+00:00", "2026-03-01T02:00:01.000+00:00",
    )  # fmt: skip
    assert as_json["rows"][0]["rejected_by_code"] == {"E_STALE": 1}
    assert as_json["totals"]["median_delay_ms"] == 1000.0
    md = R.report_markdown(result).splitlines()
    assert md[0] == "# Audit report"
    assert md[2].startswith("From 2026-03-01T00:00:00.000+00:00 (inclusive) to "
                            "2026-03-01T02:00:01.000+00:00 (exclusive).")  # fmt: skip
    assert md[4:] == [
        "| agency | channel | sent | received | rejected | median receipt delay |",
        "|---|---|--:|--:|--:|--:|",
        "| labour | alerts | 0 | 1 | 1 (E_STALE 1) | 1.8 s |",
        "| ngo | alerts | 0 | 1 | 0 | 1.0 s |",
        "| police | alerts | 2 | 0 | 0 | - |",
        "| **all** |  | 2 | 2 | 1 (E_STALE 1) | 1.0 s |",
    ]
    assert "to now (exclusive)" in R.report_markdown(R.report(period.store, since_ms=D))
    empty = R.report_markdown(R.report(period.store, since_ms=D + 100 * H))
    assert empty.endswith("Nothing was sent or received in this period.\n")


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0 ms"), (850, "850 ms"), (1500.5, "1.5 s"), (59_999, "60.0 s"), (60_000, "1 min 0 s"),
     (725_000, "12 min 5 s"), (5 * H + 12 * 60_000, "5 h 12 min"), (76 * H, "3 d 4 h"),
     (-2500, "-2.5 s")],
)  # fmt: skip
def test_durations_for_people(ms: float, text: str) -> None:
    assert R.duration(ms) == text


# --- properties ------------------------------------------------------------------------------

AGENCIES: Final = ("police", "ngo", "labour")
CHANNELS: Final = ("alerts", "tips", "receipts")

messages_st = st.lists(
    st.tuples(st.sampled_from(AGENCIES), st.sampled_from(CHANNELS),
              st.integers(0, 10 * H), st.booleans()),
    max_size=12,
)  # fmt: skip
receipts_st = st.lists(
    st.tuples(st.integers(0, 20), st.sampled_from(AGENCIES),
              st.sampled_from(["accepted", "accepted", "E_STALE", "E_BAD_SIG"]),
              st.integers(0, 12 * H)),
    max_size=16,
)  # fmt: skip


@given(messages_st, receipts_st, st.integers(0, 12 * H), st.integers(0, 12 * H))
def test_report_totals_are_every_message_and_receipt_of_the_period(
    messages: list[tuple[str, str, int, bool]],
    receipts: list[tuple[int, str, str, int]],
    since: int,
    length: int,
) -> None:
    """Totals count each message and retraction sent in the period (not on the receipts
    channel) once, and each receipt received in it once (a receipt whose number names no
    message is for an unlogged one); the rows add up to the totals."""
    until = since + length + 1
    with tempfile.TemporaryDirectory() as tmp, AuditStore(Path(tmp) / "audit.db") as store:
        log = Log(store)
        logged: list[LogEntry] = []
        for i, (sender, channel, ts, retracts) in enumerate(messages):
            # A retraction retracts the message before it (the first cannot).
            refs = [(5, logged[-1])] if retracts and logged else []
            logged.append(log.message(f"m{i}", sender, ts=D + ts, channel=channel, refs=refs,
                                      retraction=bool(refs)))  # fmt: skip
        expected_receipts = 0
        for number, receiver, outcome, at in receipts:
            if number < len(logged):
                of = logged[number]
            else:
                of = LogEntry("message", digest("x", number)[:16], "police", b"\0" * 8,
                              "nl-north", "alerts", D, digest("x env", number), [], D)  # fmt: skip
            ok = outcome == "accepted"
            log.receipt(receiver, of, at=D + at, outcome="accepted" if ok else "rejected",
                        code=None if ok else outcome)  # fmt: skip
            if since <= at < until and of.channel != "receipts":
                expected_receipts += 1
        result = R.report(store, since_ms=D + since, until_ms=D + until)
    expected_sent = sum(1 for _, channel, ts, _ in messages
                        if channel != "receipts" and since <= ts < until)  # fmt: skip
    totals = result.totals
    assert totals.sent == expected_sent
    assert totals.received + totals.rejected == expected_receipts
    assert sum(t.sent for t in result.rows) == totals.sent
    assert sum(t.received for t in result.rows) == totals.received
    assert sum(t.rejected for t in result.rows) == totals.rejected
    assert all(t.channel != "receipts" for t in result.rows)


@given(
    st.lists(st.tuples(st.sampled_from(sorted(R.RESPONSE_LIMITS)), st.integers(0, 200 * H),
                       st.sampled_from(["none", "accepted", "rejected", "replied"])),
             max_size=10),
    st.integers(0, 400 * H), st.integers(0, 200 * H),
)  # fmt: skip
def test_time_only_adds_overdue_rows(
    requests: list[tuple[str, int, str]], now: int, later: int
) -> None:
    """Without new entries, a later ``now`` keeps every overdue row (later by as much) and
    may add more; the rows stay sorted most overdue first; replied pairs never appear."""
    with tempfile.TemporaryDirectory() as tmp, AuditStore(Path(tmp) / "audit.db") as store:
        log = Log(store)
        replied: set[bytes] = set()
        for i, (response, delay, what) in enumerate(requests):
            request = log.message(f"r{i}", "police", ts=T0, response=response, to=("ngo",))
            if what in ("accepted", "rejected"):
                log.receipt("ngo", request, at=T0 + delay, outcome=what,
                            code="E_STALE" if what == "rejected" else None)  # fmt: skip
            elif what == "replied":
                log.message(f"reply{i}", "ngo", ts=T0 + delay, refs=[(6, request)])
                replied.add(request.msg_id)
        before = R.overdue(store, now_ms=T0 + now)
        after = R.overdue(store, now_ms=T0 + now + later)
    moved = {(r.msg_id, r.recipient): r.overdue_by_ms + later for r in before}
    still = {(r.msg_id, r.recipient): r.overdue_by_ms for r in after}
    assert {key: still.get(key) for key in moved} == moved
    assert [r.overdue_by_ms for r in after] == sorted((r.overdue_by_ms for r in after),
                                                      reverse=True)  # fmt: skip
    assert not any(r.msg_id in replied for r in after)


# --- --since / --until -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2026-03-01", D), ("2026-03-01T00:00:00Z", D), ("2026-03-01t01:00:00z", D + H),
     ("2026-03-01T01:00:00+01:00", D), ("2026-03-01 00:00:00.250Z", D + 250),
     (" 2026-03-01 ", D), ("2026-02-28T23:30:00-00:30", D)],
)  # fmt: skip
def test_since_takes_a_date_or_an_rfc3339_time(text: str, expected: int) -> None:
    assert parse_when(text, "--since") == expected


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2026-3-1", "2026-02-30", "2026-03-01T00:00:00", "01/03/2026",
     "2026-03-01T25:00:00Z", "2026-03-01T00:00Z", "2026-03-01T00:00:00+1",
     "\u0661\u0669\u0667\u0660-\u0660\u0661-\u0660\u0661"],  # Arabic-Indic digits
)  # fmt: skip
def test_a_bad_since_is_a_usage_error_with_a_hint(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_when(text, "--since")
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.message.startswith(f"--since {text!r} is not a date")
    assert "YYYY-MM-DD" in caught.value.hint
