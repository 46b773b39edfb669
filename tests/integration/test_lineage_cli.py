"""``tfshare publish --reshare|--escalate|--amend|--retract|--reply`` end to end, and the audit
service flagging lineage that arrives anyway against the handling rules.

For the whole module, as real subprocesses: a nats-server (``tfshare broker up``), the agents
of police and labour (so each has the other's alerts in its inbox), and coord's audit service
(``tfshare audit serve``). The task force is the kit's: "alerts" is read by everyone and
written by police and labour.

What must hold: a derived message carries its parent's msg_id and envelope hash in the signed
header (the audit log shows the lineage); the handling rules refuse, before anything is
sealed or stored, a reshare of a no_forward or H2 message and an amendment or retraction by
anyone but the originator (exit 3, the rule's code); a child that breaks the rules but is
published anyway (not through the CLI) is logged *and* flagged by the auditor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import free_port
from test_audit_cli import home, spawn, trust
from test_bad_input_live import Files, agency_files, failure, ok, tfshare
from test_live_cli import Background, wait_for
from tfkit import TaskForce, build_taskforce

from tfshare import transport
from tfshare.broker import channel_subject
from tfshare.envelope import Ref, Relation
from tfshare.registry.book import shipped
from tfshare.seal import claimed_header, envelope_hash, seal

REPO = Path(__file__).resolve().parents[2]
ALERT = REPO / "examples" / "alert.json"
# The example alert is restricted (no_forward, H2); these make a copy that may be passed on.
OPEN = ("--field", "handling.no_forward=false", "--field", "handling.code=H1")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(frozen=True)
class Scene:
    tf: TaskForce
    agencies: dict[str, Files]
    audit: Background
    url: str

    def publish(self, agency: str, *extra: str | os.PathLike[str]) -> dict[str, object]:
        """``agency`` publishes an alert (exit 0 asserted); returns the --json output."""
        files = self.agencies[agency]
        result = ok(tfshare(home(files), "publish", "alert", *extra, *files.args(),
                            "--server", self.url, "--json"))  # fmt: skip
        published: dict[str, object] = json.loads(result.stdout)
        assert published["queued"] is False, result.stderr
        return published

    def refused(self, agency: str, *extra: str | os.PathLike[str], code: int) -> str:
        """``agency``'s publish fails with exit ``code``; returns the error line."""
        files = self.agencies[agency]
        result = tfshare(home(files), "publish", "alert", *extra, *files.args(),
                         "--server", self.url)  # fmt: skip
        error, _hint = failure(result, code)
        return error

    def received(self, agency: str, msg_id: str) -> bool:
        store = self.agencies[agency].store()
        try:
            return any(i.msg_id.hex() == msg_id for i in store.inbox(limit=10_000))
        finally:
            store.close()

    def trace(self, msg_id: str) -> dict[str, object] | None:
        coord = self.agencies["coord"]
        result = tfshare(home(coord), "audit", "trace", msg_id, "--json", *coord.args())
        if result.returncode != 0:
            return None
        traced: dict[str, object] = json.loads(result.stdout)
        return traced

    def logged(self, msg_id: str) -> dict[str, object]:
        found: dict[str, object] = {}

        def in_log() -> bool:
            traced = self.trace(msg_id)
            if traced is not None:
                found.update(traced)
            return traced is not None

        assert wait_for(in_log, timeout=15, interval=0.3), self.audit.stderr()
        return found


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("lineage-cli")
    tf = build_taskforce(now_ms=now_ms(), receipts=True)
    agencies = {a: agency_files(tf, a, root / a) for a in ("coord", "police", "labour")}
    coord = agencies["coord"]
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    running: list[Background] = []
    try:
        broker = spawn(coord, "broker", "broker", "up", *trust(coord),
                       "--dir", root / "broker", "--port", str(port))  # fmt: skip
        running.append(broker)
        broker.wait_stderr("listening on")
        for agency in ("police", "labour"):
            files = agencies[agency]
            running.append(spawn(files, "agent", "agent", "run", *files.args(), "--server", url))
        audit = spawn(coord, "audit", "audit", "serve", *coord.args(), "--server", url,
                      "--every", "1", "--interval", "0.5")  # fmt: skip
        running.append(audit)
        for process in running[1:]:
            process.wait_stderr("consuming from")
        yield Scene(tf, agencies, audit, url)
    finally:
        for process in reversed(running):
            process.cleanup()


def _ref(traced: dict[str, object]) -> list[tuple[str, str]]:
    parents = traced["parents"]
    assert isinstance(parents, list)
    return [(p["relation"], p["msg_id"]) for p in parents]


