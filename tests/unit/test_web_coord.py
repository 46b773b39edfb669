"""The coordinator's view in the web inbox (tfshare.web.coord) over a real audit log.

The coordinator is a real agency (key file, roster, anchor, state, loaded as the CLI loads
it); its audit log is written with ``AuditStore`` where ``tfshare audit serve`` keeps it: a
real police alert (sealed, verified and read by the auditor with ``message_record``, and
received into coord's own inbox), an escalation of it and a reshare of the escalation,
receipts (one accepted, one rejected with a hostile code), a request nobody answered, a
no_forward breach and an equivocation; then a checkpoint signed with coord's key. The pages
are fetched from the real web app (login token, session cookie, Host check) with aiohttp's
test client.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tfkit import TaskForce, build_taskforce

from tfshare.audit.entry import RECEIPT_OF, LogEntry
from tfshare.audit.logstore import AuditStore, MessageFacts, ReceiptWords
from tfshare.audit.note import Checkpoint, checkpoint_origin, sign_checkpoint
from tfshare.audit.service import (
    IdentitySigner,
    log_verifiers,
    message_record,
    sign_next_checkpoint,
)
from tfshare.encoding import encode
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.names import channel_subject
from tfshare.protocol import Receiver
from tfshare.seal import ReceivePolicy
from tfshare.web.app import build_app
from tfshare.web.security import LOGINS, SETTINGS
from tfshare.workflows import audit
from tfshare.workflows.exchange import Credentials
from tfshare.workflows.live import Agency

# Test keys at the insecure test cost: no warning about it (as the integration suites say).
os.environ["TFSHARE_TEST"] = "1"

HOSTILE_CODE = '<script>alert("code")</script>'


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def agency_of(tf: TaskForce, name: str, root: Path) -> Agency:
    root.mkdir(parents=True, exist_ok=True)
    passphrase = os.urandom(8).hex().encode()
    key = root / f"{name}.key"
    key.write_bytes(
        seal_keyfile(tf.ids[name], passphrase, limits=KDF_PROFILES["insecure-test"], rng=os.urandom)
    )
    (root / "tf.roster").write_bytes(tf.roster_bytes)
    (root / "tf.anchor").write_bytes(encode(tf.anchor))
    return Agency.load(
        Credentials(key, passphrase),
        roster_path=root / "tf.roster",
        anchor_path=root / "tf.anchor",
        state_dir=root / "state",
        registry_dir=root / "registry",
    )


def digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def hand_entry(
    name: str,
    sender: str,
    ts: int,
    *,
    refs: list[tuple[int, LogEntry]] | None = None,
    env: bytes | None = None,
    msg_id: bytes | None = None,
) -> LogEntry:
    return LogEntry(
        entry_type="message",
        msg_id=msg_id or digest("msg", name)[:16],
        sender=sender,
        sender_kid=digest("kid", sender)[:8],
        taskforce="nl-north",
        channel="alerts",
        ts_ms=ts,
        env_sha256=env or digest("env", name),
        refs=[(relation, p.msg_id, p.env_sha256) for relation, p in (refs or [])],
        observed_ms=ts + 40,
    )


def receipt(count: int, words: ReceiptWords) -> LogEntry:
    return LogEntry(
        entry_type="receipt",
        msg_id=digest("receipt", count)[:16],
        sender=words.receiver,
        sender_kid=digest("kid", words.receiver)[:8],
        taskforce="nl-north",
        channel="receipts",
        ts_ms=words.received_ms + 5,
        env_sha256=digest("receipt env", count),
        refs=[(RECEIPT_OF, words.msg_id, words.env_hash)],
        observed_ms=words.received_ms + 50,
    )


@dataclass(frozen=True)
class Scene:
    tf: TaskForce
    coord: Agency
    alert: LogEntry  # the real police alert: coord received it and read it
    escalation: LogEntry  # ngo escalates the alert
    reshare: LogEntry  # labour reshares the escalation
    request: LogEntry  # police asks ngo for a reply within 8 h, 10 h ago
    breach: LogEntry  # labour reshares a no_forward message
    unsigned: LogEntry  # appended after the checkpoint
    checkpoint_size: int


@dataclass(frozen=True)
class CoordDesk:
    """What the coordinator's pages take from the agent's Desk: its agency."""

    agency: Agency
    agency_id: str = "coord"
    taskforce: str = "nl-north"


def build_log(tf: TaskForce, coord: Agency) -> Scene:
    t = now_ms()
    sealed = tf.seal("police", seq=1, now_ms=t - 60_000, rng_seed=os.urandom(8).hex())
    subject = channel_subject("nl-north", "alerts", "police")
    alert, facts = message_record(
        sealed.data,
        identity=tf.ids["coord"],
        roster=coord.roster,
        schemas=coord.registry,
        subject=subject,
        now_ms=t,
    )
    assert facts.read  # coord is a recipient: it read schema and handling
    # coord's agent received the same envelope into its inbox (for the evidence bundle).
    Receiver(
        identity=tf.ids["coord"],
        roster=coord.roster,
        replay=coord.store.replay(keep_inbox=True),
        schemas=coord.registry,
        clock=lambda: t,
        policy=ReceivePolicy(),
    ).receive(sealed.data, subject)
    sent = alert.ts_ms
    escalation = hand_entry("escalation", "ngo", sent + 5_000, refs=[(2, alert)])
    reshare = hand_entry("reshare", "labour", sent + 9_000, refs=[(1, escalation)])
    request = hand_entry("request", "police", t - 10 * 3_600_000)
    secret = hand_entry("secret", "police", t - 50_000)
    breach = hand_entry("breach", "labour", t - 40_000, refs=[(1, secret)])
    twin = hand_entry("twin", "labour", t - 30_000, msg_id=breach.msg_id, env=digest("other"))
    with AuditStore(coord.store.path.parent / "audit.db") as store:
        store.append([alert], (), [facts])
        store.append([escalation], (), [MessageFacts(("ngo", "police", "coord"))])
        store.append([reshare], (), [MessageFacts(("labour", "coord"))])
        store.append(
            [request],
            (),
            [MessageFacts(("police", "ngo"), "tf.alert/1", False, "H1", "urgent-8h")],
        )
        store.append([secret], (), [MessageFacts(("police", "labour"), "tf.alert/1", True, "H1")])
        store.append([breach], (), [MessageFacts(("labour", "ngo"))])
        store.append([twin], (), [MessageFacts(("labour", "ngo"))])
        env = alert.env_sha256
        accepted = ReceiptWords("ngo", alert.msg_id, env, "accepted", None, sent + 1_200)
        rejected = ReceiptWords("labour", alert.msg_id, env, "rejected", HOSTILE_CODE, sent + 3_000)
        for count, words in enumerate([accepted, rejected]):
            store.append([receipt(count, words)], [words])
        signer = IdentitySigner(tf.ids["coord"], checkpoint_origin("nl-north"))
        assert sign_next_checkpoint(store, signer, log_verifiers(coord.roster), now_ms=t)
        size = store.size
        unsigned = hand_entry("unsigned", "police", t - 1_000)
        store.append([unsigned], (), [MessageFacts(("police", "ngo"))])
    return Scene(tf, coord, alert, escalation, reshare, request, breach, unsigned, size)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    tf = build_taskforce(now_ms=now_ms())
    coord = agency_of(tf, "coord", tmp_path_factory.mktemp("coord"))
    return build_log(tf, coord)


@dataclass(frozen=True)
class Page:
    status: int
    text: str
    body: bytes
    headers: dict[str, str]


@asynccontextmanager
async def logged_in(agency: Agency) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The real web app for ``agency``, and a client holding a session (login token)."""
    app = build_app(CoordDesk(agency))
    server = TestServer(app, host="127.0.0.1")
    async with TestClient(server) as client:
        app[SETTINGS].allow("127.0.0.1", server.port or 0)
        token, _ = app[LOGINS].issue()
        login = await client.get("/login", params={"token": token}, allow_redirects=False)
        assert login.status == 303
        yield client


