"""An agent killed with SIGKILL mid-stream, then restarted, delivers every message exactly once;
an agent whose outbox holds a message the broker refuses keeps receiving.

The agent runs in a subprocess (a small script around ``tfshare.agent.Agent``, built from the
same deterministic task force as the broker's). The first run fetches 5 messages at a time
and is slowed down between persisting a message and acknowledging it, so the kill lands in the
window that matters: delivered into the inbox but not yet acknowledged. JetStream redelivers what
was not acknowledged (after the consumer's ack wait, 30 s); the replay store then counts it as a
DUPLICATE, by design.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from livekit import make_agent
from tfkit import TaskForce

from tfshare import roster as R
from tfshare import transport
from tfshare.broker import BrokerProcess, channel_subject, readable_channels
from tfshare.seal import Sealed
from tfshare.store import StateStore
from tfshare.workflows.live import admin_seed

TESTS = Path(__file__).resolve().parents[1]
MESSAGES = 30
ACK_WAIT_S = 30  # tfshare.transport.provision: the consumer's ack wait

AGENT_SCRIPT = """
import asyncio, json, sys
from pathlib import Path

from livekit import make_agent
from tfkit import build_taskforce
from tfshare import transport
from tfshare.logconfig import configure
from tfshare.workflows.live import run_until_signalled

url, state, now_ms, stats_path, delay = sys.argv[1:6]
configure("warning")
agent = make_agent(build_taskforce(now_ms=int(now_ms)), "ngo", url, Path(state))
agent.batch = 5  # several fetches for the stream, so a kill can land between them
ack = transport.Delivery.ack

async def slow_ack(self):
    await asyncio.sleep(float(delay))  # persisted, not yet acknowledged: where a crash hurts
    await ack(self)

transport.Delivery.ack = slow_ack
asyncio.run(run_until_signalled(agent))
Path(stats_path).write_text(json.dumps(agent.stats.__dict__))
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def start_agent(
    url: str, state: Path, tf: TaskForce, stats: Path, delay: float
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS / "integration"), str(TESTS)])
    with (state / f"{stats.stem}.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                AGENT_SCRIPT,
                url,
                str(state),
                str(tf.now_ms),
                str(stats),
                str(delay),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _publish_all(tf: TaskForce, sender: str, url: str, sealed: list[Sealed]) -> None:
    conn = await transport.connect(
        url,
        nkey_seed=tf.ids[sender].nats_seed_encoded(),
        agency=sender,
        name="test",
        reconnect=False,
    )
    try:
        subject = channel_subject(tf.trusted().taskforce, "alerts", sender)
        for s in sealed:
            await transport.publish(conn, subject, s.data, msg_id=s.msg_id.hex())
    finally:
        await conn.close()


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


async def all_acknowledged(
    broker: BrokerProcess, tf: TaskForce, agency: str, *, timeout: float
) -> bool:
    """Wait until the agency's consumers (one per channel it reads) have nothing pending or
    awaiting an ack."""
    admin = await transport.connect(
        broker.url,
        nkey_seed=admin_seed(broker.config.parent),
        agency=None,
        name="test-admin",
        reconnect=False,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            channels = readable_channels(tf.trusted(), agency)
            if await transport.reader_backlog(admin, "nl-north", agency, channels) == (0, 0):
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await admin.close()


@pytest.fixture
def ngo_store(tmp_path: Path) -> Iterator[StateStore]:
    """ngo's state database, where the agent subprocess persists; read here."""
    store = StateStore(tmp_path / "ngo" / "state.db")
    yield store
    store.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Agent processes started by the test; killed at the end if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_agent_killed_mid_stream_then_restarted_delivers_every_message_exactly_once(
    live_tf: TaskForce,
    broker: BrokerProcess,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    ngo_store: StateStore,
) -> None:
    """SIGKILL after some deliveries, restart: the inbox ends with all 30 messages, each once."""
    sealed = [
        live_tf.seal("police", now_ms=now_ms(), seq=i, rng_seed=os.urandom(8).hex())
        for i in range(1, MESSAGES + 1)
    ]
    asyncio.run(_publish_all(live_tf, "police", broker.url, sealed))
    store = ngo_store

    first = start_agent(broker.url, tmp_path, live_tf, tmp_path / "first.json", delay=0.2)
    processes.append(first)
    assert wait_until(lambda: len(store.inbox(limit=1000)) >= 5, timeout=20), "no delivery"
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=5) == -signal.SIGKILL
    before = len(store.inbox(limit=1000))
    assert 5 <= before < MESSAGES, "the kill must land mid-stream"

    stats = tmp_path / "second.json"
    second = start_agent(broker.url, tmp_path, live_tf, stats, delay=0)
    processes.append(second)
    # Done when JetStream holds nothing unacknowledged: what was persisted but not acked before
    # the kill comes back after the ack wait and must be acknowledged too.
    assert asyncio.run(all_acknowledged(broker, live_tf, "ngo", timeout=ACK_WAIT_S + 15)), "unacked"
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=10) == 0

    counts = Counter(item.msg_id for item in store.inbox(limit=1000))
    assert set(counts) == {s.msg_id for s in sealed}
    assert all(n == 1 for n in counts.values())
    assert store.quarantined() == []
    second_run = json.loads(stats.read_text())
    assert second_run["delivered"] == MESSAGES - before
    assert second_run["rejected"] == 0
    # Redelivered after the kill: persisted before it, so duplicates, never new deliveries.
    assert 1 <= second_run["duplicates"] <= before, "the kill should land before an ack"


def test_a_message_the_broker_refuses_does_not_stop_the_agent(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """An outbox envelope the broker refuses does not keep the agent from receiving."""
    # Sealed under a newer roster (police may write "cases") than the broker's configuration.
    newer = dataclasses.replace(
        live_tf,
        signed=R.sign(
            R.grant(
                live_tf.signed,
                "police",
                channel="cases",
                read=True,
                write=True,
                now_ms=live_tf.now_ms,
            ),
            live_tf.ids["coord"],
        ),
    )
    refused = newer.seal(
        "police", channel="cases", to=["police"], now_ms=now_ms(), rng_seed=os.urandom(8).hex()
    )
    police = make_agent(live_tf, "police", broker.url, tmp_path)
    police.store.outbox_add(
        refused.msg_id, channel_subject("nl-north", "cases", "police"), refused.data, now_ms()
    )
    alert = live_tf.seal("labour", to=["police"], now_ms=now_ms(), rng_seed=os.urandom(8).hex())
    asyncio.run(_publish_all(live_tf, "labour", broker.url, [alert]))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(police.run(stop))
        deadline = time.monotonic() + 7
        while police.stats.delivered == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        task.cancel()  # do not wait out a publish in hand
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert [i.msg_id for i in police.store.inbox()] == [alert.msg_id]
