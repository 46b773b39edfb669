"""Issue 15, second review R1, on a real nats-server: a message quarantined as E_EPOCH
because it could not wait for its key (the agent bounds what waits per channel) is delivered
once the key arrives, and leaves the quarantine; nothing early is lost."""

from __future__ import annotations

import asyncio
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
from tfkit import TaskForce

from tfshare.agent import Agent
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.errors import RejectCode
from tfshare.protocol import Delivered, Outcome
from tfshare.seal import Sealed
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


def test_messages_quarantined_while_their_key_was_on_its_way_are_delivered_when_it_comes(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Three epoch-1 messages arrive before ngo's key for epoch 1. One may wait (the bound
    is 1 here): the other two are quarantined as E_EPOCH at once. When the key comes, the
    two are received again from the quarantine and delivered (announced like any other),
    the waiting one on its next delivery: all three in the inbox, the quarantine empty."""
    one = new_key("alerts", 1, starts_ms=now_ms() - 60_000)
    sent = [epoch_message(tf, "police", one, seq=seq, now_ms=now_ms()) for seq in (1, 2, 3)]
    for sealed in sent:
        publish(tf, broker.url, "police", sealed, "alerts")

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    agent = live.make_agent(agency, url=broker.url, clock=now_ms, witness=False)
    agent.fetch_timeout = 0.2
    agent.epoch_retry_s = 0.5
    agent.awaiting_per_channel = 1
    announced: list[Outcome] = []
    agent.on_outcome = announced.append

    run_until(agent, lambda: len(agency.store.quarantined()) >= 2, timeout=20)
    early = agency.store.quarantined()
    assert sorted(q.msg_id for q in early if q.msg_id) == sorted(s.msg_id for s in sent[1:])
    assert {q.code for q in early} == {RejectCode.E_EPOCH.value}
    assert agency.store.inbox() == []

    delivery = key_delivery(tf, one, to=READERS, seq=1, now_ms=now_ms())
    publish(tf, broker.url, KEY_MANAGER, delivery, "alerts")
    run_until(agent, lambda: agency.store.inbox_count() >= 3, timeout=20)

    inbox = sorted(i.msg_id for i in agency.store.inbox())
    quarantined = agency.store.quarantined()
    usage = agency.store.quarantine_usage()
    agency.store.close()
    assert inbox == sorted(s.msg_id for s in sent)
    assert quarantined == [] and usage == (0, 0)
    delivered = [o.message.msg_id for o in announced if isinstance(o, Delivered)]
    assert sorted(delivered) == sorted(s.msg_id for s in sent)
    assert agent.stats.delivered == 3


def test_a_joiners_backlog_older_than_the_wait_is_quarantined_at_once_and_opened_by_its_key(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """ngo holds no key of "bulletin" and meets a message sealed longer ago than the wait:
    the backlog of a reader that joined later. It is not put back to wait (its key, if any
    comes, is behind it in the stream): quarantined at once as E_EPOCH, and delivered from
    the quarantine when the key arrives."""
    one = new_key("bulletin", 1, starts_ms=now_ms() - 600_000)
    old = epoch_message(tf, "police", one, seq=1, now_ms=now_ms() - 120_000)
    publish(tf, broker.url, "police", old, "bulletin")

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    agent = live.make_agent(agency, url=broker.url, clock=now_ms, witness=False)
    agent.fetch_timeout = 0.2
    agent.epoch_wait_ms = 60_000
    run_until(agent, lambda: len(agency.store.quarantined()) >= 1, timeout=20)
    [early] = agency.store.quarantined()
    assert (early.msg_id, early.code) == (old.msg_id, RejectCode.E_EPOCH.value)
    assert agent.stats.awaiting_key == 0

    delivery = key_delivery(tf, one, to=READERS, seq=1, now_ms=now_ms())
    publish(tf, broker.url, KEY_MANAGER, delivery, "bulletin")
    run_until(agent, lambda: agency.store.inbox_count() >= 1, timeout=20)
    inbox = [i.msg_id for i in agency.store.inbox()]
    quarantined = agency.store.quarantined()
    agency.store.close()
    assert inbox == [old.msg_id]
    assert quarantined == []
