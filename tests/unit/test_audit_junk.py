"""Junk is counted, not logged: the audit service against receipt amplification.

An envelope that is not validly signed needs only NATS credentials to send. The service
refuses it (never an entry), counts it and reports the count in one ``audit_junk`` event,
not one warning per envelope. A "rejected" receipt of an envelope the service never saw
verified is counted the same way and never becomes a permanent entry; receipts of logged
messages, and accepted receipts, are logged as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog
from tfkit import NOW_MS, TaskForce, build_taskforce

from tfshare.audit.logstore import AuditStore
from tfshare.audit.service import RECEIPT_OF_UNLOGGED, AuditService
from tfshare.broker import channel_subject

ALERTS = channel_subject("nl-north", "alerts", "police")


def _service(tf: TaskForce, path: Path) -> AuditService:
    service = AuditService(
        identity=tf.ids["coord"],
        roster=tf.trusted(),
        roster_bytes=tf.roster_bytes,
        store=AuditStore(path),
        url="nats://127.0.0.1:1",
        clock=lambda: NOW_MS,
        junk_report_s=3600,
    )
    service.start()
    return service


def _junk(tf: TaskForce, n: int) -> list[tuple[bytes, str | None]]:
    """n envelopes whose signature does not verify (one bit flipped), each different."""
    items: list[tuple[bytes, str | None]] = []
    for i in range(n):
        data = bytearray(tf.seal("police", seq=100 + i, rng_seed=f"junk{i}").data)
        data[-1] ^= 1
        items.append((bytes(data), ALERTS))
    return items


def _receipt(
    tf: TaskForce, receiver: str, msg_id: bytes, env_hash: bytes, outcome: str, seq: int
) -> tuple[bytes, str | None]:
    schema = tf.schemas.lookup("tf.receipt/1")
    assert schema is not None
    words = {"msg_id": msg_id.hex(), "env_hash": env_hash.hex(), "outcome": outcome,
             "received": "2026-11-18T10:00:00Z"}  # fmt: skip
    if outcome == "rejected":
        words["code"] = "E_BAD_SIG"
    sealed = tf.seal(receiver, channel="receipts", schema="tf.receipt/1", seq=seq,
                     body=schema.to_body(schema.from_json(json.dumps(words).encode())),
                     rng_seed=f"receipt-{receiver}-{seq}")  # fmt: skip
    return sealed.data, channel_subject("nl-north", "receipts", receiver)


def test_junk_envelopes_are_counted_and_reported_in_one_event(tmp_path: Path) -> None:
    tf = build_taskforce()
    service = _service(tf, tmp_path / "audit.db")
    before = service.store.size
    good = tf.seal("police", seq=1, rng_seed="good")
    with structlog.testing.capture_logs() as events:
        service.ingest([*_junk(tf, 40), (good.data, ALERTS), *_junk(tf, 10)])
        service.report_junk(force=True)
    # Only the good envelope became an entry.
    assert service.store.size == before + 1
    assert service.store.entry(before).msg_id == good.msg_id
    assert (service.stats.refused, service.stats.junk) == (50, 50)
    # No warning per junk envelope: one aggregate event with the counts by code.
    loud = [e for e in events if e["log_level"] in ("warning", "error")]
    assert [e["event"] for e in loud] == ["audit_junk"]
    assert loud[0]["count"] == 50
    assert loud[0]["by_code"] == {"E_BAD_SIG": 50}
    # Reported once: the next report has nothing to say until more junk comes.
    with structlog.testing.capture_logs() as later:
        service.report_junk(force=True)
    assert later == []


def test_the_junk_report_waits_for_its_interval(tmp_path: Path) -> None:
    tf = build_taskforce()
    service = _service(tf, tmp_path / "audit.db")
    with structlog.testing.capture_logs() as events:
        service.ingest(_junk(tf, 3))
        service.report_junk()  # junk_report_s not reached: nothing yet
    assert [e for e in events if e["event"] == "audit_junk"] == []
    service.junk_report_s = 0
    with structlog.testing.capture_logs() as events:
        service.report_junk()
    assert [e["count"] for e in events if e["event"] == "audit_junk"] == [3]


def test_a_rejected_receipt_of_an_envelope_never_logged_is_counted_not_appended(
    tmp_path: Path,
) -> None:
    tf = build_taskforce(receipts=True)
    service = _service(tf, tmp_path / "audit.db")
    before = service.store.size
    logged = tf.seal("police", seq=1, rng_seed="logged")
    never = tf.seal("police", seq=2, rng_seed="never-seen")  # the broker never carried it
    items = [
        (logged.data, ALERTS),
        # in the same batch as its message: logged
        _receipt(tf, "ngo", logged.msg_id, logged.env_hash, "rejected", 1),
        # of an envelope the service never saw verified: junk
        _receipt(tf, "ngo", never.msg_id, never.env_hash, "rejected", 2),
        # the right msg_id but other bytes than the logged envelope: junk too
        _receipt(tf, "labour", logged.msg_id, b"\x07" * 32, "rejected", 1),
        # accepted: the receiver verified the sender's signature; kept as evidence
        _receipt(tf, "labour", never.msg_id, never.env_hash, "accepted", 2),
    ]
    with structlog.testing.capture_logs() as events:
        indices = service.ingest(items)
        service.report_junk(force=True)
    assert indices == [before, before + 1, None, None, before + 2]
    words = service.store.all_receipts()
    assert [(w.receiver, w.msg_id, w.outcome) for _, w in words] == [
        ("ngo", logged.msg_id, "rejected"),
        ("labour", never.msg_id, "accepted"),
    ]
    assert service.stats.junk == 2
    assert service.stats.refused == 0  # the receipts themselves verified
    junk = [e for e in events if e["event"] == "audit_junk"]
    assert junk[0]["by_code"] == {RECEIPT_OF_UNLOGGED: 2}


def test_a_rejected_receipt_of_a_message_logged_earlier_is_logged(tmp_path: Path) -> None:
    tf = build_taskforce(receipts=True)
    service = _service(tf, tmp_path / "audit.db")
    logged = tf.seal("police", seq=1, rng_seed="logged-earlier")
    service.ingest([(logged.data, ALERTS)])
    receipt = _receipt(tf, "ngo", logged.msg_id, logged.env_hash, "rejected", 1)
    [index] = service.ingest([receipt])
    assert index is not None
    assert service.store.receipts_for(logged.msg_id)[0][1].outcome == "rejected"
    assert service.stats.junk == 0
