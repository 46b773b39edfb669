"""Issue 15, third review, on a real nats-server: what the agent quarantines early as E_EPOCH
(PROTOCOL.md 8.4: "Nothing early is lost") and what it does with it when the key comes.

- A message quarantined at once (a joiner's backlog, the per-channel bound, an epoch more than
  one ahead) is not kept whole when it is larger than the quarantine keeps of an envelope
  (``quarantine_keep_bytes``, 64 KiB by default, while an envelope may be 512 KiB): it is
  then never received again, and the valid message is lost for good.
- A quarantined E_EPOCH message that the key, once it came, proves to be something else
  (a forged or equivocating envelope: E_COMMIT here) keeps the label E_EPOCH, so every later
  key delivery of its channel verifies and opens it again, for as long as that key is held.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_epochs_kit import (
    KEY_MANAGER,
    READERS,
    epoch_message,
    epoch_taskforce,
    key_delivery,
    load_agency,
    new_key,
)
from livekit import free_port, publish_as
from tfkit import TaskForce, example_json

from tfshare.agent import Agent
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.epochs import EpochKey
from tfshare.errors import RejectCode
from tfshare.registry.book import shipped
from tfshare.seal import Sealed, envelope_hash, seal_to_epoch
from tfshare.workflows import live

pytestmark = pytest.mark.slow


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def tf() -> TaskForce:
    return epoch_taskforce(now_ms=now_ms())


@pytest.fixture
def broker(tf: TaskForce, tmp_path: Path) -> Iterator[BrokerProcess]:
    process = live.start_broker(
        tf.trusted(), tmp_path / "broker", port=free_port(), roster_bytes=tf.roster_bytes
    )
    try:
        yield process
    finally:
        process.stop()


def publish(tf: TaskForce, url: str, sender: str, sealed: Sealed, channel: str) -> None:
    subject = channel_subject("nl-north", channel, sender)
    publish_as(tf, sender, url, subject, sealed.data, sealed.msg_id.hex())


def run_until(agent: Agent, until: Callable[[], bool], *, timeout: float) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        deadline = asyncio.get_running_loop().time() + timeout
        while not until() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())


def test_a_message_quarantined_early_is_delivered_when_its_key_comes_even_if_larger_than_kept(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """A joiner's backlog message is quarantined at once (its key is behind it). The
    quarantine keeps only ``quarantine_keep_bytes`` of an envelope (here less than this one;
    by default 64 KiB, of envelopes up to 512 KiB): the early quarantine must keep it whole,
    or it can never be received again when its key comes, and a valid message is lost."""
    one = new_key("bulletin", 1, starts_ms=now_ms() - 600_000)
    old = epoch_message(tf, "police", one, seq=1, now_ms=now_ms() - 120_000)
    publish(tf, broker.url, "police", old, "bulletin")

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    agent = live.make_agent(agency, url=broker.url, clock=now_ms, witness=False)
    agent.fetch_timeout = 0.2
    agent.epoch_wait_ms = 60_000
    agent.quarantine_keep_bytes = len(old.data) // 2  # stands for an envelope over 64 KiB
    run_until(agent, lambda: len(agency.store.quarantined()) >= 1, timeout=20)
    [early] = agency.store.quarantined()
    assert (early.msg_id, early.code) == (old.msg_id, RejectCode.E_EPOCH.value)

    delivery = key_delivery(tf, one, to=READERS, seq=1, now_ms=now_ms())
    publish(tf, broker.url, KEY_MANAGER, delivery, "bulletin")
    run_until(agent, lambda: agency.store.inbox_count() >= 1, timeout=10)
    inbox = [i.msg_id for i in agency.store.inbox()]
    quarantined = agency.store.quarantined()
    agency.store.close()
    assert inbox == [old.msg_id]
    assert quarantined == []


def test_a_message_quarantined_early_is_delivered_when_its_key_comes_even_if_the_quarantine_is_full(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """The quarantine keeps no envelope content once it holds ``quarantine_total_bytes``
    (64 MiB; any member's unsigned junk counts towards it, and nothing empties it but a
    release). A message quarantined early for its key must still be kept whole: else it is
    acknowledged, never received again, and lost, where before it waited on the broker."""
    one = new_key("bulletin", 1, starts_ms=now_ms() - 600_000)
    old = epoch_message(tf, "police", one, seq=1, now_ms=now_ms() - 120_000)
    publish(tf, broker.url, "police", old, "bulletin")

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    agent = live.make_agent(agency, url=broker.url, clock=now_ms, witness=False)
    agent.fetch_timeout = 0.2
    agent.epoch_wait_ms = 60_000
    agent.quarantine_total_bytes = 0  # stands for a quarantine full of junk
    run_until(agent, lambda: len(agency.store.quarantined()) >= 1, timeout=20)
    [early] = agency.store.quarantined()
    assert (early.msg_id, early.code) == (old.msg_id, RejectCode.E_EPOCH.value)

    delivery = key_delivery(tf, one, to=READERS, seq=1, now_ms=now_ms())
    publish(tf, broker.url, KEY_MANAGER, delivery, "bulletin")
    run_until(agent, lambda: agency.store.inbox_count() >= 1, timeout=10)
    inbox = [i.msg_id for i in agency.store.inbox()]
    agency.store.close()
    assert inbox == [old.msg_id]


def test_a_quarantined_message_the_key_proves_forged_is_relabelled_and_not_opened_again(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """police (a writer) sends on "bulletin" a message naming epoch 1 but sealed under another
    key: quarantined at once as E_EPOCH (no key of the channel held, older than the wait).
    When the real key 1 comes, the release opens it and finds E_COMMIT. It must leave the
    E_EPOCH quarantine (relabelled with what it is), or every later key delivery of the
    channel (resends, new epochs: a writer can force one with the message budget) opens
    every such envelope again, in the batch's transaction, as long as epoch 1 is held."""
    one = new_key("bulletin", 1, starts_ms=now_ms() - 600_000)
    forged_key = new_key("bulletin", 1, starts_ms=one.starts_ms)
    forged = epoch_message(tf, "police", forged_key, seq=1, now_ms=now_ms() - 120_000)
    publish(tf, broker.url, "police", forged, "bulletin")

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    agent = live.make_agent(agency, url=broker.url, clock=now_ms, witness=False)
    agent.fetch_timeout = 0.2
    agent.epoch_wait_ms = 60_000
    run_until(agent, lambda: len(agency.store.quarantined()) >= 1, timeout=20)
    [early] = agency.store.quarantined()
    assert (early.msg_id, early.code) == (forged.msg_id, RejectCode.E_EPOCH.value)

    delivery = key_delivery(tf, one, to=READERS, seq=1, now_ms=now_ms())
    publish(tf, broker.url, KEY_MANAGER, delivery, "bulletin")
    run_until(agent, lambda: len(agent.epochs) >= 1, timeout=20)
    quarantined = agency.store.quarantined()
    agency.store.close()
    assert len(agent.epochs) == 1
    assert [(q.msg_id, q.code) for q in quarantined] == [(forged.msg_id, RejectCode.E_COMMIT.value)]


