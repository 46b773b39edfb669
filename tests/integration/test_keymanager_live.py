"""The key manager on a real nats-server (issue 15, items 2-3): epoch 1 to every reader of an
epoch-mode channel; after a roster removing a reader is published, a new epoch reaches the
others only, and what is sealed under it does not open for the removed member; the message
budget of a channel, read from its stream; deliveries made before an outage published after
it, without a second key.

The broker's users come from ``names.permissions``. If it does not yet let a key manager
publish on its sender subject of each epoch channel and read that channel's stream info
(issue 15, BROKER), the test broker's configuration is given exactly those subjects for the
key manager (``_km_broker``): the test checks the key manager, not that permission.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog
from kmkit import KM, edited, km_taskforce, trusted, without
from livekit import free_port
from tfkit import TaskForce, example_json

from tfshare import roster as R
from tfshare import transport
from tfshare.broker import BrokerProcess, check_config
from tfshare.epochs import EpochKey, EpochKeyDelivery, EpochKeyring
from tfshare.errors import RejectCode, Rejected
from tfshare.keymanager.plan import epoch_channels
from tfshare.keymanager.service import KeyManager
from tfshare.keymanager.store import KeyManagerStore
from tfshare.names import channel_subject, permissions, stream_name
from tfshare.registry.book import shipped
from tfshare.replay import MemoryReplayStore, ReplayEntry
from tfshare.seal import Opened, ReceivePolicy, open_envelope, seal_to_epoch
from tfshare.workflows.live import provision_broker, write_broker_config

TF = "nl-north"


def _now() -> int:
    return time.time_ns() // 1_000_000


def _km_subjects(roster: R.TrustedRoster) -> list[str]:
    """What the key manager publishes to: its subject of every epoch channel, and the
    stream info of those channels (the message budget)."""
    return [channel_subject(TF, c, KM) for c in epoch_channels(roster)] + [
        f"$JS.API.STREAM.INFO.{stream_name(TF, c)}" for c in epoch_channels(roster)
    ]


def _km_broker(tf: TaskForce, directory: Path, *, stream_info: bool = True) -> BrokerProcess:
    roster = trusted(tf, now_ms=_now())
    port = free_port()
    config = write_broker_config(roster, directory, port=port)
    allowed = permissions(roster, KM)
    assert allowed is not None
    wanted = [s for s in _km_subjects(roster) if stream_info or "STREAM.INFO" not in s]
    missing = [s for s in wanted if s not in allowed.publish]
    marker = f"# {KM}\n      permissions: {{\n        publish: {{ allow: ["
    text = config.read_text()
    assert marker in text
    if missing:  # what names.permissions does not grant
        extra = "".join(f'"{s}", ' for s in missing)
        text = text.replace(marker, marker + extra)
    if not stream_info:  # a broker configured before the key manager could read its streams
        start = text.index(marker)
        end = text.index("\n", start + len(marker))
        line = text[start:end]
        channel_streams = "$JS.API.STREAM.INFO." + stream_name(roster.taskforce, "")
        for subject in (s for s in allowed.publish if s.startswith(channel_streams)):
            line = line.replace(f'"{subject}", ', "").replace(f', "{subject}"', "")
        text = text[:start] + line + text[end:]
    config.write_text(text)
    check_config(config)
    broker = BrokerProcess(config=config, host="127.0.0.1", port=port, log=directory / "nats.log")
    broker.start()
    try:
        asyncio.run(provision_broker(broker.url, directory, roster, tf.roster_bytes))
    except BaseException:
        broker.stop()
        raise
    return broker


@pytest.fixture
def km_tf() -> TaskForce:
    return km_taskforce(now_ms=_now())


@pytest.fixture
def km_broker(km_tf: TaskForce, tmp_path: Path) -> Iterator[BrokerProcess]:
    broker = _km_broker(km_tf, tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class Reader:
    """One reader of "alerts", as its agent receives: every envelope of the channel's
    stream through its own durable consumer, opened with every receive check."""

    agency: str
    tf: TaskForce
    roster: R.TrustedRoster
    keyring: EpochKeyring = field(default_factory=EpochKeyring)
    replay: MemoryReplayStore = field(default_factory=MemoryReplayStore)
    deliveries: list[EpochKeyDelivery] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (sender, code)
    opened: list[Opened] = field(default_factory=list)

    def take(self, data: bytes, subject: str) -> None:
        try:
            opened = open_envelope(
                data, identity=self.tf.ids[self.agency], roster=self.roster,
                replay=self.replay, schemas=shipped(), now_ms=_now(), subject=subject,
                policy=ReceivePolicy(), epochs=self.keyring,
            )  # fmt: skip
        except Rejected as exc:
            self.refused.append((str(exc.sender), str(exc.code)))
            return
        assert isinstance(opened, Opened)
        self.replay.record(
            ReplayEntry(opened.sender_kid, opened.msg_id, opened.env_hash, opened.ts_ms,
                        opened.sender, opened.channel, opened.seq)
        )  # fmt: skip
        if isinstance(opened.record, EpochKeyDelivery):
            if self.keyring.check_delivery(opened.record):
                self.keyring.add(EpochKey.of(opened.record))
            self.deliveries.append(opened.record)
        else:
            self.opened.append(opened)


async def _receive(
    url: str, readers: list[Reader], until: Callable[[], bool], timeout: float
) -> None:
    conns = [
        await transport.connect(
            url,
            nkey_seed=r.tf.ids[r.agency].nats_seed_encoded(),
            agency=r.agency,
            name=f"test-{r.agency}",
            reconnect=False,
        )
        for r in readers
    ]
    try:
        consumers = [
            transport.Consumer(c, TF, r.agency, channels=["alerts"])
            for c, r in zip(conns, readers, strict=True)
        ]
        for consumer in consumers:
            await consumer.bind()
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            for reader, consumer in zip(readers, consumers, strict=True):
                for delivery in await consumer.fetch(16, 0.05):
                    reader.take(delivery.data, delivery.subject)
                    await delivery.ack()
    finally:
        for conn in conns:
            await conn.close()


def _manager(tf: TaskForce, url: str, db: Path) -> KeyManager:
    anchor = tf.anchor

    def accept(data: bytes) -> R.TrustedRoster:
        roster, _ = R.verify_roster(data, anchor=anchor, state=None, now_ms=_now())
        return roster

    return KeyManager(
        identity=tf.ids[KM],
        roster=trusted(tf, now_ms=_now()),
        roster_bytes=tf.roster_bytes,
        store=KeyManagerStore(db, state_key=tf.ids[KM].state_key),
        url=url,
        clock=_now,
        accept_roster=accept,
        every_s=0.05,
    )


async def _with_manager(manager: KeyManager, work: Callable[[], object]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        result = work()
        if asyncio.iscoroutine(result):
            await result
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def _publish_roster(tf: TaskForce, url: str) -> None:
    conn = await transport.connect(
        url, nkey_seed=tf.ids["coord"].nats_seed_encoded(), agency="coord", name="test-coord",
        reconnect=False,
    )  # fmt: skip
    try:
        await transport.put_roster(conn, TF, tf.roster_bytes)
    finally:
        await conn.close()


@pytest.mark.parametrize("direct", [True, False], ids=["direct+epoch", "epoch-only"])
def test_removal_starts_an_epoch_the_removed_member_cannot_read(
    tmp_path: Path, direct: bool
) -> None:
    km_tf = km_taskforce(now_ms=_now(), direct=direct)
    km_broker = _km_broker(km_tf, tmp_path / "broker")
    try:
        _removal(km_tf, km_broker.url, tmp_path)
    finally:
        km_broker.stop()


def _removal(km_tf: TaskForce, url: str, tmp_path: Path) -> None:
    before = trusted(km_tf, now_ms=_now())
    readers = {a: Reader(a, km_tf, before) for a in ("coord", "labour", "ngo", "police")}
    manager = _manager(km_tf, url, tmp_path / "keymanager.db")
    removed = without(km_tf, "labour", now_ms=_now())
    after = trusted(removed, now_ms=_now())

    def holds(epoch: int, *agencies: str) -> Callable[[], bool]:
        return lambda: all(readers[a].keyring.get("alerts", epoch) for a in agencies)

    async def work() -> None:
        everyone = list(readers.values())
        await _receive(url, everyone, holds(1, *readers), timeout=10)
        await _publish_roster(removed, url)
        for agency in ("coord", "ngo", "police"):
            readers[agency].roster = after  # their agents accept it too
        await _receive(url, everyone, lambda: holds(2, "coord", "ngo", "police")()
                       and len(readers["labour"].refused) >= 1, timeout=10)  # fmt: skip

    asyncio.run(_with_manager(manager, work))

    first = {a: r.deliveries[0] for a, r in readers.items()}
    assert {(d.epoch, d.reason) for d in first.values()} == {(1, "initial")}
    assert len({d.key for d in first.values()}) == 1
    for agency in ("coord", "ngo", "police"):
        assert [(d.epoch, d.reason) for d in readers[agency].deliveries] == [
            (1, "initial"),
            (2, "members"),
        ]
    new_key = readers["police"].keyring.get("alerts", 2)
    assert new_key is not None and new_key.key != first["police"].key
    # labour got epoch 1 only; the envelope of epoch 2 on the stream does not open for it
    assert [d.epoch for d in readers["labour"].deliveries] == [1]
    assert readers["labour"].refused == [(KM, RejectCode.E_NOT_RECIPIENT.value)]
    assert readers["labour"].keyring.get("alerts", 2) is None
    assert manager.stats.epochs == 2 and manager.stats.rosters == 1

    # police seals under the new epoch; ngo opens it, labour cannot
    sealed = seal_to_epoch(
        identity=km_tf.ids["police"], taskforce=TF, channel="alerts", roster_seq=after.seq,
        epoch_key=new_key, schema=km_tf.schemas.lookup("tf.alert/1"),  # type: ignore[arg-type]
        body=_alert_body(km_tf), seq=1, now_ms=_now(), rng=os.urandom,
    )  # fmt: skip
    subject = channel_subject(TF, "alerts", "police")
    readers["ngo"].take(sealed.data, subject)
    assert [o.msg_id for o in readers["ngo"].opened] == [sealed.msg_id]
    readers["labour"].take(sealed.data, subject)  # under the roster before its removal
    readers["labour"].roster = after
    readers["labour"].take(sealed.data, subject)  # ... and under the one that removed it
    assert readers["labour"].refused[1:] == [
        ("police", RejectCode.E_EPOCH.value),
        ("police", RejectCode.E_NOT_RECIPIENT.value),
    ]
    assert readers["labour"].opened == []


def _alert_body(tf: TaskForce) -> bytes:
    schema = tf.schemas.lookup("tf.alert/1")
    assert schema is not None
    return schema.to_body(schema.from_json(example_json("tf.alert/1")))


async def _publish_epoch_message(tf: TaskForce, url: str, key: EpochKey, seq: int) -> None:
    roster = trusted(tf, now_ms=_now())
    schema = tf.schemas.lookup("tf.alert/1")
    assert schema is not None
    sealed = seal_to_epoch(
        identity=tf.ids["police"], taskforce=TF, channel="alerts", roster_seq=roster.seq,
        epoch_key=key, schema=schema, body=_alert_body(tf), seq=seq, now_ms=_now(),
        rng=os.urandom,
    )  # fmt: skip
    conn = await transport.connect(
        url, nkey_seed=tf.ids["police"].nats_seed_encoded(), agency="police", name="test-police",
        reconnect=False,
    )  # fmt: skip
    try:
        await transport.publish(
            conn, channel_subject(TF, "alerts", "police"), sealed.data, msg_id=sealed.msg_id.hex()
        )
    finally:
        await conn.close()


async def _turns(manager: KeyManager, count: int) -> None:
    target = manager.stats.turns + count
    deadline = time.monotonic() + 10
    while manager.stats.turns < target and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def test_the_message_budget_read_from_the_stream_starts_a_new_epoch(tmp_path: Path) -> None:
    """Budget 2: the key manager's own delivery does not count; the second message does."""
    base = km_taskforce(now_ms=_now())
    tf = edited(base, R.set_epoch_policy(base.signed, "alerts", period_ms=3_600_000,
                                         max_messages=2, now_ms=_now()))  # fmt: skip
    broker = _km_broker(tf, tmp_path / "broker")
    try:
        police = Reader("police", tf, trusted(tf, now_ms=_now()))
        manager = _manager(tf, broker.url, tmp_path / "keymanager.db")

        async def work() -> None:
            await _receive(broker.url, [police], lambda: len(police.deliveries) == 1, 10)
            key = police.keyring.get("alerts", 1)
            assert key is not None
            await _publish_epoch_message(tf, broker.url, key, 1)
            await _turns(manager, 3)
            assert manager.stats.epochs == 1  # one message of two
            await _publish_epoch_message(tf, broker.url, key, 2)
            await _receive(broker.url, [police], lambda: len(police.deliveries) == 2, 10)

        asyncio.run(_with_manager(manager, work))
    finally:
        broker.stop()
    assert [(d.epoch, d.reason) for d in police.deliveries] == [(1, "initial"), (2, "messages")]
    assert len(police.opened) == 2  # the two messages of epoch 1 opened


