"""Issue 15, on a real nats-server: releasing quarantined messages when their epoch key comes
is contained per message (PROTOCOL.md 8.4): one that cannot be processed stays quarantined and
never takes the key just kept, or the other messages, with it."""

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
from tfshare.protocol import Outcome
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
    publish_as(tf, sender, url, channel_subject("nl-north", channel, sender), sealed.data,
               sealed.msg_id.hex())  # fmt: skip


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


def test_a_quarantined_message_that_cannot_be_released_keeps_neither_the_key_nor_the_others(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Three epoch-1 messages come before ngo's key (one may wait, two are quarantined).
    Releasing one of the two fails (a fault no check foresaw, here its receipt): it stays in
    the quarantine, while the key is kept and the other two are delivered."""
    one = new_key("alerts", 1, starts_ms=now_ms() - 60_000)
    sent = [epoch_message(tf, "police", one, seq=seq, now_ms=now_ms()) for seq in (1, 2, 3)]
    for sealed in sent:
        publish(tf, broker.url, "police", sealed, "alerts")

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    agent = live.make_agent(agency, url=broker.url, clock=now_ms, witness=False)
    agent.fetch_timeout = 0.2
    agent.epoch_retry_s = 0.5
    agent.awaiting_per_channel = 1
    run_until(agent, lambda: len(agency.store.quarantined()) >= 2, timeout=20)
    early = agency.store.quarantined()
    assert {q.code for q in early} == {RejectCode.E_EPOCH.value}
    poisoned = early[0].msg_id

    receipt = agent._queue_receipt_on

    def failing_receipt(subject: str, outcome: Outcome, at_ms: int) -> None:
        if getattr(getattr(outcome, "message", None), "msg_id", None) == poisoned:
            raise RuntimeError("a fault no check foresaw")
        receipt(subject, outcome, at_ms)

    agent._queue_receipt_on = failing_receipt  # type: ignore[method-assign, assignment]
    delivery = key_delivery(tf, one, to=READERS, seq=1, now_ms=now_ms())
    publish(tf, broker.url, KEY_MANAGER, delivery, "alerts")
    run_until(agent, lambda: agency.store.inbox_count() >= 2, timeout=20)

    inbox = sorted(i.msg_id for i in agency.store.inbox())
    left = [q.msg_id for q in agency.store.quarantined()]
    keys, _ = agency.store.epoch_keys("nl-north", state_key=agency.identity().state_key)
    held = [(k.channel, k.epoch) for k in keys]
    agency.store.close()
    assert inbox == sorted(s.msg_id for s in sent if s.msg_id != poisoned)
    assert left == [poisoned]
    assert ("alerts", 1) in held