def test_reshare_names_the_parent_and_starts_from_its_body(scene: Scene) -> None:
    """labour reshares police's alert: the child is on the parent's channel, the audit log
    shows the reshare both ways, and labour's copy has the parent's title (its body was the
    starting point) with the field labour changed."""
    parent = str(scene.publish("police", "--channel", "alerts", "--file", ALERT, *OPEN)["msg_id"])
    assert wait_for(lambda: scene.received("labour", parent), timeout=10)
    child = scene.publish("labour", "--reshare", parent[:12], "--field", "severity=high")
    child_id = str(child["msg_id"])
    assert str(child["subject"]).split(".")[3] == "alerts"

    traced_child = scene.logged(child_id)
    assert _ref(traced_child) == [("reshare", parent)]
    traced_parent = scene.logged(parent)
    children = traced_parent["children"]
    assert isinstance(children, list)
    assert [(c["relation"], c["msg_id"]) for c in children] == [("reshare", child_id)]

    assert wait_for(lambda: scene.received("police", child_id), timeout=10)
    police = scene.agencies["police"]
    shown = json.loads(ok(tfshare(home(police), "inbox", "show", child_id,
                                  *police.args())).stdout)  # fmt: skip
    assert shown["sender"] == "labour"
    assert shown["body"]["title"] == json.loads(ALERT.read_text())["title"]
    assert shown["body"]["severity"] == "high"


@pytest.mark.parametrize(
    ("handling", "code"),
    [
        (("handling.no_forward=true", "handling.code=H1"), "E_NO_FORWARD"),
        (("handling.no_forward=false", "handling.code=H2"), "E_HANDLING_H2"),
    ],
)
def test_a_restricted_message_cannot_be_reshared_or_escalated(
    scene: Scene, handling: tuple[str, str], code: str
) -> None:
    """no_forward (by anyone) and H2 (by anyone but the originator): exit 3 with the rule's
    code, and nothing sealed: labour's outbox and sent list are unchanged."""
    fields = ("--field", handling[0], "--field", handling[1])
    parent = str(scene.publish("police", "--channel", "alerts", "--file", ALERT, *fields)["msg_id"])
    assert wait_for(lambda: scene.received("labour", parent), timeout=10)
    labour = scene.agencies["labour"].store()
    try:
        before = (labour.outbox(), labour.sent(limit=1000))
    finally:
        labour.close()
    for relation in ("--reshare", "--escalate"):
        error = scene.refused("labour", relation, parent, code=3)
        assert error.startswith(f"{code}: cannot {relation[2:]} this message"), error
    labour = scene.agencies["labour"].store()
    try:
        assert (labour.outbox(), labour.sent(limit=1000)) == before
    finally:
        labour.close()


def test_only_the_originator_amends_or_retracts(scene: Scene) -> None:
    """labour may not amend or retract police's alert (E_NOT_ORIGINATOR); police may, from its
    own sent list (it cannot decrypt its own message, so it gives the body); a retraction is
    its own entry type in the log, and the original stays."""
    parent = str(scene.publish("police", "--channel", "alerts", "--file", ALERT, *OPEN)["msg_id"])
    assert wait_for(lambda: scene.received("labour", parent), timeout=10)
    for relation in ("--amend", "--retract"):
        error = scene.refused("labour", relation, parent, "--file", ALERT, code=3)
        assert error.startswith("E_NOT_ORIGINATOR: "), error

    amended = str(scene.publish("police", "--amend", parent, "--file", ALERT,
                                "--field", "severity=low")["msg_id"])  # fmt: skip
    retracted = str(scene.publish("police", "--retract", parent, "--file", ALERT)["msg_id"])
    assert _ref(scene.logged(amended)) == [("amend", parent)]
    traced = scene.logged(retracted)
    assert _ref(traced) == [("retract", parent)]
    entry = traced["entry"]
    assert isinstance(entry, dict) and entry["type"] == "retraction"
    original = scene.logged(parent)
    children = original["children"]
    assert isinstance(children, list)
    assert sorted((c["relation"], c["msg_id"]) for c in children) == sorted(
        [("amend", amended), ("retract", retracted)]
    )


def test_a_reply_goes_to_the_requester_by_default(scene: Scene) -> None:
    """A reply names its request (relation reply) and, without --to, is addressed to the
    requester alone."""
    request = str(scene.publish("police", "--channel", "alerts", "--file", ALERT, *OPEN,
                                "--field", "response=urgent-8h")["msg_id"])  # fmt: skip
    assert wait_for(lambda: scene.received("labour", request), timeout=10)
    reply = scene.publish("labour", "--reply", request, "--file", ALERT)
    assert reply["recipients"] == ["police"]
    assert _ref(scene.logged(str(reply["msg_id"]))) == [("reply", request)]


def test_bad_lineage_flags_are_clean_failures(scene: Scene) -> None:
    """Two parents, a malformed or unknown id: one error line, one hint, the documented exit
    code, nothing sent."""
    error = scene.refused("labour", "--reshare", "0" * 32, "--amend", "1" * 32, code=2)
    assert "one parent" in error
    error = scene.refused("labour", "--reshare", "xyz", code=2)
    assert "is not a message id" in error
    error = scene.refused("labour", "--reshare", "ab" * 16, code=1)
    assert f"no message {'ab' * 16}" in error


