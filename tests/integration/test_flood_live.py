"""A member floods a channel on a real broker with its limits set (issue 11, item 4): the
flooder's own quota stops it (``SenderQuotaFull``), the channel's stream stays within its
share of max_bytes, another
member's message on another channel reaches a reader of both channels ahead of the flood's
backlog, and every message the broker accepted is delivered (nothing valid lost)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import free_port, make_agent, run_agents
from tfkit import TaskForce

from tfshare import transport
from tfshare.broker import BrokerProcess, channel_subject, stream_name
from tfshare.errors import BrokerError, BrokerRefused
from tfshare.protocol import Delivered, Outcome, Rejection
from tfshare.workflows.live import StreamLimits, admin_seed, start_broker

# Floods a broker or times a failover: run alone, after the parallel run (make test), so
# that a busy neighbour cannot starve the broker or the service it measures.
pytestmark = pytest.mark.serial

TASKFORCE = "nl-north"
MIB = 1024 * 1024
# Small enough to reach in a test, with the same shape as the defaults: one sender's quota of
# largest messages (400 x 516 KiB) fits in half of the channel's share of max_bytes, so the
# flooder is stopped by its quota before the channel's stream is full for everyone.
LIMITS = StreamLimits(max_bytes=1024 * MIB, max_msgs_per_sender=400, max_receipts_per_sender=2000)
ALERTS = LIMITS.channel_limits(["alerts", "tips"])["alerts"]
SMALL_FLOOD = 300  # valid alerts, signed by the flooder
BIG = 400 * 1024  # junk of this size until the quota refuses it (at most 100 get in)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def limited_broker(live_tf: TaskForce, tmp_path: Path) -> Iterator[BrokerProcess]:
    process = start_broker(
        live_tf.trusted(),
        tmp_path / "broker",
        port=free_port(),
        roster_bytes=live_tf.roster_bytes,
        limits=LIMITS,
    )
    try:
        yield process
    finally:
        process.stop()


async def _connect(tf: TaskForce, agency: str, url: str) -> transport.Connection:
    return await transport.connect(
        url,
        nkey_seed=tf.ids[agency].nats_seed_encoded(),
        agency=agency,
        name=f"test-{agency}",
        reconnect=False,
    )


async def flood(tf: TaskForce, url: str) -> tuple[set[bytes], int, list[BrokerError]]:
    """labour floods 'alerts': many small valid alerts, then large junk until refused.
    Returns (msg_ids of the valid alerts accepted, junk accepted, the refusals)."""
    conn = await _connect(tf, "labour", url)
    subject = channel_subject(TASKFORCE, "alerts", "labour")
    try:
        sealed = [
            tf.seal("labour", now_ms=now_ms(), seq=i, rng_seed=os.urandom(8).hex())
            for i in range(1, SMALL_FLOOD + 1)
        ]
        results = await transport.publish_many(
            conn, [(subject, s.data, s.msg_id.hex()) for s in sealed], timeout=30
        )
        accepted = {s.msg_id for s, r in zip(sealed, results, strict=True) if isinstance(r, tuple)}
        refusals = [r for r in results if isinstance(r, BrokerError)]
        junk = 0
        for _ in range(LIMITS.max_msgs_per_sender):  # bounded: the quota refuses sooner
            try:
                await transport.publish(
                    conn, subject, os.urandom(BIG), msg_id=os.urandom(16).hex(), timeout=10
                )
            except BrokerError as exc:
                refusals.append(exc)
                if len(refusals) >= 3:
                    break
                continue
            junk += 1
        return accepted, junk, refusals
    finally:
        await conn.close()


async def stream_bytes(broker: BrokerProcess) -> tuple[int, int, int]:
    """(bytes, messages, configured max_bytes) of the 'alerts' channel's stream."""
    admin = await transport.connect(
        broker.url,
        nkey_seed=admin_seed(broker.config.parent),
        agency=None,
        name="test-admin",
        reconnect=False,
    )
    try:
        info = await admin.js.stream_info(stream_name(TASKFORCE, "alerts"))
        return int(info.state.bytes), int(info.state.messages), int(info.config.max_bytes)
    finally:
        await admin.close()


@pytest.mark.slow
def test_flood_on_one_channel_is_stopped_by_its_quota_and_does_not_hold_up_another(
    live_tf: TaskForce, limited_broker: BrokerProcess, tmp_path: Path
) -> None:
    url = limited_broker.url
    accepted, junk, refusals = asyncio.run(flood(live_tf, url))

    # The flooder's own quota stopped it, with a refusal that says so.
    assert len(accepted) == SMALL_FLOOD
    assert junk == LIMITS.max_msgs_per_sender - SMALL_FLOOD
    assert refusals and all(isinstance(r, transport.SenderQuotaFull) for r in refusals)
    assert "sender quota full" in refusals[0].message
    assert isinstance(refusals[0], BrokerRefused)  # not queued, not retried

    # The broker stays within its bounds.
    size, messages, max_bytes = asyncio.run(stream_bytes(limited_broker))
    assert ALERTS.max_msgs_per_sender == LIMITS.max_msgs_per_sender  # not capped
    assert max_bytes == ALERTS.max_bytes == LIMITS.max_bytes // 2  # alerts and tips share it
    assert size <= ALERTS.max_bytes
    assert messages == LIMITS.max_msgs_per_sender

    # Another member is not affected: ngo's tip on 'tips' is accepted.
    tip = live_tf.seal(
        "ngo",
        channel="tips",
        schema="tf.tip_summary/1",
        now_ms=now_ms(),
        rng_seed=os.urandom(8).hex(),
    )

    async def publish_tip() -> None:
        conn = await _connect(live_tf, "ngo", url)
        try:
            await transport.publish(
                conn,
                channel_subject(TASKFORCE, "tips", "ngo"),
                tip.data,
                msg_id=tip.msg_id.hex(),
            )
        finally:
            await conn.close()

    asyncio.run(publish_tip())

    # police reads both channels: the tip comes ahead of the flood's backlog on 'alerts'.
    police = make_agent(live_tf, "police", url, tmp_path)
    order: list[Outcome] = []
    police.on_outcome = order.append
    total = SMALL_FLOOD + junk + 1
    run_agents([police], lambda: len(order) >= total, timeout=120)

    tip_at = next(
        i
        for i, o in enumerate(order)
        if isinstance(o, Delivered) and o.message.msg_id == tip.msg_id
    )
    assert tip_at < 2 * police.batch, f"the tip came after {tip_at} flood messages"
    assert len(order) - tip_at > SMALL_FLOOD // 2  # the flood's backlog was still there

    # Nothing the broker accepted is lost: every valid alert delivered, the junk quarantined.
    delivered = {o.message.msg_id for o in order if isinstance(o, Delivered)}
    assert delivered == accepted | {tip.msg_id}
    assert sum(isinstance(o, Rejection) for o in order) == junk
    assert {i.msg_id for i in police.store.inbox(limit=10_000)} == accepted | {tip.msg_id}