def test_deliveries_made_before_an_outage_are_published_after_it_without_a_second_key(
    km_tf: TaskForce, km_broker: BrokerProcess, tmp_path: Path
) -> None:
    """An epoch made (and persisted) whose deliveries were not published - the broker went
    away - goes out as it was once the broker is back; then the broker restarts under the
    running key manager, which reconnects and re-keys after the next roster."""
    url = km_broker.url
    manager = _manager(km_tf, url, tmp_path / "keymanager.db")
    [made] = manager.make_epochs({})
    [queued] = manager.store.pending()
    key = manager.store.current()["alerts"].key
    ngo = Reader("ngo", km_tf, trusted(km_tf, now_ms=_now()))
    removed = without(km_tf, "labour", now_ms=_now())

    async def work() -> None:
        await _receive(url, [ngo], lambda: len(ngo.deliveries) == 1, 10)
        await _turns(manager, 2)
        km_broker.stop()
        await asyncio.sleep(0.3)
        km_broker.start()
        await _publish_roster(removed, url)
        await _receive(url, [ngo], lambda: len(ngo.deliveries) == 2, 15)

    asyncio.run(_with_manager(manager, work))
    assert made.epoch == 1 and ngo.deliveries[0].key == key
    assert ngo.replay.lookup(km_tf.ids[KM].kid_sig, queued.msg_id) is not None
    assert [(d.epoch, d.reason) for d in ngo.deliveries] == [(1, "initial"), (2, "members")]
    assert manager.stats.epochs == 2  # the first made before run, no second key for it
    assert manager.store.pending() == []


