"""An agency leaf node against a real hub (both nats-server on loopback, mutual TLS on the
leaf link, certificates from tests/certkit.py): the leaf signs in as the agency, a message
published on the leaf reaches a reader on the hub, an agency with the wrong seed gets no
link, and with the link cut (the hub stopped and restarted, a few seconds rather than the
issue's 30: the behaviour does not depend on the length) what the agency seals meanwhile
waits in its agent's outbox and arrives once, every message, when the link returns.

The leaf runs no JetStream (tfshare.leafnode): the messages are kept by the agent's outbox
(SQLite) while the link is down, and by the hub's stream after. The hub's JetStream has a
domain (HUB_DOMAIN): an agent on a leaf binds its consumers and reads through it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from certkit import CertKit, make_certkit
from livekit import free_port, make_agent, publish_as
from tfkit import TaskForce

from tfshare import transport
from tfshare.broker import (
    BrokerProcess,
    channel_subject,
    check_config,
    durable_name,
    stream_name,
)
from tfshare.errors import TfshareError
from tfshare.leafnode import (
    SEED_INCLUDE,
    LeafTLS,
    hub_leafnodes_block,
    render_leaf_config,
    render_seed_include,
)
from tfshare.workflows.live import ServerOptions, provision_broker, write_broker_config

pytestmark = pytest.mark.slow

LINK_TIMEOUT = 10.0
HUB_DOMAIN = "tf"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Leaf:
    process: BrokerProcess
    http_port: int

    @property
    def url(self) -> str:
        return self.process.url

    def links(self) -> int:
        """How many links to the hub the leaf has up (its /leafz monitoring endpoint)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/leafz", timeout=2
            ) as answer:
                count: int = json.load(answer)["leafnodes"]
                return count
        except OSError:
            return 0


@dataclass
class Site:
    hub: BrokerProcess
    hub_leaf_port: int
    leaf: Leaf


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return make_certkit(tmp_path_factory.mktemp("certs"))


def start_leaf(
    tf: TaskForce, kit: CertKit, directory: Path, hub_leaf_port: int, agency: str
) -> Leaf:
    port, http_port = free_port(), free_port()
    config = render_leaf_config(
        agency=agency,
        taskforce=tf.trusted().taskforce,
        hub_urls=[f"nats-leaf://127.0.0.1:{hub_leaf_port}"],
        local_port=port,
        local_nkey=tf.ids[agency].nats_user,
        tls=LeafTLS(ca=kit.ca.cert, cert=kit.client.cert, key=kit.client.key),
        http_port=http_port,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SEED_INCLUDE).write_text(render_seed_include(tf.ids[agency].nats_seed_encoded()))
    os.chmod(directory / SEED_INCLUDE, 0o600)
    path = directory / "leaf.conf"
    path.write_text(config)
    check_config(path)
    leaf = BrokerProcess(config=path, host="127.0.0.1", port=port, log=directory / "leaf.log")
    leaf.start()
    return Leaf(leaf, http_port)


def wait_for(condition: object, timeout: float = LINK_TIMEOUT) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def site(live_tf: TaskForce, kit: CertKit, tmp_path: Path) -> Iterator[Site]:
    hub_dir = tmp_path / "hub"
    hub_port, hub_leaf_port = free_port(), free_port()
    config = write_broker_config(
        live_tf.trusted(),
        hub_dir,
        port=hub_port,
        options=ServerOptions(jetstream_domain=HUB_DOMAIN),
    )
    block = hub_leafnodes_block(
        host="127.0.0.1",
        port=hub_leaf_port,
        tls_cert=kit.server.cert,
        tls_key=kit.server.key,
        tls_ca=kit.ca.cert,
        verify_leaves=True,
    )
    config.write_text(config.read_text() + block)
    check_config(config)
    hub = BrokerProcess(config=config, host="127.0.0.1", port=hub_port, log=hub_dir / "nats.log")
    hub.start()
    leaf: Leaf | None = None
    try:
        asyncio.run(provision_broker(hub.url, hub_dir, live_tf.trusted(), live_tf.roster_bytes))
        leaf = start_leaf(live_tf, kit, tmp_path / "leaf", hub_leaf_port, "police")
        assert wait_for(lambda: leaf.links() == 1), leaf.process.log.read_text()[-2000:]
        yield Site(hub, hub_leaf_port, leaf)
    finally:
        if leaf is not None:
            leaf.process.stop()
        hub.stop()


