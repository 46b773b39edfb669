"""Poison, failures and junk on a live broker (issue 11, items 1, 2, 4 and 5).

- 40 envelopes signed by a real member with a ciphertext shorter than the AEAD tag: each is
  quarantined with E_DECRYPT and acknowledged, and the valid alert behind them is delivered in
  the same run (it used to stall the agent: nothing acknowledged, every later message held up);
- a message whose processing fails (a failure injected for one msg_id) does not hold up the
  others of its batch: it is retried, then after ``max_attempts`` deliveries quarantined with
  E_INTERNAL and acknowledged, and never comes back;
- unsigned junk from a member's NATS credentials gets no receipt and no log line of its own; a
  validly signed envelope that is rejected does get its receipt;
- a flood of large junk keeps the quarantine's content within its caps.

Real nats-server, real SQLite, real keys; agents in-process.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import structlog
from livekit import free_port, make_agent, run_agents
from tfkit import TaskForce, build_taskforce

from tfshare import protocol, transport
from tfshare.agent import Agent
from tfshare.broker import BrokerProcess, channel_subject, stream_name
from tfshare.envelope import Envelope
from tfshare.protocol import Outcome
from tfshare.seal import Sealed, signed_message
from tfshare.workflows.live import admin_seed, start_broker

pytestmark = pytest.mark.slow

TASKFORCE = "nl-north"
SUBJECT = channel_subject(TASKFORCE, "alerts", "police")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fresh_alert(tf: TaskForce, seq: int = 1) -> Sealed:
    return tf.seal("police", seq=seq, now_ms=now_ms(), rng_seed=os.urandom(8).hex())


def poison(tf: TaskForce) -> bytes:
    """A fresh alert whose ciphertext is cut to 5 bytes, signed again with police's real key."""
    env = msgspec.msgpack.decode(fresh_alert(tf).data, type=Envelope)
    ct = env.ct[:5]
    sig = tf.ids["police"].sign(signed_message(env.hdr, ct))
    return msgspec.msgpack.encode(Envelope(env.v, env.hdr, ct, sig))


def bad_signature(tf: TaskForce) -> bytes:
    data = bytearray(fresh_alert(tf).data)
    data[-1] ^= 1
    return bytes(data)


async def publish_all(tf: TaskForce, url: str, payloads: list[bytes]) -> None:
    """Publish as police, in this order, each with its own Nats-Msg-Id."""
    conn = await transport.connect(
        url,
        nkey_seed=tf.ids["police"].nats_seed_encoded(),
        agency="police",
        name="test-police",
        reconnect=False,
    )
    try:
        for data in payloads:
            await transport.publish(conn, SUBJECT, data, msg_id=os.urandom(16).hex(), timeout=5)
    finally:
        await conn.close()


async def unfinished(broker: BrokerProcess, agency: str) -> tuple[int, int]:
    """(pending, awaiting an ack) over every consumer of ``agency`` (by name)."""
    admin = await transport.connect(
        broker.url,
        nkey_seed=admin_seed(broker.config.parent),
        agency=None,
        name="test-admin",
        reconnect=False,
    )
    try:
        infos = [
            info
            for channel in ("alerts", "tips")
            for info in await admin.js.consumers_info(stream_name(TASKFORCE, channel))
        ]
        mine = [i for i in infos if i.name.startswith("agent_") and agency in i.name]
        assert mine, [i.name for i in infos]
        return sum(int(i.num_pending) for i in mine), sum(int(i.num_ack_pending) for i in mine)
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def receipts_tf() -> TaskForce:
    return build_taskforce(now_ms=now_ms(), receipts=True)


@pytest.fixture
def receipts_broker(receipts_tf: TaskForce, tmp_path: Path) -> Iterator[BrokerProcess]:
    process = start_broker(
        receipts_tf.trusted(),
        tmp_path / "broker",
        port=free_port(),
        roster_bytes=receipts_tf.roster_bytes,
    )
    try:
        yield process
    finally:
        process.stop()


