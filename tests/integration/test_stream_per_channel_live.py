"""One JetStream stream per channel, on a real nats-server (issue 11, item 4).

Each channel's stream has limits of its own: the receipts channel keeps small messages for a
week with a large per-reader quota, message channels keep envelopes of up to 516 KiB for 30
days. So a flooder that fills its quota on one channel can still publish on another, and the
receipts readers send for a flood are all accepted (with one stream and one quota for every
channel, a reader's receipts quota ran out with the flood). A roster change that adds a
channel gives it its stream and its readers' consumers; the single all-channels stream of
earlier versions is deleted once drained and refused while it holds unread messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from livekit import free_port, make_agent, publish_as, run_agents
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from tfkit import TaskForce, build_taskforce

from tfshare import roster as R
from tfshare import transport
from tfshare.broker import (
    BrokerProcess,
    audit_durable_name,
    channel_subject,
    durable_name,
    legacy_stream_name,
    stream_name,
)
from tfshare.encoding import encode
from tfshare.errors import BrokerError
from tfshare.protocol import Delivered, Outcome
from tfshare.store import StateStore
from tfshare.workflows.live import (
    BrokerSupervisor,
    StreamLimits,
    admin_seed,
    provision_broker,
    start_broker,
)

# Floods a broker or times a failover: run alone, after the parallel run (make test), so
# that a busy neighbour cannot starve the broker or the service it measures.
pytestmark = pytest.mark.serial

TF = "nl-north"
MIB = 1024 * 1024
GIB = 1024 * MIB
QUOTA = 40  # labour's quota on 'alerts': small enough to fill in a test


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def receipts_tf() -> TaskForce:
    return build_taskforce(now_ms=now_ms(), receipts=True)


def _broker(tf: TaskForce, directory: Path, limits: StreamLimits) -> BrokerProcess:
    return start_broker(
        tf.trusted(), directory, port=free_port(), roster_bytes=tf.roster_bytes, limits=limits
    )


@pytest.fixture
def receipts_broker(receipts_tf: TaskForce, tmp_path: Path) -> Iterator[BrokerProcess]:
    process = _broker(receipts_tf, tmp_path / "broker", StreamLimits())
    try:
        yield process
    finally:
        process.stop()


async def _admin(broker: BrokerProcess) -> transport.Connection:
    return await transport.connect(
        broker.url,
        nkey_seed=admin_seed(broker.config.parent),
        agency=None,
        name="test-admin",
        reconnect=False,
    )


def test_each_channel_has_a_stream_with_its_own_limits(
    receipts_tf: TaskForce, receipts_broker: BrokerProcess
) -> None:
    """Read back from the broker: the receipts stream has its own size, age and quota; every
    reader has its consumer on each channel's stream it reads, the audit service one on
    every stream; every KV bucket is bounded; no all-channels stream."""

    async def read() -> dict[str, object]:
        admin = await _admin(receipts_broker)
        try:
            found: dict[str, object] = {}
            for channel in ("alerts", "tips", "receipts"):
                found[channel] = await transport.stream_limits(admin, TF, channel)
                info = await admin.js.stream_info(stream_name(TF, channel))
                found[f"{channel}/subjects"] = info.config.subjects
                consumers = await admin.js.consumers_info(stream_name(TF, channel))
                found[f"{channel}/consumers"] = sorted(c.name for c in consumers)
            for bucket in ("roster", "schemas", "audit", "witness"):
                info = await admin.js.stream_info(f"KV_tf_{TF}_{bucket}")
                found[bucket] = (info.config.max_msg_size, info.config.max_bytes)
            names = [s.config.name for s in await admin.js.streams_info()]
            found["streams"] = sorted(n for n in names if not n.startswith(("KV_", "OBJ_")))
            return found
        finally:
            await admin.close()

    found = asyncio.run(read())
    receipts, alerts = found["receipts"], found["alerts"]
    assert isinstance(receipts, transport.ChannelLimits)
    assert isinstance(alerts, transport.ChannelLimits)
    defaults = StreamLimits()
    assert receipts == transport.ChannelLimits(
        max_bytes=defaults.max_bytes // 8,
        max_msgs_per_sender=defaults.max_receipts_per_sender,
        max_age_days=7,
        max_msg_size=transport.RECEIPT_MAX_MSG_SIZE,
    )
    assert alerts == found["tips"]
    assert alerts.max_msg_size == transport.MAX_MSG_SIZE > receipts.max_msg_size
    assert alerts.max_age_days == 30
    assert alerts.max_msgs_per_sender == defaults.max_msgs_per_sender
    assert found["receipts/subjects"] == [f"tf.{TF}.ch.receipts.*"]
    assert found["streams"] == sorted(stream_name(TF, c) for c in ("alerts", "tips", "receipts"))
    trusted = receipts_tf.trusted()
    for channel in ("alerts", "tips", "receipts"):
        readers = [durable_name(a, channel) for a in sorted(trusted.readers[channel])]
        assert found[f"{channel}/consumers"] == sorted([*readers, audit_durable_name("coord")])
    for bucket in ("roster", "schemas", "audit", "witness"):
        bounds = found[bucket]
        assert isinstance(bounds, tuple)
        assert 0 < bounds[0] <= 1024 * 1024 and 0 < bounds[1] <= 128 * MIB, bucket


@pytest.mark.slow
def test_a_flooder_full_on_one_channel_publishes_on_another_and_every_receipt_is_accepted(
    receipts_tf: TaskForce, tmp_path: Path
) -> None:
    """labour fills its quota on 'alerts' (QUOTA messages, the next one refused) and still
    publishes on 'receipts'; ngo and police receipt every alert of the flood and one more
    alert after it - more receipts each than the alerts quota - and none is refused."""
    tf = receipts_tf
    limits = StreamLimits(max_bytes=GIB, max_msgs_per_sender=QUOTA, max_receipts_per_sender=2000)
    broker = _broker(tf, tmp_path / "broker", limits)
    try:

        async def flood() -> list[BrokerError]:
            conn = await transport.connect(
                broker.url,
                nkey_seed=tf.ids["labour"].nats_seed_encoded(),
                agency="labour",
                name="flooder",
                reconnect=False,
            )
            try:
                sealed = [
                    tf.seal("labour", now_ms=now_ms(), seq=i, rng_seed=os.urandom(8).hex())
                    for i in range(1, QUOTA + 2)
                ]
                subject = channel_subject(TF, "alerts", "labour")
                results = await transport.publish_many(
                    conn, [(subject, s.data, s.msg_id.hex()) for s in sealed], timeout=30
                )
                # Full on 'alerts', labour still publishes on 'receipts'.
                await transport.publish(
                    conn,
                    channel_subject(TF, "receipts", "labour"),
                    os.urandom(512),
                    msg_id=os.urandom(16).hex(),
                )
                return [r for r in results if isinstance(r, BrokerError)]
            finally:
                await conn.close()

        refusals = asyncio.run(flood())
        assert len(refusals) == 1 and isinstance(refusals[0], transport.SenderQuotaFull)

        after = tf.seal("police", now_ms=now_ms(), seq=1, rng_seed=os.urandom(8).hex())
        publish_as(
            tf, "police", broker.url, channel_subject(TF, "alerts", "police"), after.data,
            after.msg_id.hex(),
        )  # fmt: skip

        agents = [make_agent(tf, name, broker.url, tmp_path) for name in ("ngo", "police")]
        for agent in agents:
            agent.receipts = True
        ngo = agents[0]
        with structlog.testing.capture_logs() as events:
            run_agents(
                agents,
                # Every reader has every alert and has sent a receipt for each: stopping
                # earlier would let a batch fetched ahead be delivered without its receipts
                # being flushed (they stay in the outbox for the next run).
                lambda: all(
                    a.stats.delivered >= QUOTA + 1 and a.stats.published >= a.stats.delivered
                    for a in agents
                ),
                timeout=60,
            )
        assert ngo.stats.delivered == QUOTA + 1 > QUOTA  # more receipts than the alerts quota
        refused = [e for e in events if e["event"] == "outbox_refused"]
        assert refused == [], refused[:1]
        for agent in agents:
            assert agent.stats.published == agent.stats.delivered
            assert agent.store.outbox() == []

        async def receipts_kept() -> int:
            admin = await _admin(broker)
            try:
                info = await admin.js.stream_info(stream_name(TF, "receipts"))
                return int(info.state.messages)
            finally:
                await admin.close()

        # Every receipt, and labour's message on 'receipts', is in the receipts stream.
        assert asyncio.run(receipts_kept()) == sum(a.stats.published for a in agents) + 1
    finally:
        broker.stop()


def test_a_channel_added_to_the_roster_gets_its_stream_and_its_readers_consumers(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """A coordinator grants a new channel 'cases' (ngo writes, police reads) and publishes
    the roster: the broker's supervisor provisions its stream and police's consumer on it
    (and the audit service's), and police's agent receives ngo's message on it."""
    signed = R.grant(live_tf.signed, "ngo", channel="cases", read=False, write=True,
                     now_ms=now_ms())  # fmt: skip
    signed = R.grant(signed, "police", channel="cases", read=True, write=False, now_ms=now_ms())
    grown = dataclasses.replace(live_tf, signed=R.sign(signed, live_tf.ids["coord"]))

    async def put_roster() -> None:
        conn = await transport.connect(
            broker.url,
            nkey_seed=live_tf.ids["coord"].nats_seed_encoded(),
            agency="coord",
            name="test-coord",
            reconnect=False,
        )
        try:
            await transport.put_roster(conn, TF, encode(grown.signed))
        finally:
            await conn.close()

    supervisor = BrokerSupervisor(
        broker,
        tmp_path / "broker",
        live_tf.anchor,
        StateStore(tmp_path / "broker-state" / "state.db"),
        live_tf.trusted(),
    )
    asyncio.run(put_roster())
    assert supervisor.check() is not None

    async def consumers() -> list[str]:
        admin = await _admin(broker)
        try:
            infos = await admin.js.consumers_info(stream_name(TF, "cases"))
            return sorted(i.name for i in infos)
        finally:
            await admin.close()

    assert asyncio.run(consumers()) == sorted(
        [durable_name("police", "cases"), audit_durable_name("coord")]
    )

    sealed = grown.seal("ngo", channel="cases", now_ms=now_ms(), rng_seed=os.urandom(8).hex())
    publish_as(grown, "ngo", broker.url, channel_subject(TF, "cases", "ngo"), sealed.data)
    police = make_agent(grown, "police", broker.url, tmp_path)
    outcomes: list[Outcome] = []
    police.on_outcome = outcomes.append
    run_agents([police], lambda: bool(outcomes), timeout=15)
    assert [type(o) for o in outcomes] == [Delivered]
    delivered = outcomes[0]
    assert isinstance(delivered, Delivered) and delivered.message.msg_id == sealed.msg_id


def test_the_legacy_all_channels_stream_is_refused_while_unread_and_deleted_once_drained(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """A broker provisioned by an earlier version has one stream TF_<tf> over every channel.
    While a reader's consumer on it has a message not acknowledged, provisioning refuses
    (deleting it would lose the message), with a hint; once drained, it is deleted and the
    channel streams take its place."""
    legacy = legacy_stream_name(TF)

    async def make_legacy() -> None:
        admin = await _admin(broker)
        try:
            for channel in ("alerts", "tips"):
                await admin.js.delete_stream(stream_name(TF, channel))
            await admin.js.add_stream(StreamConfig(name=legacy, subjects=[f"tf.{TF}.ch.>"]))
            await admin.js.add_consumer(
                legacy, ConsumerConfig(durable_name="agent_ngo", ack_policy=AckPolicy.EXPLICIT)
            )
            await admin.js.publish(channel_subject(TF, "alerts", "police"), b"unread")
        finally:
            await admin.close()

    async def drain() -> None:
        admin = await _admin(broker)
        try:
            sub = await admin.js.pull_subscribe_bind("agent_ngo", legacy)
            for msg in await sub.fetch(1, timeout=5):
                await msg.ack_sync()
        finally:
            await admin.close()

    async def streams() -> list[str]:
        admin = await _admin(broker)
        try:
            names = [s.config.name for s in await admin.js.streams_info()]
            return sorted(n for n in names if not n.startswith(("KV_", "OBJ_")))
        finally:
            await admin.close()

    asyncio.run(make_legacy())
    directory = broker.config.parent
    with pytest.raises(transport.LegacyStreamNotDrained) as caught:
        asyncio.run(provision_broker(broker.url, directory, live_tf.trusted()))
    assert "1 message(s)" in caught.value.message and legacy in caught.value.message
    assert "nats stream rm" in caught.value.hint
    assert asyncio.run(streams()) == [legacy]  # nothing deleted, nothing half-made

    asyncio.run(drain())
    asyncio.run(provision_broker(broker.url, directory, live_tf.trusted()))
    assert asyncio.run(streams()) == [stream_name(TF, "alerts"), stream_name(TF, "tips")]
