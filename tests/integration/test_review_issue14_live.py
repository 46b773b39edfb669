"""Adversarial review of issue 14, against a real nats-server: a client told to use TLS
(a ``tls://`` URL and the task force CA) must not talk in clear text to a server that
answers without TLS (an impostor on the path, or a broker whose tls block was dropped)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.aio.client
import nats.errors
import pytest
from certkit import CertKit, make_certkit
from livekit import free_port
from test_leafnode_live import Site, site
from tfkit import TaskForce, identity

from tfshare import names, transport
from tfshare.broker import BrokerProcess
from tfshare.tlsconf import client_ssl_context
from tfshare.workflows.live import admin_seed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return make_certkit(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def plain_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A nats-server without TLS: its INFO says tls_required false."""
    port = free_port()
    config = tmp_path / "plain.conf"
    config.write_text(f"listen: 127.0.0.1:{port}\n")
    process = BrokerProcess(config=config, host="127.0.0.1", port=port, log=tmp_path / "log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def _connect_tls_url(port: int, kit: CertKit) -> bool:
    """Connect as police to tls://127.0.0.1:PORT with the task force CA; whether the
    connection that came back is encrypted (it is closed either way)."""
    conn = await transport.connect(
        f"tls://127.0.0.1:{port}",
        nkey_seed=identity("police").nats_seed_encoded(),
        agency="police",
        name="review-issue14",
        reconnect=False,
        tls=client_ssl_context(kit.ca.cert),
    )
    try:
        writer = conn.client._transport._io_writer  # type: ignore[union-attr]
        return writer.get_extra_info("ssl_object") is not None
    finally:
        await conn.client.close()


def test_a_tls_url_with_a_ca_refuses_a_server_that_answers_without_tls(
    kit: CertKit, plain_broker: BrokerProcess
) -> None:
    """nats-py upgraded to TLS only when the server's INFO said tls_required, even for a
    tls:// URL with a CA given: a server (or anyone on the path) answering without TLS got
    the agency's sign-in and its traffic in clear text. Now refused before the CONNECT, as a
    TLS problem (exit 4), not retried on another node."""
    with pytest.raises(transport.TlsRefused, match="answered without TLS") as caught:
        asyncio.run(_connect_tls_url(plain_broker.port, kit))
    assert caught.value.hint is not None and "tls" in caught.value.hint


def test_a_plain_url_to_a_plain_broker_still_connects(
    kit: CertKit, plain_broker: BrokerProcess
) -> None:
    """nats:// on loopback stays plain (a leaf's local server), even with a CA in the
    profile."""

    async def plain() -> bool:
        conn = await transport.connect(
            f"nats://127.0.0.1:{plain_broker.port}",
            nkey_seed=identity("police").nats_seed_encoded(),
            agency="police",
            name="review-issue14",
            reconnect=False,
            tls=client_ssl_context(kit.ca.cert),
        )
        try:
            return conn.client.is_connected
        finally:
            await conn.client.close()

    assert asyncio.run(plain())


# -- a leaf signed in as police carries police's permissions, no more ---------------------------

# The hub and police's leaf of test_leafnode_live (mutual TLS link, hub domain "tf"), the
# fixture ``site`` taken into this module.
LEAF_FIXTURES = (site,)
CARRY_S = 1.5  # how long a message that the link would carry is waited for


async def _client(url: str, seed: bytes) -> nats.aio.client.Client:
    return await nats.connect(
        servers=[url],
        nkeys_seed_str=seed.decode(),
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=2,
    )


async def _carried(
    sender: nats.aio.client.Client, receiver: nats.aio.client.Client, subjects: list[str]
) -> set[str]:
    """Which of ``subjects``, each subscribed on ``receiver`` then published on ``sender``,
    arrived."""
    subs = [await receiver.subscribe(s) for s in subjects]
    await receiver.flush()
    await asyncio.sleep(0.5)  # interest crosses the leaf link asynchronously
    for subject in subjects:
        await sender.publish(subject, b"review")
    await sender.flush()
    got: set[str] = set()
    deadline = asyncio.get_running_loop().time() + CARRY_S
    for sub in subs:
        with contextlib.suppress(nats.errors.TimeoutError):
            msg = await sub.next_msg(
                timeout=max(deadline - asyncio.get_running_loop().time(), 0.05)
            )
            got.add(msg.subject)
    return got


def test_the_hub_sends_police_leaf_only_what_police_may_receive(
    live_tf: TaskForce, site: Site, tmp_path: Path
) -> None:
    """Clients on police's leaf have every right locally, but the hub forwards over the link
    only what police's user may subscribe to: its own inbox and the checkpoints, not another
    agency's inbox, a channel subject or a KV subject (the positive controls show the link
    carries)."""
    tf = live_tf.trusted().taskforce
    allowed = [f"{names.inbox_prefix('police')}.r1", names.checkpoint_subject(tf)]
    denied = [
        f"{names.inbox_prefix('labour')}.r1",
        names.channel_subject(tf, "alerts", "labour"),
        names.kv_subject(names.roster_bucket(tf), names.ROSTER_KEY),
        names.proof_subject(tf, "labour"),
    ]

    async def run() -> set[str]:
        hub = await _client(site.hub.url, admin_seed(tmp_path / "hub"))
        leaf = await _client(site.leaf.url, live_tf.ids["police"].nats_seed_encoded())
        try:
            return await _carried(hub, leaf, allowed + denied)
        finally:
            await leaf.close()
            await hub.close()

    assert asyncio.run(run()) == set(allowed)


def test_the_hub_takes_from_police_leaf_only_what_police_may_publish(
    live_tf: TaskForce, site: Site, tmp_path: Path
) -> None:
    """What a client on police's leaf publishes reaches the hub only on police's own
    subjects: not on another agency's sender subject, proof subject, witness key, or the
    roster key (the hub's administrator listens on all of them)."""
    trusted = live_tf.trusted()
    tf = trusted.taskforce
    own_channel = names.writable_channels(trusted, "police")[0]
    allowed = [names.channel_subject(tf, own_channel, "police"), names.proof_subject(tf, "police")]
    denied = [
        names.channel_subject(tf, own_channel, "labour"),
        names.proof_subject(tf, "labour"),
        names.kv_subject(names.witness_bucket(tf), "labour"),
        names.kv_subject(names.roster_bucket(tf), names.ROSTER_KEY),
        f"{names.inbox_prefix('labour')}.r1",
        names.checkpoint_subject(tf),
    ]

    async def run() -> set[str]:
        hub = await _client(site.hub.url, admin_seed(tmp_path / "hub"))
        leaf = await _client(site.leaf.url, live_tf.ids["police"].nats_seed_encoded())
        try:
            return await _carried(leaf, hub, allowed + denied)
        finally:
            await leaf.close()
            await hub.close()

    assert asyncio.run(run()) == set(allowed)


@pytest.mark.parametrize("who", ["labour", None])
def test_the_leaf_local_server_takes_only_police_own_key(
    live_tf: TaskForce, site: Site, who: str | None
) -> None:
    """Another local user - with another agency's key, or none - cannot use police's leaf
    (and so cannot act as police on the hub)."""

    async def run() -> None:
        options: dict[str, object] = {
            "servers": [site.leaf.url],
            "allow_reconnect": False,
            "max_reconnect_attempts": 0,
            "connect_timeout": 2,
        }
        if who is not None:
            options["nkeys_seed_str"] = live_tf.ids[who].nats_seed_encoded().decode()
        client = await nats.connect(**options)  # type: ignore[arg-type]
        await client.close()

    with pytest.raises(Exception, match=r"(?i)authorization"):
        asyncio.run(run())
