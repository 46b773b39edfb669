"""TLS against a real nats-server that requires it (certificates from tests/certkit.py): a
client with ``tlsconf.client_ssl_context`` connects and publishes; a plain client gets no
service; a client that trusts another CA (or only the system's CAs) is refused, and the
refusal reads as a certificate problem with a hint, not as "broker unavailable"; with mutual
TLS a client without a certificate of the task force CA is refused."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from certkit import CertKit, make_certkit
from livekit import free_port

from tfshare import transport
from tfshare.broker import BrokerProcess
from tfshare.errors import BrokerError
from tfshare.tlsconf import client_ssl_context, server_tls_block, tls_refusal

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return make_certkit(tmp_path_factory.mktemp("certs"))


def _start(directory: Path, block: str) -> BrokerProcess:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "tls.conf"
    config.write_text(f"listen: 127.0.0.1:{port}\n{block}")
    process = BrokerProcess(config=config, host="127.0.0.1", port=port, log=directory / "log")
    process.start()
    return process


@pytest.fixture
def tls_broker(kit: CertKit, tmp_path: Path) -> Iterator[BrokerProcess]:
    block = server_tls_block(kit.server.cert, kit.server.key, verify_clients=False)
    process = _start(tmp_path / "tls", block)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def mtls_broker(kit: CertKit, tmp_path: Path) -> Iterator[BrokerProcess]:
    block = server_tls_block(kit.server.cert, kit.server.key, kit.ca.cert, verify_clients=True)
    process = _start(tmp_path / "mtls", block)
    try:
        yield process
    finally:
        process.stop()


async def _round_trip(url: str, context: ssl.SSLContext | None) -> bytes:
    options: dict[str, object] = {
        "servers": [url],
        "allow_reconnect": False,
        "max_reconnect_attempts": 0,
        "connect_timeout": 2,
    }
    if context is not None:
        options["tls"] = context
    client = await nats.connect(**options)  # type: ignore[arg-type]
    try:
        sub = await client.subscribe("tls.test")
        await client.publish("tls.test", b"over TLS")
        msg = await sub.next_msg(timeout=2)
        return msg.data
    finally:
        await client.close()


def _refusal(url: str, context: ssl.SSLContext | None) -> BaseException:
    with pytest.raises(Exception) as caught:  # which exception: examined by each test
        asyncio.run(_round_trip(url, context))
    return caught.value


def test_a_client_with_the_task_force_ca_connects_and_publishes(
    kit: CertKit, tls_broker: BrokerProcess
) -> None:
    url = f"tls://127.0.0.1:{tls_broker.port}"
    assert asyncio.run(_round_trip(url, client_ssl_context(kit.ca.cert))) == b"over TLS"


def test_the_server_name_localhost_is_checked_against_the_certificate(
    kit: CertKit, tls_broker: BrokerProcess
) -> None:
    url = f"tls://localhost:{tls_broker.port}"
    assert asyncio.run(_round_trip(url, client_ssl_context(kit.ca.cert))) == b"over TLS"


def test_a_plain_client_gets_no_service(tls_broker: BrokerProcess) -> None:
    """A client that speaks NATS without TLS is told TLS is required and is never answered."""
    with socket.create_connection(("127.0.0.1", tls_broker.port), timeout=5) as sock:
        info = sock.recv(4096)
        assert b'"tls_required":true' in info
        sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert b"PONG" not in received


def test_a_client_trusting_another_ca_is_refused_as_a_certificate_problem(
    kit: CertKit, tls_broker: BrokerProcess
) -> None:
    url = f"tls://127.0.0.1:{tls_broker.port}"
    refused = _refusal(url, client_ssl_context(kit.other_ca.cert))
    assert isinstance(refused, ssl.SSLCertVerificationError)
    error = transport.broker_error(refused, doing=f"connecting to {url}")
    assert "TLS certificate was not accepted" in error.message
    assert "certificate" in error.hint
    ours = tls_refusal(refused, doing=f"connecting to {url}", client_cert=False)
    assert ours is not None and "--tls-ca" in ours.hint


def test_a_client_with_only_the_systems_cas_is_refused(tls_broker: BrokerProcess) -> None:
    """nats-py's default for a TLS server is the system's CAs: a task force CA is not among
    them, so a client configured without --tls-ca cannot talk to the broker."""
    refused = _refusal(f"nats://127.0.0.1:{tls_broker.port}", None)
    assert isinstance(refused, ssl.SSLCertVerificationError)


def test_mutual_tls_refuses_a_client_without_a_certificate(
    kit: CertKit, mtls_broker: BrokerProcess
) -> None:
    url = f"tls://127.0.0.1:{mtls_broker.port}"
    refused = _refusal(url, client_ssl_context(kit.ca.cert))
    error = tls_refusal(refused, doing=f"connecting to {url}", client_cert=False)
    assert isinstance(error, BrokerError), refused
    assert "--tls-cert" in error.hint
    with_cert = client_ssl_context(kit.ca.cert, kit.client.cert, kit.client.key)
    assert asyncio.run(_round_trip(url, with_cert)) == b"over TLS"


def test_mutual_tls_refuses_a_certificate_of_another_ca(
    kit: CertKit, mtls_broker: BrokerProcess
) -> None:
    url = f"tls://127.0.0.1:{mtls_broker.port}"
    stranger = client_ssl_context(kit.ca.cert, kit.other_server.cert, kit.other_server.key)
    refused = _refusal(url, stranger)
    error = tls_refusal(refused, doing=f"connecting to {url}", client_cert=True)
    assert isinstance(error, BrokerError), refused
    # The server's alert, or (when the reset wins the race) the reset during TLS.
    assert "certificate" in error.message
    assert "--tls-cert" in error.hint