def test_a_message_published_on_the_leaf_reaches_a_reader_on_the_hub(
    live_tf: TaskForce, site: Site, tmp_path: Path
) -> None:
    alert = live_tf.seal("police", to=["labour"], now_ms=now_ms(), rng_seed=os.urandom(8).hex())
    subject = channel_subject(live_tf.trusted().taskforce, "alerts", "police")
    seq, duplicate = publish_as(live_tf, "police", site.leaf.url, subject, alert.data)
    assert seq >= 1 and not duplicate  # the hub's stream acknowledged it, through the link
    labour = make_agent(live_tf, "labour", site.hub.url, tmp_path / "agents")

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(labour.run(stop))
        deadline = time.monotonic() + 10
        while labour.stats.delivered == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())
    assert [item.msg_id for item in labour.store.inbox()] == [alert.msg_id]


def test_a_leaf_with_another_agencys_seed_is_refused_by_the_hub(
    live_tf: TaskForce, kit: CertKit, site: Site, tmp_path: Path
) -> None:
    """The outsider has a key but no membership, so no NATS user on the hub: no link."""
    stranger = start_leaf(live_tf, kit, tmp_path / "stranger", site.hub_leaf_port, "outsider")
    try:
        # What the stranger's operator sees in the leaf's log, and the hub's in its own.
        assert wait_for(lambda: "Authorization Violation" in stranger.process.log.read_text())
        assert "authentication error" in site.hub.log.read_text()
        assert stranger.links() == 0
        assert site.leaf.links() == 1  # the agency's own link is untouched
    finally:
        stranger.process.stop()


def test_what_the_agency_seals_while_the_link_is_cut_arrives_once_when_it_returns(
    live_tf: TaskForce, site: Site, tmp_path: Path
) -> None:
    """The agency's outbox, flushed as its agent does (``Agent.flush_outbox``) over one
    connection to its leaf that stays up throughout; the hub is stopped for ~4 s and
    restarted on the same store. (The whole agent on a leaf also reads through JetStream's
    API, which needs the hub's JetStream domain: see the xfail test below.)"""
    count = 20
    taskforce = live_tf.trusted().taskforce
    subject = channel_subject(taskforce, "alerts", "police")
    police = make_agent(live_tf, "police", site.leaf.url, tmp_path / "agents")
    labour = make_agent(live_tf, "labour", site.hub.url, tmp_path / "agents")
    sealed = [
        live_tf.seal(
            "police", to=["labour"], seq=i + 1, now_ms=now_ms(), rng_seed=os.urandom(8).hex()
        )
        for i in range(count)
    ]

    async def main() -> None:
        conn = await transport.connect(
            site.leaf.url,
            nkey_seed=live_tf.ids["police"].nats_seed_encoded(),
            agency="police",
            name="police-outbox",
        )
        try:
            await asyncio.to_thread(site.hub.stop)  # the link is cut
            assert await asyncio.to_thread(wait_for, lambda: site.leaf.links() == 0)
            for message in sealed:  # the agency goes on sealing: into the outbox
                police.store.outbox_add(message.msg_id, subject, message.data, now_ms())
            for _ in range(3):  # what the agent's loop does meanwhile: tries, keeps them
                with contextlib.suppress(TfshareError):
                    await police.flush_outbox(conn)
                await asyncio.sleep(1.0)
            assert len(police.store.outbox()) == count, "nothing leaves while the hub is away"
            assert conn.client.is_connected, "the agency's own server stays up"
            await asyncio.to_thread(site.hub.start)  # the link returns
            assert await asyncio.to_thread(wait_for, lambda: site.leaf.links() == 1)
            deadline = time.monotonic() + 15
            while police.store.outbox() and time.monotonic() < deadline:
                with contextlib.suppress(TfshareError):
                    await police.flush_outbox(conn)
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        stop = asyncio.Event()
        labour_task = asyncio.create_task(labour.run(stop))
        deadline = time.monotonic() + 15
        while labour.store.inbox_count() < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # a duplicate, if there were one, would arrive now
        stop.set()
        await asyncio.wait_for(labour_task, timeout=10)

    asyncio.run(main())
    assert police.store.outbox() == []
    received = [item.msg_id for item in labour.store.inbox(limit=1000)]
    assert sorted(received) == sorted(m.msg_id for m in sealed)  # each once, none lost
    assert labour.stats.rejected == 0 and labour.stats.duplicates == 0


