"""The audit service against what should not be on its channels (issue 5, bad input): a
receipt sealed by an agency outside the roster is refused with its code, not logged, and
reported as an event naming what (code, msg_id) and where (subject); the service keeps
running and logs what comes next.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import structlog
from livekit import publish_as
from test_audit_live import _run
from test_receipts_live import receipts_broker, receipts_tf  # noqa: F401  (fixtures)
from tfkit import TaskForce

from tfshare.audit.logstore import AuditStore
from tfshare.audit.service import AuditService, CheckpointPolicy
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.keys import Identity
from tfshare.registry.book import shipped
from tfshare.seal import Recipient, seal_to


def _now() -> int:
    return time.time_ns() // 1_000_000


def _receipt_body(about: bytes) -> bytes:
    return json.dumps(
        {
            "msg_id": about.hex(),
            "env_hash": "00" * 32,
            "outcome": "accepted",
            "received": "2026-11-21T08:00:00Z",
        }
    ).encode()


def test_a_receipt_from_a_non_member_is_refused_and_the_service_goes_on(
    receipts_tf: TaskForce,  # noqa: F811
    receipts_broker: BrokerProcess,  # noqa: F811
    tmp_path: Path,
) -> None:
    tf = receipts_tf
    roster = tf.trusted()
    receipt = shipped().lookup("tf.receipt/1")
    assert receipt is not None
    coord = roster.members["coord"]
    # An outsider (keys of its own, no membership) seals a receipt to the coordinator in the
    # name of police with the construction alone (seal() itself would refuse a sender outside
    # the roster), and police's leaked NATS credentials carry it onto the receipts channel.
    impostor = Identity.generate("police", "Police", rng=os.urandom, now_ms=_now())
    forged = seal_to(
        identity=impostor,
        taskforce=roster.taskforce,
        channel="receipts",
        roster_seq=roster.seq,
        recipients=[Recipient("coord", coord.enc_key.pk)],
        schema=receipt,
        body=receipt.to_body(receipt.from_json(_receipt_body(os.urandom(16)))),
        seq=1,
        now_ms=_now(),
        rng=os.urandom,
    )
    subject = channel_subject(roster.taskforce, "receipts", "police")
    publish_as(tf, "police", receipts_broker.url, subject, forged.data, forged.msg_id.hex())
    # Then an ordinary alert: the service must still log it.
    alert = tf.seal("police", seq=1, now_ms=_now(), rng_seed="after-the-intruder")
    publish_as(tf, "police", receipts_broker.url,
               channel_subject(roster.taskforce, "alerts", "police"),
               alert.data, alert.msg_id.hex())  # fmt: skip

    service = AuditService(
        identity=tf.ids["coord"],
        roster=roster,
        roster_bytes=tf.roster_bytes,
        store=AuditStore(tmp_path / "audit.db"),
        url=receipts_broker.url,
        clock=_now,
        checkpoints=CheckpointPolicy(every=100, interval_s=0.3),
        fetch_timeout=0.2,
    )
    with structlog.testing.capture_logs() as events:
        # roster entry + the alert; the forged receipt refused
        _run(service, lambda: service.stats.appended == 2 and service.stats.refused == 1)
    assert (service.stats.appended, service.stats.refused) == (2, 1)

    refused = [e for e in events if e["event"] == "audit_envelope_refused"]
    assert len(refused) == 1
    assert refused[0]["code"] == "E_UNKNOWN_SENDER"  # a key the roster does not have
    assert refused[0]["subject"] == subject  # where it came from
    assert refused[0]["msg_id"] in (forged.msg_id.hex(), None)

    store = AuditStore(tmp_path / "audit.db")
    logged = [store.entry(i) for i in range(store.size)]
    assert [e.entry_type for e in logged] == ["roster", "message"]
    assert logged[1].msg_id == alert.msg_id
    assert store.all_receipts() == []  # nothing the outsider said was kept