def test_the_auditor_flags_a_child_that_breaks_the_rules(scene: Scene) -> None:
    """labour reshares a no_forward alert with its own code (not the CLI): the broker carries
    it, the audit log records it (the log says what happened), and the audit service reports
    a handling_violation with the rule's code."""
    parent = str(scene.publish("police", "--channel", "alerts", "--file", ALERT,
                               "--field", "handling.no_forward=true")["msg_id"])  # fmt: skip
    assert wait_for(lambda: scene.received("labour", parent), timeout=10)
    logged_parent = scene.logged(parent)
    labour_store = scene.agencies["labour"].store()
    try:
        item = next(i for i in labour_store.inbox(limit=10_000) if i.msg_id.hex() == parent)
    finally:
        labour_store.close()
    alert = shipped().lookup("tf.alert/1")
    assert alert is not None
    labour = scene.tf.ids["labour"]
    sealed = seal(
        identity=labour,
        roster=scene.tf.trusted(),
        channel="alerts",
        to=None,
        schema=alert,
        body=alert.to_body(alert.from_json(ALERT.read_bytes())),
        seq=10_000,
        now_ms=now_ms(),
        rng=os.urandom,
        refs=[Ref(Relation.RESHARE, item.msg_id, envelope_hash(item.envelope))],
    )

    async def send() -> None:
        conn = await transport.connect(scene.url, nkey_seed=labour.nats_seed_encoded(),
                                       agency="labour", name="rogue")  # fmt: skip
        try:
            subject = channel_subject(scene.tf.trusted().taskforce, "alerts", "labour")
            await transport.publish(conn, subject, sealed.data, msg_id=sealed.msg_id.hex())
        finally:
            await conn.close()

    asyncio.run(send())
    child = sealed.msg_id.hex()
    assert _ref(scene.logged(child)) == [("reshare", parent)]
    assert wait_for(lambda: "handling_violation" in scene.audit.stderr(), timeout=10)
    events = [
        json.loads(line)
        for line in scene.audit.stderr().splitlines()
        if line.startswith("{") and "handling_violation" in line
    ]
    assert [(e["code"], e["msg_id"], e["parent"], e["sender"]) for e in events] == [
        ("E_NO_FORWARD", child, parent, "labour")
    ]
    assert logged_parent["entry"] is not None


def test_a_copied_msg_id_is_never_picked_silently(scene: Scene) -> None:
    """labour seals a message reusing the msg_id of police's alert (senders choose their ids).
    police, amending its alert by that id, is asked which one it means (exit 2, naming both
    senders); ``police:ID`` picks its own, and the amendment refs its own envelope."""
    parent = str(scene.publish("police", "--channel", "alerts", "--file", ALERT, *OPEN)["msg_id"])
    alert = shipped().lookup("tf.alert/1")
    assert alert is not None
    copycat = seal(
        identity=scene.tf.ids["labour"],
        roster=scene.tf.trusted(),
        channel="alerts",
        to=None,
        schema=alert,
        body=alert.to_body(alert.from_json(ALERT.read_bytes())),
        seq=20_000,
        now_ms=now_ms(),
        rng=lambda n: bytes.fromhex(parent) + os.urandom(n - 16),
    )
    assert copycat.msg_id.hex() == parent

    async def send() -> None:
        labour = scene.tf.ids["labour"]
        conn = await transport.connect(scene.url, nkey_seed=labour.nats_seed_encoded(),
                                       agency="labour", name="copycat")  # fmt: skip
        try:
            subject = channel_subject(scene.tf.trusted().taskforce, "alerts", "labour")
            # Another Nats-Msg-Id: the broker's duplicate window must not drop it.
            await transport.publish(conn, subject, copycat.data, msg_id="copy-" + parent)
        finally:
            await conn.close()

    asyncio.run(send())
    police = scene.agencies["police"]

    def copy_arrived() -> bool:
        store = police.store()
        try:
            return any(i.sender == "labour" and i.msg_id.hex() == parent
                       for i in store.inbox(limit=10_000))  # fmt: skip
        finally:
            store.close()

    assert wait_for(copy_arrived, timeout=10)
    error = scene.refused("police", "--amend", parent, "--file", ALERT, code=2)
    assert error == f"message id {parent} was used by several senders (labour, police)"
    amended = str(scene.publish("police", "--amend", f"police:{parent}", "--file", ALERT)["msg_id"])
    store = police.store()
    try:
        sent = {s.msg_id.hex(): s for s in store.sent(limit=1000)}
    finally:
        store.close()
    (ref,) = claimed_header(sent[amended].envelope).refs
    assert (ref.relation, ref.msg_id.hex()) == (Relation.AMEND, parent)
    assert ref.env_hash == sent[parent].env_hash != copycat.env_hash