def test_a_stream_it_may_not_read_leaves_the_other_reasons_working(tmp_path: Path) -> None:
    """Without $JS.API.STREAM.INFO on the channel's stream (a broker configured before the
    key manager's permission had it) the message budget is not checked, said once in the
    log; epoch 1 and the re-key after a removal still happen."""
    tf = km_taskforce(now_ms=_now())
    broker = _km_broker(tf, tmp_path / "broker", stream_info=False)
    try:
        ngo = Reader("ngo", tf, trusted(tf, now_ms=_now()))
        manager = _manager(tf, broker.url, tmp_path / "keymanager.db")

        async def work() -> None:
            await _receive(broker.url, [ngo], lambda: len(ngo.deliveries) == 1, 10)
            await _publish_roster(without(tf, "labour", now_ms=_now()), broker.url)
            await _receive(broker.url, [ngo], lambda: len(ngo.deliveries) == 2, 10)

        with structlog.testing.capture_logs() as logs:
            asyncio.run(_with_manager(manager, work))
    finally:
        broker.stop()
    assert [(d.epoch, d.reason) for d in ngo.deliveries] == [(1, "initial"), (2, "members")]
    unreadable = [e for e in logs if e["event"] == "epoch_stream_unreadable"]
    assert [e["channel"] for e in unreadable] == ["alerts"]  # once, then not asked again
