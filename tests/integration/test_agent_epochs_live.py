"""The agent's side of epoch mode (issue 15) on a real nats-server: key deliveries kept sealed
in the state database (never in the inbox), epoch-mode messages delivered and readable after a
restart, a message that arrives before its key, a future epoch that never comes, and
publishing through the agent's desk on an epoch-only channel.

The task force is ``agent_epochs_kit.epoch_taskforce``: "alerts" takes epoch mode only,
"keymgr" is the key manager. Key deliveries are sealed as the key manager seals them.
"""

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
    state_files,
)
from livekit import free_port, publish_as
from structlog.testing import capture_logs
from tfkit import TaskForce, example_json

from tfshare.agent import Agent
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.desk import api
from tfshare.desk.service import Desk
from tfshare.desk.views import iso
from tfshare.epochs import EpochKey
from tfshare.errors import TrustError
from tfshare.protocol import Delivered, Outcome
from tfshare.seal import Sealed, reopen_stored
from tfshare.workflows import live


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def tf() -> TaskForce:
    return epoch_taskforce(now_ms=now_ms())


@pytest.fixture
def broker(tf: TaskForce, tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh broker per test: a message left waiting for its key must not reach the next
    test's agent (the consumers are durable)."""
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


def deliver(
    tf: TaskForce, url: str, key: EpochKey, *, seq: int, to: tuple[str, ...] = READERS
) -> None:
    publish(
        tf, url, KEY_MANAGER, key_delivery(tf, key, to=to, seq=seq, now_ms=now_ms()), key.channel
    )


def agent_of(agency: live.Agency, url: str) -> Agent:
    agent = live.make_agent(agency, url=url, clock=now_ms, witness=False)
    agent.fetch_timeout = 0.2
    return agent


def run_until(agent: Agent, until: Callable[[], bool], *, timeout: float = 15.0) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        deadline = asyncio.get_running_loop().time() + timeout
        while not until() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())
    assert until(), f"not reached within {timeout} s: {agent.stats}"


