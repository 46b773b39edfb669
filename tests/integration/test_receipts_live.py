"""Signed receipts on a real broker: every agent receipts what it processed, to the
coordinators; the audit service logs each receipt and keeps what it says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import free_port, make_agent, publish_as, run_agents
from tfkit import TaskForce, build_taskforce

from tfshare.audit.entry import RECEIPT_OF
from tfshare.audit.logstore import AuditStore
from tfshare.audit.service import AuditService, CheckpointPolicy
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.workflows.live import start_broker


@pytest.fixture(scope="module")
def receipts_tf() -> TaskForce:
    return build_taskforce(now_ms=time.time_ns() // 1_000_000, receipts=True)


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


def _now() -> int:
    return time.time_ns() // 1_000_000


def test_every_verified_message_is_receipted_and_logged_and_junk_is_not(
    receipts_tf: TaskForce, receipts_broker: BrokerProcess, tmp_path: Path
) -> None:
    tf, url = receipts_tf, receipts_broker.url
    subject = channel_subject("nl-north", "alerts", "police")
    good = []
    for seq in (1, 2):
        sealed = tf.seal("police", seq=seq, now_ms=_now(), rng_seed=f"good{seq}")
        publish_as(tf, "police", url, subject, sealed.data, sealed.msg_id.hex())
        good.append(sealed)
    forged = tf.seal("police", seq=3, now_ms=_now(), rng_seed="forged")
    tampered = bytearray(forged.data)
    tampered[-1] ^= 1
    publish_as(tf, "police", url, subject, bytes(tampered))

    agents = [make_agent(tf, name, url, tmp_path) for name in ("ngo", "labour", "coord")]
    for agent in agents:
        agent.receipts = True
    run_agents(
        agents,
        lambda: (
            all(a.stats.delivered >= 2 and a.stats.rejected >= 1 for a in agents)
            and all(a.stats.published >= 2 for a in agents[:2])
            and agents[2].stats.delivered >= 2 + 4
        ),  # coord also receives the four receipts (none for the unsigned forgery)
        timeout=15,
    )
    ngo, labour, coord = agents
    assert ngo.stats.published == 2 and labour.stats.published == 2
    # Coordinators receive receipts (and log them); they send none, not even for receipts.
    assert coord.stats.published == 0
    assert coord.store.outbox() == []

    service = AuditService(
        identity=tf.ids["coord"],
        roster=tf.trusted(),
        roster_bytes=tf.roster_bytes,
        store=AuditStore(tmp_path / "audit.db"),
        url=url,
        clock=_now,
        checkpoints=CheckpointPolicy(every=100, interval_s=0.5),
        fetch_timeout=0.2,
    )

    async def audit() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        deadline = time.monotonic() + 10
        # roster + 2 alerts + 4 receipts (2 members x 2 alerts); the forgery is refused and
        # gets no receipt: its signature never verified
        while service.stats.appended < 7 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(audit())
    store = AuditStore(tmp_path / "audit.db")
    assert store.size == 7
    assert service.stats.refused == 1
    for sealed in good:
        words = store.receipts_for(sealed.msg_id)
        assert sorted(w.receiver for _, w in words) == ["labour", "ngo"]
        assert {(w.outcome, w.code, w.env_hash) for _, w in words} == {
            ("accepted", None, sealed.env_hash)
        }
        for index, _ in words:
            entry = store.entry(index)
            assert entry.entry_type == "receipt"
            assert entry.refs == [(RECEIPT_OF, sealed.msg_id, sealed.env_hash)]
    # Junk whose signature does not verify costs its sender nothing but NATS credentials:
    # no member receipts it, so it never reaches the permanent log.
    assert store.receipts_for(forged.msg_id) == []