def fetch(agency: Agency, *paths: str) -> list[Page]:
    async def run() -> list[Page]:
        pages = []
        async with logged_in(agency) as client:
            for path in paths:
                response = await client.get(path, allow_redirects=False)
                body = await response.read()
                pages.append(
                    Page(
                        response.status,
                        body.decode("utf-8", "replace"),
                        body,
                        dict(response.headers),
                    )
                )
        return pages

    return asyncio.run(run())


def one(agency: Agency, path: str) -> Page:
    [page] = fetch(agency, path)
    return page


# --- trace ---------------------------------------------------------------------------------


def test_trace_page_shows_the_verified_inclusion_lineage_and_receipts(scene: Scene) -> None:
    """The alert's trace: the proof verified against the signed checkpoint's size; the
    lineage graph holds the alert, ngo's escalation and labour's reshare of it, in three
    rows; every recipient has a receipt row (ngo accepted 1.2 s after sending, labour
    rejected, police and coord none)."""
    page = one(scene.coord, f"/coord/trace/{scene.alert.msg_id.hex()}")
    assert page.status == 200
    assert f"Proof verified against checkpoint size {scene.checkpoint_size}." in page.text
    graph = page.text.split('id="lineage"')[1].split("</svg>")[0]
    keys = re.findall(r'data-msg="([0-9a-f]{32})"', graph)
    assert keys == [e.msg_id.hex() for e in (scene.alert, scene.escalation, scene.reshare)]
    assert graph.count('class="edge"') == 2
    rows = re.findall(r'<tr class="receipt-row (\w+)">\s*<td>([^<]*)</td>', page.text)
    assert sorted(rows) == sorted(
        [("missing", "coord"), ("missing", "police (sender)"), ("accepted", "ngo"),
         ("rejected", "labour")]
    )  # fmt: skip
    assert "1.2 s" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_a_hostile_reject_code_is_shown_as_text(scene: Scene) -> None:
    """The receipt's code came from labour: on the page it is escaped text, never a tag."""
    page = one(scene.coord, f"/coord/trace/{scene.alert.msg_id.hex()}")
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(&#34;code&#34;)&lt;/script&gt;" in page.text


def test_a_message_after_the_last_checkpoint_is_not_called_verified(scene: Scene) -> None:
    page = one(scene.coord, f"/coord/trace/{scene.unsigned.msg_id.hex()}")
    assert page.status == 200
    assert "Proof verified" not in page.text
    assert "Not yet in a signed checkpoint" in page.text


def test_a_checkpoint_not_signed_by_the_log_keys_fails_the_trace(
    tmp_path: Path, scene: Scene
) -> None:
    """police (not a coordinator) signed the latest checkpoint: the inclusion cannot be
    verified, so the page says what failed (500) and never "Proof verified"."""
    coord = agency_of(scene.tf, "coord", tmp_path / "coord")
    built = build_log(scene.tf, coord)
    with AuditStore(coord.store.path.parent / "audit.db") as store:
        forged = IdentitySigner(scene.tf.ids["police"], checkpoint_origin("nl-north"))
        store.add_checkpoint(store.size, forged_note(forged, store.size, store.root()), now_ms())
    page = one(coord, f"/coord/trace/{built.alert.msg_id.hex()}")
    assert page.status == 500
    assert "Proof verified" not in page.text
    assert "Traceback" not in page.text
    assert 'id="coord-error-message"' in page.text


def forged_note(signer: IdentitySigner, size: int, root: bytes) -> bytes:
    return sign_checkpoint(Checkpoint(checkpoint_origin("nl-north"), size, root), [signer])


def test_a_trace_names_the_handling_breach(scene: Scene) -> None:
    """labour reshared a no_forward message: its trace carries the E_NO_FORWARD flag and
    draws the message flagged."""
    page = one(scene.coord, f"/coord/trace/labour:{scene.breach.msg_id.hex()}")
    assert page.status == 200
    assert "E_NO_FORWARD" in page.text
    assert 'class="node focus flagged"' in page.text


def test_bad_and_unknown_references_are_said_plainly(scene: Scene) -> None:
    """Not a message id (or a prefix under 8 digits): 400; a message the log does not hold:
    404. Each with its hint, no traceback."""
    bad, short, unknown = fetch(
        scene.coord,
        "/coord/trace/not-an-id",
        f"/coord/trace/{scene.alert.msg_id.hex()[:7]}",
        "/coord/trace/" + "ab" * 16,
    )
    for page in (bad, short):
        assert page.status == 400 and "is not a message id" in page.text
        assert "SENDER:MSG_ID" in page.text  # the hint: how to name a message
    assert unknown.status == 404 and "is not in the audit log" in unknown.text
    assert all("Traceback" not in p.text for p in (bad, short, unknown))


def test_the_trace_form_goes_to_the_trace_page(scene: Scene) -> None:
    page = one(scene.coord, f"/coord/trace?ref=police:{scene.alert.msg_id.hex()[:10]}")
    assert page.status == 303
    assert page.headers["Location"] == f"/coord/trace/police:{scene.alert.msg_id.hex()[:10]}"


# --- overview and report -------------------------------------------------------------------


def test_overview_lists_overdue_replies_flags_and_equivocations(scene: Scene) -> None:
    """police's 8-hour request to ngo, 10 h old and unanswered, is overdue; the reshares of
    no_forward messages are flagged; labour's two envelopes under one id are an equivocation;
    the latest messages link to their traces (sender named)."""
    page = one(scene.coord, "/coord")
    assert page.status == 200
    overdue = page.text.split('id="overdue"')[1].split("</section>")[0]
    assert "Overdue replies (1)" in overdue
    assert scene.request.msg_id.hex()[:16] in overdue and "urgent-8h" in overdue
    assert f'href="/coord/trace/police:{scene.request.msg_id.hex()}"' in overdue
    flags = page.text.split('id="flags"')[1].split("</section>")[0]
    # The example alert is no_forward: ngo's escalation of it breaks that rule too.
    assert "Handling flags (2)" in flags and flags.count("E_NO_FORWARD") == 2
    assert scene.breach.msg_id.hex()[:16] in flags and scene.escalation.msg_id.hex()[:16] in flags
    equivocations = page.text.split('id="equivocations"')[1].split("</section>")[0]
    assert "Equivocations (1)" in equivocations
    assert f'href="/coord/trace/labour:{scene.breach.msg_id.hex()}"' in equivocations
    assert f'href="/coord/trace/police:{scene.alert.msg_id.hex()}"' in page.text


def test_report_page_draws_the_period(scene: Scene) -> None:
    """The report since 2000: a chart per question, and the figures beside them (the
    hostile code as text)."""
    page = one(scene.coord, "/coord/report?since=2000-01-01")
    assert page.status == 200
    assert page.text.count('class="chart bars"') == 3
    table = page.text.split('id="report-table"')[1]
    # ngo sent its escalation and received the alert; labour sent three, rejected the alert.
    assert re.search(r"<td>ngo</td><td>alerts</td>\s*<td>1</td><td>1</td>\s*<td>0</td>", table)
    assert re.search(r"<td>labour</td><td>alerts</td>\s*<td>3</td><td>0</td>\s*<td>1 \(", table)
    assert "&lt;script&gt;" in table and "<script>alert" not in page.text


def test_report_refuses_a_period_it_cannot_read(scene: Scene) -> None:
    page = one(scene.coord, "/coord/report?since=yesterday")
    assert page.status == 400
    assert "is not a date or an RFC 3339 time" in page.text
    assert 'value="yesterday"' in page.text  # the form keeps what was typed


# --- evidence ------------------------------------------------------------------------------


def test_evidence_bundle_checks_offline_with_audit_check(tmp_path: Path, scene: Scene) -> None:
    """The zip named in Content-Disposition holds the proof, the roster and the envelope
    coord received; ``audit check`` (the library) accepts the proof and the envelope against
    the task force's roster."""
    page = one(scene.coord, f"/coord/evidence/{scene.alert.msg_id.hex()}")
    assert page.status == 200
    assert page.headers["Content-Type"] == "application/zip"
    stem = scene.alert.msg_id.hex()[:16]
    assert page.headers["Content-Disposition"] == (
        f'attachment; filename="tfshare-evidence-{stem}.zip"'
    )
    with zipfile.ZipFile(io.BytesIO(page.body)) as zf:
        assert sorted(zf.namelist()) == sorted(
            ["README.txt", "tf.roster", f"{stem}.tfproof", f"{stem}.tfenv"]
        )
        zf.extractall(tmp_path)
    assert (tmp_path / "tf.roster").read_bytes() == scene.tf.roster_bytes
    checked = audit.check(
        tmp_path / f"{stem}.tfproof",
        roster=scene.tf.trusted(),
        envelope=tmp_path / f"{stem}.tfenv",
    )
    assert checked.checked.entry == scene.alert
    assert checked.envelope is not None and checked.envelope.header.sender == "police"
    readme = (tmp_path / "README.txt").read_text()
    assert f"tfshare audit check {stem}.tfproof --roster tf.roster" in readme


def test_evidence_without_the_envelope_says_who_holds_it(tmp_path: Path, scene: Scene) -> None:
    """ngo's escalation never reached coord's inbox: the zip has the proof and roster, and
    says to ask a recipient for the envelope."""
    page = one(scene.coord, f"/coord/evidence/{scene.escalation.msg_id.hex()}")
    assert page.status == 200
    with zipfile.ZipFile(io.BytesIO(page.body)) as zf:
        names = zf.namelist()
        readme = zf.read("README.txt").decode()
    assert not any(n.endswith(".tfenv") for n in names)
    assert "ask a recipient" in readme


def test_evidence_for_a_message_not_yet_covered_is_refused(scene: Scene) -> None:
    page = one(scene.coord, f"/coord/evidence/{scene.unsigned.msg_id.hex()}")
    assert page.status == 404
    assert "not yet covered by a signed checkpoint" in page.text


# --- an agency without a log ---------------------------------------------------------------


def test_an_agency_without_an_audit_log_is_told_how_to_get_one(
    tmp_path: Path, scene: Scene
) -> None:
    """Every coordinator page of a member without a log: 404, "No audit log here", the
    command that keeps one; no traceback, and no log file created by looking."""
    police = agency_of(scene.tf, "police", tmp_path / "police")
    pages = fetch(
        police,
        "/coord",
        f"/coord/trace/{scene.alert.msg_id.hex()}",
        "/coord/report",
        f"/coord/evidence/{scene.alert.msg_id.hex()}",
    )
    for page in pages:
        assert page.status == 404
        assert "No audit log here" in page.text
        assert "tfshare audit serve" in page.text
        assert "Traceback" not in page.text
    assert not (police.store.path.parent / "audit.db").exists()


def test_coordinator_pages_need_a_session(scene: Scene) -> None:
    """Without logging in, every coordinator page (the evidence too) sends the browser to
    the login page and shows nothing of the log."""

    async def run() -> list[tuple[int, str, bytes]]:
        app = build_app(CoordDesk(scene.coord))
        server = TestServer(app, host="127.0.0.1")
        async with TestClient(server) as client:
            app[SETTINGS].allow("127.0.0.1", server.port or 0)
            found = []
            ref = scene.alert.msg_id.hex()
            paths = ("/coord", f"/coord/trace/{ref}", "/coord/report", f"/coord/evidence/{ref}")
            for path in paths:
                response = await client.get(path, allow_redirects=False)
                found.append(
                    (response.status, response.headers.get("Location", ""), await response.read())
                )
            return found

    for status, location, body in asyncio.run(run()):
        assert (status, location) == (303, "/login")
        assert scene.alert.msg_id.hex().encode() not in body