def test_forty_poison_envelopes_are_quarantined_and_the_next_alert_is_delivered(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """40 member-signed envelopes with a ciphertext shorter than the tag, then one valid alert:
    in one run the alert is delivered, the 40 are quarantined with E_DECRYPT, and the
    consumer has nothing pending or unacknowledged (none stalls, none comes back)."""
    poisons = [poison(live_tf) for _ in range(40)]
    valid = fresh_alert(live_tf, seq=41)
    asyncio.run(publish_all(live_tf, broker.url, [*poisons, valid.data]))
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([ngo], lambda: ngo.stats.delivered == 1 and ngo.stats.rejected == 40)
    assert [i.msg_id for i in ngo.store.inbox()] == [valid.msg_id]
    quarantined = ngo.store.quarantined(limit=100)
    assert len(quarantined) == 40
    assert {q.code for q in quarantined} == {"E_DECRYPT"}
    assert {q.sender for q in quarantined} == {"police"}
    assert (ngo.stats.failed, ngo.stats.unverified) == (0, 0)  # verified, refused by a check
    assert asyncio.run(unfinished(broker, "ngo")) == (0, 0)


class FailingFor(Agent):
    """An agent with a bug that strikes one message: its receipt bookkeeping raises for one
    msg_id (any step of a message's processing would do)."""

    bad_msg_id: bytes = b""

    def _queue_receipt(self, delivery: transport.Delivery, outcome: Outcome, now_ms: int) -> None:
        message = getattr(outcome, "message", None)
        if message is not None and message.msg_id == self.bad_msg_id:
            raise RuntimeError("injected failure")
        super()._queue_receipt(delivery, outcome, now_ms)


def test_a_message_that_keeps_failing_is_quarantined_after_bounded_attempts(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Three alerts in one batch, the middle one failing every time: the other two are
    delivered and acknowledged at once; the bad one is retried, then on its third delivery
    quarantined with E_INTERNAL and acknowledged, logged each time, and not delivered again."""
    alerts = [fresh_alert(live_tf, seq=n) for n in (1, 2, 3)]
    asyncio.run(publish_all(live_tf, broker.url, [a.data for a in alerts]))
    plain = make_agent(live_tf, "ngo", broker.url, tmp_path)
    ngo = FailingFor(
        identity=plain.identity,
        roster=plain.roster,
        schemas=plain.schemas,
        store=plain.store,
        url=plain.url,
        clock=plain.clock,
        fetch_timeout=0.2,
    )
    ngo.max_attempts, ngo.failed_retry_s = 3, 0.2
    ngo.bad_msg_id = alerts[1].msg_id
    with structlog.testing.capture_logs() as logs:
        run_agents([ngo], lambda: ngo.stats.rejected == 1, timeout=20)
        # Let a would-be redelivery show itself (the ack wait is 30 s; a nak'd one is at once).
        run_agents([ngo], lambda: False, timeout=1.0)
    assert sorted(i.msg_id for i in ngo.store.inbox()) == sorted(
        [alerts[0].msg_id, alerts[2].msg_id]
    )
    [kept] = ngo.store.quarantined()
    assert (kept.code, kept.msg_id, kept.sender) == ("E_INTERNAL", alerts[1].msg_id, "police")
    assert "processing failed 3 times (RuntimeError)" in kept.reason
    failed = [e for e in logs if e["event"] == "processing_failed"]
    assert [e["attempt"] for e in failed] == [1, 2]
    assert all(e["error"] == "RuntimeError" for e in failed)
    assert "injected failure" not in str(logs)
    [final] = [e for e in logs if e["event"] == "processing_failed_quarantined"]
    assert (final["attempt"], final["code"]) == (3, "E_INTERNAL")
    assert ngo.stats.failed == 3  # no fourth attempt
    assert asyncio.run(unfinished(broker, "ngo")) == (0, 0)


def test_junk_gets_no_receipt_and_a_signed_rejected_envelope_does(
    receipts_tf: TaskForce, receipts_broker: BrokerProcess, tmp_path: Path
) -> None:
    """From police's NATS credentials: 5 envelopes with a bad signature (junk) and 1 validly
    signed that is rejected (E_DECRYPT). ngo sends exactly one receipt (for the signed one),
    counts the junk, and logs it as one summary line, not one warning each."""
    junk = [bad_signature(receipts_tf) for _ in range(5)]
    signed_bad = poison(receipts_tf)
    asyncio.run(publish_all(receipts_tf, receipts_broker.url, [*junk, signed_bad]))
    ngo = make_agent(receipts_tf, "ngo", receipts_broker.url, tmp_path)
    ngo.receipts = True
    with structlog.testing.capture_logs() as logs:
        run_agents([ngo], lambda: ngo.stats.rejected == 6 and ngo.stats.published >= 1)
        run_agents([ngo], lambda: False, timeout=0.5)  # time for a second receipt to show
    assert ngo.stats.published == 1
    assert ngo.store.outbox() == []
    assert (ngo.stats.unverified, ngo.stats.rejected) == (5, 6)
    rejected_lines = [e for e in logs if e["event"] == "envelope_rejected"]
    assert [e["code"] for e in rejected_lines] == ["E_DECRYPT"]
    summaries = [e for e in logs if e["event"] == "unverified_envelopes_rejected"]
    assert sum(e["count"] for e in summaries) == 5
    assert all(e["codes"] == {"E_BAD_SIG": e["count"]} for e in summaries)
    assert len(summaries) <= 2  # the first batch's line, and the one at stop
    # The junk is still quarantined, with its code.
    codes = sorted(q.code for q in ngo.store.quarantined())
    assert codes == ["E_BAD_SIG"] * 5 + ["E_DECRYPT"]

    # The one receipt is the signed envelope's: coord receives it.
    coord = make_agent(receipts_tf, "coord", receipts_broker.url, tmp_path)
    run_agents([coord], lambda: coord.stats.delivered >= 1)
    run_agents([coord], lambda: False, timeout=0.5)
    receipts = [i for i in coord.store.inbox() if i.channel == "receipts"]
    assert [(i.sender, i.schema) for i in receipts] == [("ngo", "tf.receipt/1")]


def test_a_flood_of_large_junk_keeps_the_quarantine_within_its_caps(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """30 junk envelopes of 200 KB each (6 MB): every one has its quarantine row with code,
    hash and full size, but at most 16 KiB of each and 128 KiB in all is kept."""
    flood = [b"\xc1" + os.urandom(199_999) for _ in range(30)]  # 0xc1: never msgpack
    asyncio.run(publish_all(live_tf, broker.url, flood))
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    ngo.quarantine_keep_bytes = 16 * 1024
    ngo.quarantine_total_bytes = 128 * 1024
    run_agents([ngo], lambda: ngo.stats.rejected == 30, timeout=20)
    rows = ngo.store.quarantined(limit=100)
    assert len(rows) == 30
    assert {q.code for q in rows} == {"E_MALFORMED"}
    assert {q.size for q in rows} == {200_000}
    assert all(len(q.envelope) in (0, 16 * 1024) for q in rows)
    entries, kept = ngo.store.quarantine_usage()
    assert entries == 30
    assert kept == 8 * 16 * 1024  # 8 prefixes fit in 128 KiB; the rest are metadata only
    assert asyncio.run(unfinished(broker, "ngo")) == (0, 0)


def test_a_receive_fault_is_retried_and_is_no_verdict_on_the_message(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding F5: a fault inside the checks (here a MemoryError on the first try) said
    nothing about the envelope, yet it was quarantined with E_INTERNAL and acknowledged at
    once. Now it is retried like any failed processing, and the valid alert is delivered."""
    alert = fresh_alert(live_tf)
    asyncio.run(publish_all(live_tf, broker.url, [alert.data]))
    real = protocol.open_envelope  # type: ignore[attr-defined]
    faults = {"left": 1}

    def out_of_memory_once(data: bytes, **kwargs: object) -> object:
        if data == alert.data and faults["left"]:
            faults["left"] -= 1
            raise MemoryError
        return real(data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(protocol, "open_envelope", out_of_memory_once)
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    ngo.failed_retry_s = 0.1
    with structlog.testing.capture_logs() as logs:
        run_agents([ngo], lambda: ngo.stats.delivered == 1, timeout=20)
    assert [i.msg_id for i in ngo.store.inbox()] == [alert.msg_id]
    assert ngo.store.quarantined() == []
    assert ngo.stats.failed == 1
    [failed] = [e for e in logs if e["event"] == "processing_failed"]
    assert (failed["error"], failed["attempt"]) == ("MemoryError", 1)
    assert asyncio.run(unfinished(broker, "ngo")) == (0, 0)


class StoreBreaksFor(Agent):
    """An agent whose state database loses a table while one message is settled: an SQLite
    error that is the store's (not a constraint this message broke)."""

    broken: bool = True

    def _queue_receipt(self, delivery: transport.Delivery, outcome: Outcome, now_ms: int) -> None:
        if self.broken:
            raise sqlite3.OperationalError("no such table: outbox")
        super()._queue_receipt(delivery, outcome, now_ms)


def test_a_store_error_that_is_no_constraint_acknowledges_nothing_and_loses_nothing(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Review: an unclassified SQLite error (a missing table) was taken as the message's own
    fault, so after max_attempts a valid message was acknowledged with nothing stored. Now the
    batch waits, unacknowledged, and is delivered once the store works again."""
    alerts = [fresh_alert(live_tf, seq=n) for n in (1, 2)]
    asyncio.run(publish_all(live_tf, broker.url, [a.data for a in alerts]))
    plain = make_agent(live_tf, "ngo", broker.url, tmp_path)
    ngo = StoreBreaksFor(
        identity=plain.identity,
        roster=plain.roster,
        schemas=plain.schemas,
        store=plain.store,
        url=plain.url,
        clock=plain.clock,
        fetch_timeout=0.2,
    )
    ngo.max_attempts, ngo.failed_retry_s, ngo.persist_retry_s = 2, 0.1, 0.2
    with structlog.testing.capture_logs() as logs:
        run_agents(
            [ngo],
            lambda: len([e for e in logs if e["event"] == "persist_failed"]) >= 3,
            timeout=20,
        )
    assert ngo.store.inbox() == [] and ngo.store.quarantined() == []
    assert ngo.stats.failed == 0  # never counted as the message's own failure
    ngo.broken = False
    run_agents([ngo], lambda: ngo.stats.delivered == 2, timeout=20)
    assert sorted(i.msg_id for i in ngo.store.inbox()) == sorted(a.msg_id for a in alerts)
    assert asyncio.run(unfinished(broker, "ngo")) == (0, 0)


def test_schema_lookups_are_bounded_per_batch_and_forgotten_after_the_retry_pause(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Review finding F8: a member naming a new made-up schema in every message made the agent
    look each up (one KV get while the batch waits) and remember each name for ever."""
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    ngo._batch_fetches = set()
    asked = [ngo._may_fetch_schema(f"made.up{i}/1") for i in range(6)]
    assert asked == [True, True, True, True, False, False]
    assert ngo._may_fetch_schema("made.up0/1")  # a name already deferred in this batch
    ngo.schema_retry_s = 60.0
    ngo._schema_attempts = {f"old{i}/1": time.monotonic() - 61 for i in range(1000)}
    asyncio.run(ngo._fetch_schema(None, "new/1"))
    assert list(ngo._schema_attempts) == ["new/1"]