def test_without_the_hubs_domain_a_client_on_the_leaf_cannot_bind_its_consumers(
    live_tf: TaskForce, site: Site
) -> None:
    """nats-server does not let ``$JS.API`` cross a leaf link: the domain is what works."""

    async def main() -> None:
        conn = await transport.connect(
            site.leaf.url,
            nkey_seed=live_tf.ids["police"].nats_seed_encoded(),
            agency="police",
            name="police",
            reconnect=False,
        )
        try:
            consumer = transport.Consumer(
                conn, live_tf.trusted().taskforce, "police", channels=lambda: ("alerts",)
            )
            await consumer.bind()
        finally:
            await conn.close()

    with pytest.raises(TfshareError):
        asyncio.run(main())


def test_an_agent_on_the_leaf_binds_its_consumers_on_the_hub_and_receives(
    live_tf: TaskForce, kit: CertKit, site: Site, tmp_path: Path
) -> None:
    """labour's agent on labour's own leaf node (js_domain: the hub's domain) binds its
    consumer on the hub, receives what police publishes on the hub, and acknowledges it
    through the link (the message is not delivered again)."""
    taskforce = live_tf.trusted().taskforce
    leaf = start_leaf(live_tf, kit, tmp_path / "labour-leaf", site.hub_leaf_port, "labour")
    try:
        assert wait_for(lambda: leaf.links() == 1), leaf.process.log.read_text()[-2000:]
        labour = make_agent(live_tf, "labour", leaf.url, tmp_path / "agents")
        labour.js_domain = HUB_DOMAIN
        alert = live_tf.seal("police", to=["labour"], now_ms=now_ms(), rng_seed=os.urandom(8).hex())
        subject = channel_subject(taskforce, "alerts", "police")
        publish_as(live_tf, "police", site.hub.url, subject, alert.data)

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(labour.run(stop))
            deadline = time.monotonic() + 15
            while labour.stats.delivered == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # an unacknowledged message would come back by now
            stop.set()
            await asyncio.wait_for(task, timeout=10)

        asyncio.run(main())
        assert [item.msg_id for item in labour.store.inbox()] == [alert.msg_id]
        assert labour.stats.duplicates == 0

        async def pending() -> int:
            admin = await transport.connect(
                site.hub.url,
                nkey_seed=(site.hub.config.parent / "admin.seed").read_bytes().strip(),
                agency=None,
                name="check",
                reconnect=False,
            )
            try:
                info = await admin.js.consumer_info(
                    f"{stream_name(taskforce, 'alerts')}", durable_name("labour", "alerts")
                )
                return int(info.num_ack_pending) + int(info.num_pending)
            finally:
                await admin.close()

        assert asyncio.run(pending()) == 0  # acknowledged through the link
    finally:
        leaf.process.stop()