def test_a_delivered_key_is_kept_sealed_an_epoch_message_is_delivered_both_survive_restart(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    start = now_ms() - 60_000
    key = new_key("alerts", 1, starts_ms=start)
    deliver(tf, broker.url, key, seq=1)
    first = epoch_message(tf, "police", key, seq=1, now_ms=now_ms())
    assert first.epoch == 1 and first.recipients == ()
    publish(tf, broker.url, "police", first, "alerts")

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    assert len(agency.epochs) == 0
    agent = agent_of(agency, broker.url)
    announced: list[Outcome] = []  # what the desk's feed (listen, the web inbox) is told
    agent.on_outcome = announced.append
    with capture_logs() as events:
        run_until(agent, lambda: agent.stats.delivered == 1 and agent.stats.epoch_keys == 1)
    assert [o.message.msg_id for o in announced if isinstance(o, Delivered)] == [first.msg_id]
    assert agent.health.last_sender == "police"

    # The key: held, in the shared keyring and in the state database, sealed.
    assert agency.epochs is agent.epochs
    held = agent.epochs.get("alerts", 1)
    assert held is not None and held.key == key.key and held.starts_ms == start
    kept, unreadable = agency.store.epoch_keys("nl-north", state_key=tf.ids["ngo"].state_key)
    assert [(k.channel, k.epoch, k.key) for k in kept] == [("alerts", 1, key.key)]
    assert unreadable == 0
    assert key.key not in state_files(agency.store.path)
    # The message in the inbox, the key delivery nowhere in it.
    [item] = agency.store.inbox()
    assert item.msg_id == first.msg_id
    assert not agency.store.quarantined()
    # Logged by channel, epoch and sender; never the key.
    [received] = [e for e in events if e["event"] == "epoch_key_received"]
    assert (received["channel"], received["epoch"], received["sender"], received["new"]) == (
        "alerts",
        1,
        KEY_MANAGER,
        True,
    )
    assert not [e for e in events if key.key.hex() in repr(e) or key.key in repr(e).encode()]
    assert not [
        e
        for e in events
        if e["event"] == "envelope_delivered" and e.get("schema") == "tf.epoch-key/1"
    ]
    agency.store.close()

    # Restart: the key is opened from the state again, by the CLI's path and the agent's.
    again = load_agency(tf, "ngo", tmp_path / "ngo")
    reloaded = again.epochs.get("alerts", 1)
    assert reloaded is not None and reloaded.key == key.key
    [shown] = list(live.read_inbox(again, again.store.inbox()))
    assert isinstance(shown, live.InboxMessage)
    assert shown.opened.epoch == 1 and shown.opened.msg_id == first.msg_id
    second = epoch_message(tf, "police", key, seq=2, now_ms=now_ms())
    publish(tf, broker.url, "police", second, "alerts")
    restarted = agent_of(again, broker.url)
    run_until(restarted, lambda: restarted.stats.delivered == 1)
    assert {i.msg_id for i in again.store.inbox()} == {first.msg_id, second.msg_id}
    opened = reopen_stored(
        second.data,
        identity=tf.ids["ngo"],
        roster=again.roster,
        schemas=again.registry,
        epochs=restarted.epochs,
    )
    assert opened.epoch == 1
    again.store.close()


def test_a_message_whose_key_arrives_after_it_is_delivered_once_the_key_comes(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """The key's delivery is behind the message in the stream: the message is put back
    (nak with a delay) and delivered when it comes again with the key held, not quarantined."""
    key = new_key("alerts", 1, starts_ms=now_ms() - 1000)
    message = epoch_message(tf, "police", key, seq=1, now_ms=now_ms())
    publish(tf, broker.url, "police", message, "alerts")
    deliver(tf, broker.url, key, seq=1)

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    agent = agent_of(agency, broker.url)
    agent.batch = 1  # the key comes in a later batch than the message
    agent.epoch_retry_s = 0.2
    run_until(agent, lambda: agent.stats.delivered == 1)
    assert agent.stats.awaiting_key >= 1
    assert [i.msg_id for i in agency.store.inbox()] == [message.msg_id]
    assert not agency.store.quarantined()
    assert agent.stats.rejected == 0
    agency.store.close()


def test_a_key_later_in_the_same_batch_opens_the_message_without_a_redelivery(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Message and key fetched together, the message first: opened again once the key is
    settled, without waiting for a redelivery."""
    key = new_key("alerts", 1, starts_ms=now_ms() - 1000)
    message = epoch_message(tf, "police", key, seq=1, now_ms=now_ms())
    publish(tf, broker.url, "police", message, "alerts")
    deliver(tf, broker.url, key, seq=1)

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    agent = agent_of(agency, broker.url)
    agent.epoch_retry_s = 30.0  # a redelivery would come too late for the test
    run_until(agent, lambda: agent.stats.delivered == 1)
    assert agent.stats.awaiting_key == 0
    assert [i.msg_id for i in agency.store.inbox()] == [message.msg_id]
    agency.store.close()


def test_a_future_epoch_whose_key_never_comes_is_quarantined_E_EPOCH_and_the_flow_goes_on(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    one = new_key("alerts", 1, starts_ms=now_ms() - 60_000)
    two = new_key("alerts", 2, starts_ms=now_ms() - 1000)  # never delivered to ngo
    deliver(tf, broker.url, one, seq=1)
    ahead = epoch_message(tf, "police", two, seq=1, now_ms=now_ms())
    publish(tf, broker.url, "police", ahead, "alerts")
    fine = epoch_message(tf, "police", one, seq=2, now_ms=now_ms())
    publish(tf, broker.url, "police", fine, "alerts")

    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    agent = agent_of(agency, broker.url)
    agent.epoch_retry_s = 0.1
    agent.epoch_wait_ms = 600
    run_until(agent, lambda: agent.stats.rejected == 1 and agent.stats.delivered == 1)
    [quarantined] = agency.store.quarantined()
    assert quarantined.code == "E_EPOCH"
    assert quarantined.reason == (
        "no key for epoch 2 of 'alerts' yet; its key did not arrive within 0.6 s"
    )
    assert quarantined.msg_id == ahead.msg_id
    assert agent.stats.awaiting_key >= 2  # asked for again before it was given up
    assert [i.msg_id for i in agency.store.inbox()] == [fine.msg_id]
    agency.store.close()


def test_publishing_through_the_desk_on_an_epoch_only_channel_without_a_key_is_refused_exit_6(
    tf: TaskForce, tmp_path: Path
) -> None:
    """No key held for an epoch-only channel: the desk refuses with a TrustError (the CLI's
    exit 6, its hint names the key manager), and keeps nothing of the message."""
    police = load_agency(tf, "police", tmp_path / "police")
    agent = agent_of(police, "nats://127.0.0.1:1")
    desk = Desk(police, agent, now_ms)
    request = api.PublishRequest(kind="alert", channel="bulletin", body=example_json("tf.alert/1"))
    with pytest.raises(TrustError) as refused:
        asyncio.run(desk.publish(request))
    assert refused.value.message == "no epoch key for channel 'bulletin' yet"
    assert "tfshare keys serve" in refused.value.hint
    assert refused.value.exit_code == 6
    assert police.store.outbox() == [] and police.store.sent() == []
    assert desk.status().epoch_keys == []
    police.store.close()


def publish_through_desk(
    desk: Desk, agent: Agent, request: api.PublishRequest, ready: Callable[[], bool]
) -> api.Published:
    """Run the agent until ``ready()`` (its key arrived), then publish through its desk."""
    answers: list[api.Published] = []

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        for _ in range(750):
            if (ready() and agent.conn is not None) or agent.stats.rejected:
                break  # the key arrived, or its delivery was refused
            await asyncio.sleep(0.02)
        answers.append(await desk.publish(request))
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())
    return answers[0]


def test_publishing_through_the_desk_on_an_epoch_only_channel_seals_under_the_delivered_key(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    start = now_ms() - 5000
    key = new_key("bulletin", 1, starts_ms=start)
    deliver(tf, broker.url, key, seq=1)
    police = load_agency(tf, "police", tmp_path / "police")
    agent = agent_of(police, broker.url)
    desk = Desk(police, agent, now_ms)
    request = api.PublishRequest(kind="alert", channel="bulletin", body=example_json("tf.alert/1"))
    published = publish_through_desk(
        desk, agent, request, lambda: agent.epochs.get("bulletin", 1) is not None
    )
    assert (published.epoch, published.recipients, published.channel) == (1, [], "bulletin")
    assert desk.status().epoch_keys == [api.EpochKeysHeld("bulletin", 1, iso(start), 0)]
    police.store.close()
    ngo = load_agency(tf, "ngo", tmp_path / "ngo")
    reader = agent_of(ngo, broker.url)
    run_until(reader, lambda: reader.stats.delivered == 1)
    [item] = ngo.store.inbox()
    assert item.msg_id.hex() == published.msg_id
    ngo.store.close()


@pytest.fixture(scope="module")
def large_tf() -> TaskForce:
    """65 readers on "alerts" (mode policy 3): above DIRECT_AUDIENCE_MAX."""
    return epoch_taskforce(now_ms=now_ms(), extra_readers=61)


@pytest.mark.slow
def test_publishing_through_the_desk_to_more_than_64_readers_uses_epoch_mode_once_a_key_is_held(
    large_tf: TaskForce, tmp_path: Path
) -> None:
    """Direct mode to the 65 readers while police holds no key for "alerts"; epoch mode as
    soon as the key manager's delivery arrived; a reader opens it; ``agent status`` shows
    the epoch held (newest, its start, older ones kept)."""
    tf = large_tf
    assert len(tf.trusted().active_readers("alerts")) == 65
    broker = live.start_broker(
        tf.trusted(), tmp_path / "broker", port=free_port(), roster_bytes=tf.roster_bytes
    )
    try:
        start = now_ms() - 5000
        old = new_key("alerts", 1, starts_ms=start - 60_000, extra_readers=61)
        key = new_key("alerts", 2, starts_ms=start, extra_readers=61)
        police = load_agency(tf, "police", tmp_path / "police")
        agent = agent_of(police, broker.url)
        desk = Desk(police, agent, now_ms)
        request = api.PublishRequest(
            kind="alert", channel="alerts", body=example_json("tf.alert/1")
        )
        before = asyncio.run(desk.publish(request))  # not connected: queued, sealed direct
        assert before.epoch == 0 and len(before.recipients) == 65
        for seq, each in enumerate((old, key), start=1):
            deliver(tf, broker.url, each, seq=seq, to=("police", "ngo"))
        after = publish_through_desk(
            desk, agent, request, lambda: agent.epochs.get("alerts", 2) is not None
        )
        assert (after.epoch, after.recipients, after.channel) == (2, [], "alerts")
        assert after.queued is False
        assert desk.status().epoch_keys == [api.EpochKeysHeld("alerts", 2, iso(start), 1)]
        police.store.close()

        ngo = load_agency(tf, "ngo", tmp_path / "ngo")
        reader = agent_of(ngo, broker.url)
        run_until(reader, lambda: reader.stats.delivered == 2)
        inbox = {i.msg_id.hex(): i for i in ngo.store.inbox()}
        assert set(inbox) == {before.msg_id, after.msg_id}
        [read] = list(live.read_inbox(ngo, [inbox[after.msg_id]]))
        assert isinstance(read, live.InboxMessage) and read.opened.epoch == 2
        ngo.store.close()
    finally:
        broker.stop()
