"""Adversarial review of issue 14, against a real nats-server: a client told to use TLS
(a ``tls://`` URL and the task force CA) must not talk in clear text to a server that
answers without TLS (an impostor on the path, or a broker whose tls block was dropped)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from certkit import CertKit, make_certkit
from livekit import free_port
from tfkit import identity

from tfshare import transport
from tfshare.broker import BrokerProcess
from tfshare.tlsconf import client_ssl_context

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
