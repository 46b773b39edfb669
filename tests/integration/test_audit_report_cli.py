"""``tfshare audit overdue``, ``audit report`` and what ``audit trace`` says of recipients and
handling, through the real command.

No broker: coord's audit log is written directly with ``AuditStore`` where the CLI looks for
it (``audit.db`` in coord's state directory), with hand-built entries, receipts' words and
message facts, so every row the commands print is known in advance. The agencies' key,
passphrase, roster and anchor files are real (the kit's task force), and every command is a
``tfshare`` subprocess, as a coordinator would run it.

The log holds, relative to the real time T of the fixture (overdue uses the clock):
- "req": police asks ngo and labour for an urgent-8h reply at T-10h; ngo accepted at
  T-9h30 (due T-1h30), labour sent no receipt (due T-2h): both overdue.
- "secret" (police, no_forward, H2) and "leak", labour's reshare of it: flagged E_NO_FORWARD.
- "sealed": a message the auditor could not read: a blind spot the overdue note counts.
- on 2025-03-01 (the report's period): police's "m1", received by ngo after 2 s and
  rejected by labour (E_STALE) after 4 s.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import subprocess
import time
from typing import Final

import pytest
from test_bad_input_live import Files, agency_files, failure, ok, tfshare
from tfkit import build_taskforce

from tfshare.audit.entry import RECEIPT_OF, LogEntry
from tfshare.audit.logstore import AuditStore, MessageFacts, ReceiptWords

H: Final = 3_600_000
DAY: Final = int(dt.datetime(2025, 3, 1, tzinfo=dt.UTC).timestamp()) * 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def message(name: str, sender: str, ts: int, refs: list[tuple[int, LogEntry]] | None = None,
            channel: str = "alerts") -> LogEntry:  # fmt: skip
    return LogEntry("message", digest("msg", name)[:16], sender, digest("kid", sender)[:8],
                    "nl-north", channel, ts, digest("env", name),
                    [(r, p.msg_id, p.env_sha256) for r, p in refs or []], ts + 100)  # fmt: skip


def receipt(of: LogEntry, receiver: str, at: int, code: str | None = None
            ) -> tuple[LogEntry, ReceiptWords]:  # fmt: skip
    words = ReceiptWords(receiver, of.msg_id, of.env_sha256,
                         "rejected" if code else "accepted", code, at)  # fmt: skip
    entry = LogEntry("receipt", digest("receipt", of.msg_id, receiver)[:16], receiver,
                     digest("kid", receiver)[:8], "nl-north", "receipts", at + 10,
                     digest("receipt env", of.msg_id, receiver),
                     [(RECEIPT_OF, of.msg_id, of.env_sha256)], at + 50)  # fmt: skip
    return entry, words


def read(*recipients: str, response: str | None = None, no_forward: bool = False,
         code: str = "H1") -> MessageFacts:  # fmt: skip
    return MessageFacts(recipients, "tf.alert/1", no_forward, code, response)


@dataclasses.dataclass(frozen=True)
class Scene:
    coord: Files
    ngo: Files  # an agency without an audit log
    t: int
    entries: dict[str, tuple[int, LogEntry]]

    def run(self, *args: str, files: Files | None = None) -> subprocess.CompletedProcess[str]:
        who = files or self.coord
        return tfshare(who.root / "home", "audit", *args, *who.args())

    def msg(self, name: str) -> str:
        return self.entries[name][1].msg_id.hex()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("audit-report")
    t = now_ms()
    tf = build_taskforce(now_ms=t, receipts=True)
    coord = agency_files(tf, "coord", root / "coord")
    ngo = agency_files(tf, "ngo", root / "ngo")

    req = message("req", "police", t - 10 * H)
    secret = message("secret", "police", t - 5 * H)
    leak = message("leak", "labour", t - 4 * H, refs=[(1, secret)])
    sealed = message("sealed", "police", t - 3 * H)
    m1 = message("m1", "police", DAY + H)
    rows: list[tuple[LogEntry, ReceiptWords | None, MessageFacts | None]] = [
        (m1, None, read("police", "ngo", "labour")),
        (*receipt(m1, "ngo", DAY + H + 2000), None),
        (*receipt(m1, "labour", DAY + H + 4000, code="E_STALE"), None),
        (req, None, read("police", "ngo", "labour", response="urgent-8h")),
        (*receipt(req, "ngo", t - 9 * H - H // 2), None),
        (secret, None, read("police", "labour", no_forward=True, code="H2")),
        (leak, None, read("labour", "ngo")),
        (sealed, None, MessageFacts(("police", "ngo"))),
    ]
    with AuditStore(coord.state / "audit.db") as store:
        indices = store.append([e for e, _, _ in rows], [w for _, w, _ in rows],
                               [f for _, _, f in rows])  # fmt: skip
    assert indices == list(range(len(rows)))  # a fresh log: every row is appended, in order
    names = {"m1": 0, "req": 3, "secret": 5, "leak": 6, "sealed": 7}
    return Scene(coord, ngo, t, {name: (i, rows[i][0]) for name, i in names.items()})


def test_overdue_lists_each_recipient_past_its_deadline(scene: Scene) -> None:
    """``audit overdue --json``: labour (no receipt, due T-2h) before ngo (received T-9h30,
    due T-1h30); one message could not be judged."""
    as_json = json.loads(ok(scene.run("overdue", "--json")).stdout)
    assert (as_json["requests"], as_json["withdrawn"], as_json["unread"]) == (1, 0, 1)
    rows = as_json["overdue"]
    assert [(r["recipient"], r["status"], r["received"] is None) for r in rows] == [
        ("labour", "overdue", True),
        ("ngo", "overdue", False),
    ]
    req_index, _ = scene.entries["req"]
    for row in rows:
        assert (row["msg_id"], row["index"], row["requester"]) == (scene.msg("req"), req_index,
                                                                   "police")  # fmt: skip
        assert (row["response_class"], row["channel"]) == ("urgent-8h", "alerts")
    # Measured against the command's own clock, a little after the fixture's.
    elapsed = now_ms() - scene.t
    assert 2 * H <= rows[0]["overdue_by_ms"] <= 2 * H + elapsed
    assert H + H // 2 <= rows[1]["overdue_by_ms"] <= H + H // 2 + elapsed


def test_overdue_for_people_says_no_receipt_and_the_blind_spot(scene: Scene) -> None:
    shown = ok(scene.run("overdue"))
    header, labour, ngo = shown.stdout.splitlines()
    assert header.split()[:3] == ["OVERDUE", "BY", "MESSAGE"]
    assert re.match(rf"2 h 0 min\s+{scene.msg('req')}\s+urgent-8h\s+alerts\s+police\s+labour\s+"
                    r"no receipt\s+\S+\s+overdue$", labour), labour  # fmt: skip
    assert re.match(rf"1 h 30 min\s+{scene.msg('req')}\s+urgent-8h\s+alerts\s+police\s+ngo\s+"
                    r"\d{4}-\S+\s+\S+\s+overdue$", ngo), ngo  # fmt: skip
    assert (
        "1 request with a reply deadline (0 withdrawn by their sender), 2 recipients past "
        "it without a reply" in shown.stderr
    )
    assert "note: 1 message could not be judged" in shown.stderr


def test_report_in_csv_json_and_markdown(scene: Scene) -> None:
    """One day, 2025-03-01: police sent m1; ngo received it after 2 s, labour rejected it
    (E_STALE) after 4 s; the log's other entries are outside the period."""
    period = ["--since", "2025-03-01", "--until", "2025-03-02"]
    csv_out = ok(scene.run("report", *period, "--format", "csv")).stdout
    assert list(csv.reader(io.StringIO(csv_out))) == [
        ["agency", "channel", "sent", "received", "rejected", "rejected_by_code",
         "median_delay_ms"],
        ["labour", "alerts", "0", "0", "1", "E_STALE=1", "4000.0"],
        ["ngo", "alerts", "0", "1", "0", "", "2000.0"],
        ["police", "alerts", "1", "0", "0", "", ""],
        ["(all)", "(all)", "1", "1", "1", "E_STALE=1", "3000.0"],
    ]  # fmt: skip

    as_json = json.loads(
        ok(scene.run("report", "--since", "2025-03-01T00:00:00Z", "--until", "2025-03-02",
                     "--format", "json")).stdout
    )  # fmt: skip
    assert (as_json["since"], as_json["until"]) == (
        "2025-03-01T00:00:00.000+00:00", "2025-03-02T00:00:00.000+00:00",
    )  # fmt: skip
    assert as_json["totals"] == {
        "agency": "(all)", "channel": "(all)", "sent": 1, "received": 1, "rejected": 1,
        "rejected_by_code": {"E_STALE": 1}, "median_delay_ms": 3000.0,
    }  # fmt: skip
    assert len(as_json["rows"]) == 3

    md = ok(scene.run("report", *period)).stdout  # md is the default
    assert md.startswith("# Audit report\n")
    assert "| labour | alerts | 0 | 0 | 1 (E_STALE 1) | 4.0 s |\n" in md
    assert "| **all** |  | 1 | 1 | 1 (E_STALE 1) | 3.0 s |\n" in md

    # Without --until: everything since, including the requests of the last hours.
    recent = json.loads(ok(scene.run("report", "--since", "2025-03-02", "--format", "json")).stdout)
    assert recent["until"] is None
    sent = {(r["agency"], r["channel"]): r["sent"] for r in recent["rows"] if r["sent"]}
    assert sent == {("police", "alerts"): 3, ("labour", "alerts"): 1}


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is not a date or an RFC 3339 time",
         "YYYY-MM-DD"),
        (["--since", "2025-03-01T10:00:00"], "--since '2025-03-01T10:00:00' is not a date",
         "with its offset"),
        (["--since", "2025-03-02", "--until", "2025-03-01"],
         "--until '2025-03-01' is not after --since '2025-03-02'", "(exclusive)"),
        (["--since", "2025-03-01", "--format", "xml"], "unknown format 'xml'", "md, json, csv"),
    ],
)  # fmt: skip
def test_report_refuses_bad_input_with_a_hint(
    scene: Scene, args: list[str], message: str, hint: str
) -> None:
    error, shown_hint = failure(scene.run("report", *args), 2)
    assert error.startswith(message), error
    assert hint in shown_hint


