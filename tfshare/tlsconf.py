"""TLS for a task force that spans machines: nats-server's ``tls {}`` blocks, the clients'
SSL context, and the rule that plain ``nats://`` stays on loopback.

Owns: ``server_tls_block`` (clients), ``route_tls_block`` (cluster routes) and
``leaf_tls_block`` (leaf node links, either side) - nats-server configuration text whose
file paths are checked and quoted so no path can break out of its string -;
``client_ssl_context`` (the ``ssl.SSLContext`` nats-py connects with, ``nats.connect(tls=)``),
which names a missing, unreadable or mismatched certificate, key or CA instead of letting
OpenSSL's text (or its pass-phrase prompt) reach the person; and ``is_loopback_url`` /
``check_plain_url``, the policy of issue 14: a plain connection is for loopback only.

Certificates are the operator's (production) or tests/certkit.py's (tests); tfshare never
makes them. TLS 1.3 only: every peer is a nats-server 2.10+ or nats-py on Python 3.11.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

from tfshare.errors import BrokerError, InputError, TrustError, UsageError
from tfshare.urls import is_loopback_host, parse_server_url, split_servers

# Seconds nats-server waits for a TLS handshake (its default, 0.5 s, is short for a link
# across the internet or through a VPN; 2 matches broker_config/single-node-tls.conf).
DEFAULT_TLS_TIMEOUT: Final = 2.0
MIN_VERSION: Final = "1.3"

# Characters a path may not hold in a nats-server configuration string: the quote and the
# backslash end or escape it, control characters (a newline) would start a new directive.
_FORBIDDEN: Final = frozenset('"\\') | frozenset(chr(c) for c in range(32)) | {"\x7f"}


def quote_path(path: Path, *, what: str) -> str:
    """``path`` as a double-quoted nats-server string; an ``InputError`` for a relative path
    (nats-server would resolve it against its own working directory, not the file's) or for
    one holding a quote, a backslash or a control character."""
    text = str(path)
    if not path.is_absolute():
        raise InputError(
            f"the {what} path {text!r} is not absolute",
            hint="give the full path (nats-server resolves relative paths from where it runs)",
        )
    bad = sorted({ch for ch in text if ch in _FORBIDDEN})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad)
        raise InputError(
            f"the {what} path {text!r} holds characters a nats-server configuration cannot "
            f"quote ({shown})",
            hint="move the file to a path without quotes, backslashes or control characters",
        )
    return f'"{text}"'


def _tls_lines(
    *,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    verify: bool,
    timeout: float,
    min_version: bool,
) -> list[str]:
    if (cert is None) != (key is None):
        raise UsageError(
            "a TLS certificate needs its key, and a key its certificate",
            hint="give both --tls-cert and --tls-key, or neither",
        )
    if verify and ca is None:
        raise UsageError(
            "verifying the other side's certificates needs the CA that signed them",
            hint="give --tls-ca (the task force CA's certificate, PEM)",
        )
    if timeout <= 0:
        raise UsageError(f"a TLS timeout of {timeout:g} s is not positive", hint="give 2 (s)")
    lines = []
    if cert is not None and key is not None:
        lines.append(f"cert_file: {quote_path(cert, what='TLS certificate')}")
        lines.append(f"key_file: {quote_path(key, what='TLS key')}")
    if ca is not None:
        lines.append(f"ca_file: {quote_path(ca, what='TLS CA')}")
    if verify:
        lines.append("verify: true")
    if min_version:
        lines.append(f'min_version: "{MIN_VERSION}"')
    lines.append(f"timeout: {timeout:g}")
    return lines


def _block(lines: list[str], indent: str) -> str:
    inner = "".join(f"{indent}    {line}\n" for line in lines)
    return f"{indent}tls {{\n{inner}{indent}}}\n"


def server_tls_block(
    cert: Path,
    key: Path,
    ca: Path | None = None,
    *,
    verify_clients: bool,
    timeout: float = DEFAULT_TLS_TIMEOUT,
    indent: str = "",
) -> str:
    """The top-level ``tls {}`` block: TLS 1.3 required of every client. With
    ``verify_clients`` a client must also show a certificate signed by ``ca`` (mutual TLS;
    tfshare's own nkey sign-in stays the authentication either way)."""
    lines = _tls_lines(
        cert=cert, key=key, ca=ca, verify=verify_clients, timeout=timeout, min_version=True
    )
    return _block(lines, indent)


def route_tls_block(
    cert: Path,
    key: Path,
    ca: Path,
    *,
    timeout: float = DEFAULT_TLS_TIMEOUT,
    indent: str = "    ",
) -> str:
    """The ``tls {}`` block inside ``cluster {}``: routes are mutual TLS, each node showing a
    certificate of the task force CA (so a machine that can reach the route port but holds no
    such certificate cannot join the cluster)."""
    lines = _tls_lines(cert=cert, key=key, ca=ca, verify=True, timeout=timeout, min_version=True)
    return _block(lines, indent)


def leaf_tls_block(
    *,
    ca: Path,
    cert: Path | None = None,
    key: Path | None = None,
    verify: bool = False,
    timeout: float = DEFAULT_TLS_TIMEOUT,
    indent: str = "    ",
) -> str:
    """A leaf node link's ``tls {}`` block. On the hub (``leafnodes {}``): its certificate,
    and with ``verify`` the agencies' leaf nodes must show one of ``ca``'s. In an agency's
    ``remotes`` entry: ``ca`` checks the hub's certificate; ``cert``/``key`` are the leaf's
    own, needed when the hub verifies. nats-server accepts ``min_version`` in a remote's
    block too; the hub's enforces it."""
    lines = _tls_lines(cert=cert, key=key, ca=ca, verify=verify, timeout=timeout, min_version=True)
    return _block(lines, indent)


def _read_check(path: Path, what: str, flag: str) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(64 * 1024)
    except FileNotFoundError:
        raise InputError(f"the {what} {str(path)!r} does not exist", hint=f"check {flag}") from None
    except IsADirectoryError:
        raise InputError(
            f"the {what} {str(path)!r} is a directory", hint=f"give a PEM file to {flag}"
        ) from None
    except OSError as exc:
        raise InputError(
            f"cannot read the {what} {str(path)!r} ({exc.strerror or type(exc).__name__})",
            hint=f"check the file's permissions ({flag})",
        ) from None
    if b"-----BEGIN " not in head:
        raise InputError(
            f"the {what} {str(path)!r} is not a PEM file",
            hint=f"give {flag} a PEM file (text starting with '-----BEGIN')",
        )


class _EncryptedKey(Exception):
    """Raised from the pass-phrase callback: OpenSSL would otherwise prompt on the terminal."""


def _no_passphrase() -> bytes:
    raise _EncryptedKey


def client_ssl_context(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """The SSL context a tfshare client connects with (``nats.connect(tls=...)``): TLS 1.3,
    the broker's certificate checked against ``ca`` alone (not the system's CAs: a task
    force trusts its own CA) and its host name against the URL's; ``cert``/``key``, the
    client's certificate, for a broker that verifies clients. Every failure is an
    ``InputError`` (a file missing, unreadable, not PEM) or a ``TrustError`` (a CA that is
    no certificate, a key that does not belong to the certificate, an encrypted key) that
    names the file; no OpenSSL text, no pass-phrase prompt."""
    if (cert is None) != (key is None):
        raise UsageError(
            "a client certificate needs its key, and a key its certificate",
            hint="give both --tls-cert and --tls-key, or neither",
        )
    _read_check(ca, "TLS CA certificate", "--tls-ca")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname, CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_verify_locations(cafile=str(ca))
    except ssl.SSLError:
        raise TrustError(
            f"the TLS CA file {str(ca)!r} holds no usable certificate",
            hint="give --tls-ca the task force CA's certificate (PEM), not a key or a request",
        ) from None
    if cert is not None and key is not None:
        _read_check(cert, "TLS certificate", "--tls-cert")
        _read_check(key, "TLS key", "--tls-key")
        try:
            context.load_cert_chain(certfile=str(cert), keyfile=str(key), password=_no_passphrase)
        except _EncryptedKey:
            raise TrustError(
                f"the TLS key {str(key)!r} is protected by a pass phrase",
                hint="give an unencrypted key file readable only by this account (chmod 600)",
            ) from None
        except ssl.SSLError as exc:
            mismatch = "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc)
            if mismatch:
                raise TrustError(
                    f"the TLS key {str(key)!r} does not belong to the certificate {str(cert)!r}",
                    hint="give the key made with this certificate (--tls-key)",
                ) from None
            raise TrustError(
                f"the TLS certificate {str(cert)!r} or its key {str(key)!r} cannot be used "
                f"({exc.reason or 'not a certificate and a private key'})",
                hint="give --tls-cert a PEM certificate and --tls-key its PEM private key",
            ) from None
    return context


def is_loopback_url(url: str) -> bool:
    """Whether the URL's host is this machine: 127.0.0.0/8, ::1 or ``localhost``. Anything
    else - another address, any other name - counts as off this machine. The URL is parsed
    with ``parse_server_url`` first (a bad URL is a ``UsageError``); of a server list, every
    entry's host must be this machine."""
    return all(_is_loopback_host(entry) for entry in split_servers(parse_server_url(url)))


def _is_loopback_host(checked: str) -> bool:
    authority = checked.partition("://")[2]
    if authority.startswith("["):
        host = authority[1 : authority.index("]")]
    else:
        host = authority.rpartition(":")[0] if ":" in authority else authority
    return is_loopback_host(host)


def plain_off_loopback(url: str) -> bool:
    """A ``nats://`` URL (no TLS unless the server asks) to a host other than this machine -
    of a server list, any entry: the agent warns about it, and multi-machine configurations
    refuse it."""
    return any(
        entry.startswith("nats://") and not _is_loopback_host(entry)
        for entry in split_servers(parse_server_url(url))
    )


def check_plain_url(url: str, *, allow_plain: bool, source: str = "--server") -> str:
    """``url`` (parsed) unless it is plain ``nats://`` to another machine and ``allow_plain``
    is false: then a ``UsageError`` that says to use ``tls://`` (or to allow it explicitly,
    e.g. inside a VPN the operator trusts)."""
    checked = parse_server_url(url, source=source)
    if not allow_plain and plain_off_loopback(checked):
        raise UsageError(
            f"{source} {checked!r} is a plain nats:// connection to another machine: alerts, "
            "rosters and NATS sign-ins would cross the network unprotected by TLS",
            hint="use tls://HOST:PORT with the task force CA (--tls-ca); inside a network "
            "you trust (a VPN), allow it with --allow-plain",
        )
    return checked


def tls_refusal(exc: BaseException, *, doing: str, client_cert: bool) -> BrokerError | None:
    """A TLS failure while ``doing`` (connecting to a URL) as a ``BrokerError`` that says
    which side's certificate was refused and what to give; None if ``exc`` is no TLS failure
    (the caller's own classification applies). ``client_cert``: whether this client showed a
    certificate. A broker that refuses the client's certificate sends a TLS alert, but the
    connection may be gone before nats-py reads it: a broken pipe or a reset is then all
    there is, and it is named as a possible certificate refusal (only during the connect:
    the caller passes other resets on as the broker being unavailable)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BrokerError(
            f"the broker's TLS certificate was not accepted while {doing} "
            f"({exc.verify_message or exc.reason})",
            hint="give --tls-ca the task force CA that signed the broker's certificate; the "
            "host in the URL must be one the certificate names",
        )
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
            return BrokerError(
                f"the broker refused this client's TLS certificate while {doing} ({exc.reason})",
                hint="give --tls-cert/--tls-key a certificate of the task force CA "
                "(ask the coordinator for one)",
            )
        return BrokerError(
            f"TLS failed while {doing} ({exc.reason or type(exc).__name__})",
            hint="check --tls-ca, --tls-cert and --tls-key, and that the URL is the broker's",
        )
    if isinstance(exc, BrokenPipeError | ConnectionResetError):
        # The server's alert may be lost in the race with our first write: the reset is all
        # nats-py reports then.
        why = (
            "it may not accept this client's certificate (not of the task force CA?)"
            if client_cert
            else "it may require a client certificate"
        )
        return BrokerError(
            f"the broker closed the connection during TLS while {doing}: {why}",
            hint="give --tls-cert/--tls-key a certificate of the task force CA (ask the "
            "coordinator for one)",
        )
    return None


# TLS alerts a server sends when it refuses the client's certificate.
_CLIENT_CERT_ALERTS: Final = (
    "ALERT_UNKNOWN_CA",
    "ALERT_BAD_CERTIFICATE",
    "ALERT_CERTIFICATE_REQUIRED",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_ACCESS_DENIED",
)
