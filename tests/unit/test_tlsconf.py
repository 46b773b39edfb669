"""TLS configuration: the ``tls {}`` blocks tfshare renders pass ``nats-server -t`` with real
certificates (tests/certkit.py), paths that could break out of their string are refused, the
client's SSL context names each bad file instead of passing OpenSSL's text on, and a plain
``nats://`` URL is accepted on loopback only."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
from certkit import CertKit, issue, make_certkit
from hypothesis import given
from hypothesis import strategies as st

from tfshare.broker import check_config
from tfshare.errors import BrokerError, ExitCode, InputError, TrustError, UsageError
from tfshare.tlsconf import (
    check_plain_url,
    client_ssl_context,
    is_loopback_url,
    leaf_tls_block,
    plain_off_loopback,
    quote_path,
    route_tls_block,
    server_tls_block,
    tls_refusal,
)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return make_certkit(tmp_path_factory.mktemp("certs"))


def _check(tmp_path: Path, text: str) -> None:
    config = tmp_path / "tls.conf"
    config.write_text(text)
    check_config(config)


def test_server_block_with_client_verification_passes_nats_server_t(
    kit: CertKit, tmp_path: Path
) -> None:
    block = server_tls_block(kit.server.cert, kit.server.key, kit.ca.cert, verify_clients=True)
    assert "verify: true" in block
    assert f'ca_file: "{kit.ca.cert}"' in block
    assert 'min_version: "1.3"' in block
    _check(tmp_path, "listen: 127.0.0.1:4999\n" + block)


def test_server_block_without_ca_does_not_verify_clients(kit: CertKit, tmp_path: Path) -> None:
    block = server_tls_block(kit.server.cert, kit.server.key, verify_clients=False)
    assert "verify" not in block and "ca_file" not in block
    _check(tmp_path, "listen: 127.0.0.1:4999\n" + block)


def test_route_and_leaf_blocks_pass_nats_server_t_in_their_sections(
    kit: CertKit, tmp_path: Path
) -> None:
    route = route_tls_block(kit.server.cert, kit.server.key, kit.ca.cert)
    leaf = leaf_tls_block(ca=kit.ca.cert, cert=kit.server.cert, key=kit.server.key, verify=True)
    assert "verify: true" in route and "verify: true" in leaf
    _check(
        tmp_path,
        "server_name: n1\nlisten: 127.0.0.1:4999\n"
        "cluster {\n    name: tf\n    listen: 127.0.0.1:6999\n"
        f"{route}"
        '    routes = ["nats-route://127.0.0.1:6998"]\n}\n'
        f"leafnodes {{\n    listen: 127.0.0.1:7999\n{leaf}}}\n",
    )


def test_a_missing_certificate_is_named_by_nats_server_t(kit: CertKit, tmp_path: Path) -> None:
    """The block renders (the operator may write it before the certificate arrives), and the
    check of the configuration then fails naming the problem."""
    block = server_tls_block(tmp_path / "nowhere.pem", kit.server.key, verify_clients=False)
    with pytest.raises(BrokerError) as caught:
        _check(tmp_path, "listen: 127.0.0.1:4999\n" + block)
    assert caught.value.exit_code == ExitCode.BROKER
    # check_config keeps nats-server's first 200 characters: the reason, if not the file.
    assert "certificate/key pair" in caught.value.hint


def test_a_key_of_another_certificate_fails_nats_server_t(kit: CertKit, tmp_path: Path) -> None:
    block = server_tls_block(kit.server.cert, kit.other_server.key, verify_clients=False)
    with pytest.raises(BrokerError):
        _check(tmp_path, "listen: 127.0.0.1:4999\n" + block)


@pytest.mark.parametrize(
    "bad", ['/etc/tf"ca.pem', "/etc/tf\\ca.pem", "/etc/tf\nca.pem", "/etc/tf\x00ca.pem"]
)
def test_paths_that_would_break_out_of_the_string_are_refused(bad: str) -> None:
    with pytest.raises(InputError, match="cannot quote"):
        quote_path(Path(bad), what="TLS CA")


def test_relative_paths_are_refused() -> None:
    with pytest.raises(InputError, match="not absolute") as caught:
        server_tls_block(Path("server.pem"), Path("/k.pem"), verify_clients=False)
    assert "full path" in caught.value.hint


def test_a_path_with_spaces_and_dollar_is_quoted_and_accepted(kit: CertKit, tmp_path: Path) -> None:
    odd = tmp_path / "my certs $HOME"
    odd.mkdir()
    cert, key = odd / "server.pem", odd / "server-key.pem"
    cert.write_bytes(kit.server.cert.read_bytes())
    key.write_bytes(kit.server.key.read_bytes())
    _check(tmp_path, "listen: 127.0.0.1:4999\n" + server_tls_block(cert, key, verify_clients=False))


def test_verification_without_a_ca_and_a_cert_without_its_key_are_usage_errors(
    kit: CertKit,
) -> None:
    with pytest.raises(UsageError, match="CA"):
        server_tls_block(kit.server.cert, kit.server.key, None, verify_clients=True)
    with pytest.raises(UsageError, match="needs its key"):
        leaf_tls_block(ca=kit.ca.cert, cert=kit.client.cert)


# --- the client's SSL context -------------------------------------------------------------


def test_client_context_requires_tls13_and_checks_host_names(kit: CertKit) -> None:
    context = client_ssl_context(kit.ca.cert, kit.client.cert, kit.client.key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    # Only the task force CA: the system's CAs are not loaded.
    assert context.cert_store_stats()["x509_ca"] == 1


def test_a_missing_ca_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as caught:
        client_ssl_context(tmp_path / "ca.pem")
    assert "--tls-ca" in caught.value.hint
    assert caught.value.exit_code == ExitCode.ERROR


def test_a_directory_and_a_non_pem_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        client_ssl_context(tmp_path)
    junk = tmp_path / "ca.der"
    junk.write_bytes(os.urandom(200))
    with pytest.raises(InputError, match="not a PEM file"):
        client_ssl_context(junk)


def test_a_key_given_as_the_ca_is_a_trust_error(kit: CertKit) -> None:
    with pytest.raises(TrustError, match="holds no usable certificate") as caught:
        client_ssl_context(kit.ca.key)
    assert caught.value.exit_code == ExitCode.TRUST


def test_a_key_of_another_certificate_is_named(kit: CertKit) -> None:
    with pytest.raises(TrustError, match="does not belong to the certificate"):
        client_ssl_context(kit.ca.cert, kit.client.cert, kit.server.key)


def test_an_encrypted_key_is_refused_without_a_prompt(kit: CertKit, tmp_path: Path) -> None:
    """OpenSSL would ask for the pass phrase on the terminal: a service would hang."""
    locked = issue(kit.ca, tmp_path, "locked", passphrase=b"correct horse battery")
    with pytest.raises(TrustError, match="pass phrase"):
        client_ssl_context(kit.ca.cert, locked.cert, locked.key)


def test_a_certificate_without_its_key_is_a_usage_error(kit: CertKit) -> None:
    with pytest.raises(UsageError):
        client_ssl_context(kit.ca.cert, kit.client.cert, None)


def test_errors_never_repeat_key_material(kit: CertKit) -> None:
    with pytest.raises(TrustError) as caught:
        client_ssl_context(kit.ca.cert, kit.client.cert, kit.server.key)
    pem = kit.server.key.read_text()
    body = "".join(pem.splitlines()[1:-1])
    text = f"{caught.value} {caught.value.hint} {caught.value!r}"
    assert body[:40] not in text


# --- plain connections stay on loopback ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["nats://127.0.0.1:4222", "nats://127.8.9.1", "nats://localhost:4222", "nats://[::1]:4222"],
)
def test_loopback_urls(url: str) -> None:
    assert is_loopback_url(url)
    assert not plain_off_loopback(url)
    assert check_plain_url(url, allow_plain=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "nats://10.0.0.5:4222",
        "nats://broker.example.org:4222",
        "nats://[2001:db8::1]:4222",
        "nats://localhost.example.org",
        "nats://0.0.0.0:4222",
    ],
)
def test_plain_urls_off_loopback_are_refused_unless_allowed(url: str) -> None:
    assert not is_loopback_url(url)
    assert plain_off_loopback(url)
    with pytest.raises(UsageError, match="plain nats://") as caught:
        check_plain_url(url, allow_plain=False)
    assert "tls://" in caught.value.hint
    assert check_plain_url(url, allow_plain=True) == url


def test_tls_urls_off_loopback_are_accepted() -> None:
    assert not plain_off_loopback("tls://broker.example.org:4222")
    assert check_plain_url("tls://10.0.0.5:4222", allow_plain=False) == "tls://10.0.0.5:4222"


def test_a_bad_url_is_the_url_parsers_usage_error() -> None:
    with pytest.raises(UsageError, match="not a broker URL"):
        is_loopback_url("http://127.0.0.1:4222")


@given(st.ip_addresses(v=4), st.integers(1, 65535))
def test_an_ipv4_url_is_loopback_exactly_when_in_127_slash_8(address: object, port: int) -> None:
    url = f"nats://{address}:{port}"
    assert is_loopback_url(url) == str(address).startswith("127.")


@given(st.ip_addresses(v=6))
def test_an_ipv6_url_is_loopback_exactly_when_it_is_colon_colon_1(address: object) -> None:
    assert is_loopback_url(f"nats://[{address}]:4222") == (str(address) == "::1")


def test_tls_refusal_leaves_other_failures_to_the_caller() -> None:
    assert tls_refusal(TimeoutError(), doing="connecting", client_cert=False) is None
    assert tls_refusal(OSError("no route"), doing="connecting", client_cert=True) is None
    reset = tls_refusal(ConnectionResetError(), doing="connecting", client_cert=False)
    assert reset is not None and "require a client certificate" in reset.message