def test_an_agency_without_a_log_gets_no_new_one(scene: Scene) -> None:
    for command in (["overdue"], ["report", "--since", "2025-03-01"]):
        error, hint = failure(scene.run(*command, files=scene.ngo), 1)
        assert error.startswith("no audit log at ")
        assert "audit serve" in hint
    assert not (scene.ngo.state / "audit.db").exists()


def test_trace_shows_recipients_receipts_response_and_flags(scene: Scene) -> None:
    shown = ok(scene.run("trace", scene.msg("req"))).stdout
    lines = shown.splitlines()

    def field(label: str) -> list[str]:
        return [line.removeprefix(label).strip() for line in lines
                if re.match(rf"{re.escape(label)}\s", line)]  # fmt: skip

    assert field("recipients") == ["police, ngo, labour"]
    assert field("response") == ["urgent-8h: a reply within 8 hours of receipt"]
    assert field("handling") == ["H1"]
    receipts = field("receipt")
    assert receipts[0] == "police (sender): no receipt"
    assert re.fullmatch(r"ngo: accepted at \S+ \(entry \d+\)", receipts[1]), receipts
    assert receipts[2] == "labour: no receipt"
    assert field("FLAG") == []

    secret_index, secret = scene.entries["secret"]
    leak_index, leak = scene.entries["leak"]
    shown = ok(scene.run("trace", scene.msg("secret"))).stdout
    assert re.search(r"^handling\s+H2, no_forward$", shown, re.MULTILINE), shown
    assert re.search(
        rf"^FLAG\s+E_NO_FORWARD: reshare {leak.msg_id.hex()} by labour \(entry {leak_index}\) "
        rf"of {secret.msg_id.hex()} by police: the message is marked no_forward$",
        shown, re.MULTILINE,
    ), shown  # fmt: skip

    as_json = json.loads(ok(scene.run("trace", scene.msg("leak"), "--json")).stdout)
    assert as_json["recipients"] == ["labour", "ngo"]
    assert (as_json["schema"], as_json["response_class"]) == ("tf.alert/1", None)
    assert as_json["handling"] == {"code": "H1", "no_forward": False}
    assert as_json["flags"] == [
        {"code": "E_NO_FORWARD", "why": "the message is marked no_forward",
         "relation": "reshare", "index": leak_index, "msg_id": leak.msg_id.hex(),
         "sender": "labour", "parent_index": secret_index, "parent_msg_id": secret.msg_id.hex(),
         "parent_sender": "police"},
    ]  # fmt: skip

    unread = json.loads(ok(scene.run("trace", scene.msg("sealed"), "--json")).stdout)
    assert unread["recipients"] == ["police", "ngo"]
    assert unread["schema"] is unread["handling"] is unread["response_class"] is None
    shown = ok(scene.run("trace", scene.msg("sealed"))).stdout
    assert re.search(r"^body\s+not read by the audit service", shown, re.MULTILINE), shown
