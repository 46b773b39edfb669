"""A publisher keeps a message in its outbox until the broker's acknowledgement (issue 14,
item 7), on a real nats-server:

- the broker stops (SIGSTOP, then SIGKILL) before it acknowledges: the message is still in
  the outbox, and once a broker runs again on the same store it goes out and arrives once;
- the broker stores the message but its acknowledgement never reaches the publisher (a relay
  between them that passes the publish and drops everything the broker answers): the message
  stays in the outbox, and sending it again is deduplicated by its Nats-Msg-Id - the reader
  gets it once.

What the acknowledgement is worth on a power loss is the broker's ``sync_interval``
(docs/DEPLOY.md); with the default an acknowledged message can be in the page cache only.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import make_agent, run_agents
from tfkit import TaskForce

from tfshare import transport
from tfshare.agent import Agent
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.errors import BrokerError
from tfshare.seal import Sealed


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sealed_alert(tf: TaskForce, seq: int) -> Sealed:
    return tf.seal("police", to=["ngo"], seq=seq, now_ms=now_ms(), rng_seed=f"outbox-{seq}")


def queue(agent: Agent, sealed: Sealed) -> None:
    subject = channel_subject("nl-north", "alerts", "police")
    agent.store.outbox_add(sealed.msg_id, subject, sealed.data, now_ms())


async def connect(agent: Agent, url: str) -> transport.Connection:
    return await transport.connect(
        url,
        nkey_seed=agent.identity.nats_seed_encoded(),
        agency=agent.identity.agency_id,
        name="test-outbox",
        reconnect=False,
        connect_timeout=2,
    )


@contextlib.contextmanager
def stopped(broker: BrokerProcess) -> Iterator[None]:
    """The broker frozen (SIGSTOP): connected clients get no answer; SIGCONT after."""
    assert broker.process is not None
    broker.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        if broker.process.poll() is None:
            broker.process.send_signal(signal.SIGCONT)


@pytest.mark.slow
def test_a_broker_that_stops_before_acknowledging_leaves_the_message_in_the_outbox(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    police = make_agent(live_tf, "police", broker.url, tmp_path)
    sealed = sealed_alert(live_tf, 1)

    async def flush_while_frozen() -> None:
        conn = await connect(police, broker.url)
        try:
            queue(police, sealed)
            with stopped(broker):
                with pytest.raises(BrokerError):
                    await police.flush_outbox(conn)
                # Still frozen, never acknowledged: the message has not left the outbox.
                assert [m for m, _, _ in police.store.outbox()] == [sealed.msg_id]
                broker.kill()  # it dies without ever answering
        finally:
            with contextlib.suppress(BrokerError):
                await conn.close()

    asyncio.run(flush_while_frozen())
    assert [m for m, _, _ in police.store.outbox()] == [sealed.msg_id]
    assert police.stats.published == 0

    broker.start()  # the same configuration and JetStream store
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([police, ngo], lambda: ngo.stats.delivered >= 1, timeout=30)
    assert police.store.outbox() == []
    assert [i.msg_id for i in ngo.store.inbox()] == [sealed.msg_id]
    assert ngo.stats.delivered == 1 and ngo.stats.duplicates == 0


class AckSwallower:
    """A TCP relay between a client and the real broker: passes everything until ``swallow``
    is set, then still passes what the client sends (the publish reaches the broker and is
    stored) but drops everything the broker answers (the acknowledgement is lost)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.swallow = False
        self.dropped = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if down and self.swallow:
                        self.dropped += len(data)
                        continue
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.slow
def test_a_lost_acknowledgement_keeps_the_message_and_the_resend_arrives_once(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    police = make_agent(live_tf, "police", broker.url, tmp_path)
    sealed = sealed_alert(live_tf, 2)

    async def flush_with_ack_lost() -> None:
        relay = AckSwallower(broker.port)
        port = await relay.start()
        try:
            conn = await connect(police, f"nats://127.0.0.1:{port}")
            queue(police, sealed)
            relay.swallow = True
            with pytest.raises(BrokerError):
                await police.flush_outbox(conn)
            assert relay.dropped > 0  # the broker did answer: the acknowledgement was lost
            assert [m for m, _, _ in police.store.outbox()] == [sealed.msg_id]
            with contextlib.suppress(BrokerError):
                await conn.close()
        finally:
            await relay.close()
        # Sent again straight to the broker: stored already, so acknowledged as a duplicate
        # (its Nats-Msg-Id), and only then out of the outbox.
        direct = await connect(police, broker.url)
        try:
            assert await police.flush_outbox(direct) == 1
        finally:
            await direct.close()

    asyncio.run(flush_with_ack_lost())
    assert police.store.outbox() == []
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([ngo], lambda: ngo.stats.delivered >= 1, timeout=30)
    run_agents([ngo], lambda: False, timeout=1.0)  # anything more would show up now
    assert [i.msg_id for i in ngo.store.inbox()] == [sealed.msg_id]
    assert ngo.stats.delivered == 1 and ngo.stats.duplicates == 0
