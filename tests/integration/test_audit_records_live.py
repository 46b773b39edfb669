"""Roster changes, key events and schema registrations in the audit log, on a real
nats-server: the running service picks up a new roster from the roster bucket (verified as
agents verify it: anchor and rollback state, through the agency's own ``accept_roster``), logs
it with one key event per added or revoked key, logs every verified registry record, refuses
a rolled-back or forged roster and a record no coordinator signed (log events with their
codes, nothing appended), keeps consuming, and after a restart logs nothing twice.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
from livekit import publish_as
from tfkit import TaskForce, identity

from tfshare import roster as R
from tfshare import transport
from tfshare.audit.entry import LogEntry
from tfshare.audit.logstore import AuditStore, verify_store
from tfshare.audit.note import checkpoint_origin
from tfshare.audit.service import (
    KEY_ADDED,
    AuditService,
    CheckpointPolicy,
    key_event_digest,
    key_event_entries,
    log_verifiers,
    roster_signers,
)
from tfshare.broker import BrokerProcess, channel_subject, parse_schema_key, schema_key
from tfshare.encoding import encode
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.keys import kid_sig
from tfshare.registry.book import shipped
from tfshare.registry.compat import Mode
from tfshare.registry.records import new_record, sign_record
from tfshare.registry.schema import Schema
from tfshare.workflows.exchange import Credentials
from tfshare.workflows.live import Agency
from tfshare.workflows.schemas import publish_record, register, store_for

TF = "nl-north"


def _now() -> int:
    return time.time_ns() // 1_000_000


def write_agency_files(tf: TaskForce, name: str, root: Path) -> Credentials:
    root.mkdir(parents=True, exist_ok=True)
    passphrase = os.urandom(8).hex().encode()
    key = root / f"{name}.key"
    key.write_bytes(
        seal_keyfile(tf.ids[name], passphrase, limits=KDF_PROFILES["insecure-test"], rng=os.urandom)
    )
    (root / "tf.roster").write_bytes(tf.roster_bytes)
    (root / "tf.anchor").write_bytes(encode(tf.anchor))
    return Credentials(key, passphrase)


def load_agency(creds: Credentials, root: Path) -> Agency:
    """The coordinator's agency as 'tfshare audit serve' loads it (roster file verified
    against the anchor and the persisted rollback state)."""
    return Agency.load(
        creds,
        roster_path=root / "tf.roster",
        anchor_path=root / "tf.anchor",
        state_dir=root / "state",
        registry_dir=root / "registry",
    )


def service_factory(
    tf: TaskForce, creds: Credentials, root: Path, url: str
) -> Callable[[], AuditService]:
    def make() -> AuditService:
        # On the service's thread: the agency's state database lives there.
        coord = load_agency(creds, root)
        return AuditService(
            identity=tf.ids["coord"],
            roster=coord.roster,
            roster_bytes=coord.roster_path.read_bytes(),
            store=AuditStore(root / "audit.db"),
            url=url,
            clock=_now,
            checkpoints=CheckpointPolicy(every=1, interval_s=0.2),
            fetch_timeout=0.2,
            schemas=coord.registry,
            accept_roster=coord.accept_roster,
            records_every_s=0.1,
        )

    return make


@contextmanager
def running(make: Callable[[], AuditService]) -> Iterator[Callable[[], AuditService]]:
    """The service on its own thread and event loop while the test acts on this one."""
    made: list[AuditService] = []
    started = threading.Event()
    control: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        control["loop"], control["stop"] = asyncio.get_running_loop(), stop
        made.append(make())
        started.set()
        await made[0].run(stop)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield lambda: made[0]
    finally:
        control["loop"].call_soon_threadsafe(control["stop"].set)
        thread.join(15)
        assert not thread.is_alive()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def logged(path: Path) -> list[LogEntry]:
    with AuditStore(path) as store:
        return [entry for _, entry in store.entries()]


def of_type(path: Path, entry_type: str) -> list[LogEntry]:
    return [entry for entry in logged(path) if entry.entry_type == entry_type]


async def _as_coord(tf: TaskForce, url: str, action: Callable[[transport.Connection], Any]) -> Any:
    conn = await transport.connect(
        url,
        nkey_seed=tf.ids["coord"].nats_seed_encoded(),
        agency="coord",
        name="test-coord",
        reconnect=False,
    )
    try:
        return await action(conn)
    finally:
        await conn.close()


def put_roster(tf: TaskForce, url: str, data: bytes) -> None:
    asyncio.run(_as_coord(tf, url, lambda conn: transport.put_roster(conn, TF, data)))


def put_record(tf: TaskForce, url: str, subject: str, version: int, data: bytes) -> None:
    asyncio.run(
        _as_coord(
            tf, url, lambda conn: transport.put_schema_record(conn, TF, subject, version, data)
        )
    )


def schema_document(name: str) -> dict[str, Any]:
    alert = shipped().lookup("tf.alert/1")
    assert alert is not None
    doc = copy.deepcopy(alert.document)
    doc["$id"] = f"urn:tfshare:schema:{name}"
    doc["properties"]["case_ref"] = {"type": "string", "maxLength": 64, "description": "ref"}
    return doc


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]


def test_roster_changes_key_events_and_schema_records_are_logged_once(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    tf, url = live_tf, broker.url
    root = tmp_path / "coord"
    creds = write_agency_files(tf, "coord", root)
    log = root / "audit.db"
    newcomer = identity("newcomer")
    labour_kid = tf.ids["labour"].kid_sig

    with running(service_factory(tf, creds, root, url)) as service:
        wait_for(lambda: len(of_type(log, "roster")) == 1)  # the roster it started with

        # 1. A new roster in the bucket: labour retired, a newcomer added.
        changed = R.revoke(tf.signed, "labour", reason="retired", now_ms=_now())
        changed = R.add_member(changed, newcomer.card_body(), role="member", now_ms=_now())
        changed = R.sign(changed, tf.ids["coord"])
        new_bytes = encode(changed)
        put_roster(tf, url, new_bytes)
        wait_for(lambda: len(of_type(log, "key_event")) == 2)
        digest = hashlib.sha256(new_bytes).digest()
        entries = logged(log)
        position = next(i for i, e in enumerate(entries) if e.env_sha256 == digest)
        roster_entry, *key_events = entries[position : position + 3]
        assert roster_entry.entry_type == "roster" and roster_entry.msg_id == digest[:16]
        _, new_roster = R.decode_signed_roster(new_bytes)
        assert roster_entry.ts_ms == new_roster.issued_ms
        # One event per key, in the same transaction right after the roster entry.
        by_kid = {event.sender_kid: event for event in key_events}
        assert set(by_kid) == {labour_kid, newcomer.kid_sig}
        retired = by_kid[labour_kid]
        assert retired.env_sha256 == key_event_digest(TF, labour_kid, "retired")
        assert retired.msg_id == retired.env_sha256[:16]
        assert retired.ts_ms == next(r.at_ms for r in new_roster.revoked if r.kid == labour_kid)
        added = by_kid[newcomer.kid_sig]
        assert added.env_sha256 == key_event_digest(TF, newcomer.kid_sig, KEY_ADDED)
        assert added.ts_ms == new_roster.issued_ms
        assert {(e.sender, e.channel, e.taskforce) for e in key_events} == {("coord", "", TF)}
        wait_for(lambda: service().roster.seq == new_roster.seq)
        # The coordinator's agency kept it (rollback state and roster file), as an agent does.
        assert (root / "tf.roster").read_bytes() == new_bytes

        # 2. A schema registered by the coordinators and published to the registry bucket.
        doc_path = tmp_path / "alert2.json"
        doc_path.write_text(json.dumps(schema_document("tf.alert/2")))
        cache = store_for(tmp_path / "coord-cache", TF)
        register(
            doc_path,
            identity=tf.ids["coord"],
            roster=service().roster,
            store=cache,
            mode=None,
            now_ms=_now(),
        )
        publish_record(
            cache, subject="tf.alert", version=2, identity=tf.ids["coord"], url=url, taskforce=TF
        )
        record = cache.get("tf.alert", 2)
        assert record is not None
        wait_for(lambda: len(of_type(log, "schema")) == 1)
        (schema,) = of_type(log, "schema")
        record_hash = hashlib.sha256(record).digest()
        assert (schema.msg_id, schema.env_sha256) == (record_hash[:16], record_hash)
        assert (schema.sender, schema.sender_kid, schema.channel) == ("coord", b"", "")

        # 3. What fails verification is reported, not logged: a rolled-back roster, a
        # roster no coordinator signed, a record signed by a member.
        size = len(logged(log))
        refused = service().stats.records_refused
        forged = R.sign(
            R.revoke(changed, "police", reason="compromised", now_ms=_now()), tf.ids["outsider"]
        )
        note_doc = schema_document("tf.note/1")
        unsigned = new_record(
            Schema.from_document(note_doc, name="tf.note/1"),
            taskforce=TF,
            mode=Mode.BACKWARD,
            previous=None,
            now_ms=_now(),
        )
        by_member = encode(sign_record(unsigned, tf.ids["police"]))
        with structlog.testing.capture_logs() as captured:
            put_roster(tf, url, tf.roster_bytes)  # the older roster, seq below the state's
            wait_for(lambda: service().stats.records_refused == refused + 1)
            put_roster(tf, url, encode(forged))
            put_record(tf, url, "tf.note", 1, by_member)
            wait_for(lambda: service().stats.records_refused == refused + 3)
        assert [e["code"] for e in events(captured, "audit_roster_refused")] == [
            "E_ROSTER_ROLLBACK",
            "E_ROSTER_SIG",
        ]
        assert [(e["key"], e["code"]) for e in events(captured, "audit_schema_refused")] == [
            (schema_key("tf.note", 1), "E_ROSTER_SIG")
        ]
        # Identifiers and codes only: no record or roster bytes in any event.
        assert not any(isinstance(value, bytes) for e in captured for value in e.values())
        assert len(logged(log)) == size
        assert service().roster.seq == new_roster.seq  # still the roster it trusts

        # 4. ... and it keeps logging envelopes.
        sealed = tf.seal("police", now_ms=_now(), rng_seed=os.urandom(8).hex())
        subject = channel_subject(TF, "alerts", "police")
        publish_as(tf, "police", url, subject, sealed.data, sealed.msg_id.hex())
        wait_for(lambda: sealed.msg_id in {e.msg_id for e in of_type(log, "message")})
    before = logged(log)

    # 5. A restart (with the roster the agency kept) logs nothing twice.
    with running(service_factory(tf, creds, root, url)) as service:
        # Polled at least once: the bucket's forged roster and the member's record refused.
        wait_for(lambda: service().stats.records_refused >= 2)
        wait_for(lambda: service().stats.duplicates >= 2)  # its roster, the schema record
        stats = service().stats
    assert logged(log) == before
    assert stats.appended == 0
    report = verify_store(log, log_verifiers(tf.trusted()), checkpoint_origin(TF))
    assert report.entries == len(before)


def test_key_events_compare_each_roster_with_the_one_before(live_tf: TaskForce) -> None:
    """Pure: an unchanged key set gives no event; a retirement upgraded to compromised is a
    second event; the sender is who signed the new roster."""
    tf = live_tf
    first = tf.trusted()
    retired = R.sign(
        R.revoke(tf.signed, "labour", reason="retired", now_ms=tf.now_ms), tf.ids["coord"]
    )
    compromised = R.sign(
        R.revoke(retired, "labour", reason="compromised", now_ms=tf.now_ms), tf.ids["coord"]
    )
    trust = [
        R.verify_roster(encode(s), anchor=tf.anchor, state=None, now_ms=tf.now_ms)[0]
        for s in (retired, compromised)
    ]
    assert key_event_entries(first, first, ["coord"], now_ms=1) == []
    (one,) = key_event_entries(first, trust[0], ["coord"], now_ms=1)
    (two,) = key_event_entries(trust[0], trust[1], ["coord"], now_ms=1)
    labour = tf.ids["labour"].kid_sig
    assert (one.sender_kid, two.sender_kid) == (labour, labour)
    assert one.env_sha256 == key_event_digest(TF, labour, "retired")
    assert two.env_sha256 == key_event_digest(TF, labour, "compromised")
    assert roster_signers(encode(compromised), trust[0], trust[1]) == ["coord"]
    # Distinct inputs, distinct digests: the length prefixes keep the fields apart.
    assert key_event_digest("ab", b"c" * 8, "added") != key_event_digest("a", b"bc" * 4, "added")
    assert kid_sig(tf.ids["labour"].sign_pk) == labour


def test_registry_keys_parse_as_schema_key_writes_them() -> None:
    assert parse_schema_key(schema_key("tf.alert", 2)) == ("tf.alert", 2)
    assert parse_schema_key("tf.red_flag.v12") == ("tf.red_flag", 12)
    for bad in ("tf.alert", "tf.alert.v", "tf.alert.v02", "tf.alert.v0", ".v1", "tf.alert.vx"):
        assert parse_schema_key(bad) is None, bad