def _same_msg_id(tf: TaskForce, key: EpochKey, msg_id: bytes, *, seq: int, ts: int) -> Sealed:
    """An epoch-mode alert by police under ``key`` with the given msg_id (fresh nonce)."""
    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    return seal_to_epoch(
        identity=tf.ids["police"], taskforce="nl-north", channel=key.channel,
        roster_seq=tf.trusted().seq, epoch_key=key, schema=schema,
        body=schema.to_body(schema.from_json(example_json("tf.alert/1"))), seq=seq,
        now_ms=ts, rng=lambda n: msg_id + os.urandom(n - 16),
    )  # fmt: skip


def test_of_two_equivocating_envelopes_quarantined_early_the_streams_first_is_delivered(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """police publishes two envelopes under one msg_id, both waiting for their key (a
    joiner's backlog): quarantined in the same millisecond. When the key comes, the release
    must keep check 6's rule, as the stream does: the first in the stream is delivered, the
    second is E_EQUIVOCATION (said, not left as E_EPOCH). Today the quarantine is read back
    by received_ms, ties by env_hash (a WITHOUT ROWID table): the sender picks which version
    a reader delivers, and readers whose batches split differently deliver different ones."""
    one = new_key("bulletin", 1, starts_ms=now_ms() - 600_000)
    ts = now_ms() - 120_000
    msg_id = os.urandom(16)
    first = _same_msg_id(tf, one, msg_id, seq=1, ts=ts)
    second = _same_msg_id(tf, one, msg_id, seq=1, ts=ts)
    while envelope_hash(second.data) > envelope_hash(first.data):
        second = _same_msg_id(tf, one, msg_id, seq=1, ts=ts)  # the later sorts first
    subject = channel_subject("nl-north", "bulletin", "police")
    publish_as(tf, "police", broker.url, subject, first.data, "first")
    publish_as(tf, "police", broker.url, subject, second.data, "second")

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    start = now_ms()
    agent = live.make_agent(agency, url=broker.url, clock=lambda: start, witness=False)
    agent.fetch_timeout = 0.2
    agent.epoch_wait_ms = 60_000
    run_until(agent, lambda: len(agency.store.quarantined()) >= 2, timeout=20)
    assert {q.code for q in agency.store.quarantined()} == {RejectCode.E_EPOCH.value}

    delivery = key_delivery(tf, one, to=READERS, seq=1, now_ms=now_ms())
    publish(tf, broker.url, KEY_MANAGER, delivery, "bulletin")
    run_until(agent, lambda: agency.store.inbox_count() >= 1, timeout=20)
    inbox = [i.env_hash for i in agency.store.inbox()]
    quarantined = [(q.env_hash, q.code) for q in agency.store.quarantined()]
    agency.store.close()
    assert inbox == [envelope_hash(first.data)]
    assert quarantined == [(envelope_hash(second.data), RejectCode.E_EQUIVOCATION.value)]
