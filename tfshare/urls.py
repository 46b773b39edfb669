"""Broker URLs: the one check every server URL passes before anything connects to it.

Owns: ``parse_server_url``, which accepts ``nats://HOST[:PORT]`` and ``tls://HOST[:PORT]``
(HOST a DNS name, an IPv4 address or a bracketed IPv6 address; PORT 1-65535), or a
comma-separated list of them (the nodes of a cluster: clients connect to any and move to
another when one goes), and refuses anything else as a usage error (exit 2) that names the
URL - in a list, the entry - and shows the accepted forms. Without it a typing mistake
(``http://``, a port of 99999, no host) reached nats-py, which tried until its timeout and
was reported as "broker unavailable" (exit 4), and an agent retried it forever; a list
was taken for one URL with a strange port and failed the same way.

``usable_servers`` is the lenient form for a profile's list, written once and used for
months: the good entries are used and the bad ones named, so one mistyped node does not stop
an agency. ``plain_remote`` says which URLs of a list send in clear text to another machine.

Pure: no network, no disk, no environment (the callers say where the text came from).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from tfshare.errors import UsageError

SCHEMES: Final = ("nats", "tls")
ACCEPTED: Final = (
    "nats://HOST:PORT or tls://HOST:PORT, e.g. nats://127.0.0.1:4222, or several separated "
    "by commas (the nodes of a cluster)"
)
MAX_URL: Final = 300
MAX_SERVERS: Final = 16  # nodes in one list: a cluster has 3 or 5

_URL: Final = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)", re.DOTALL
)
_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _problem(text: str) -> str | None:
    """Why ``text`` is not a broker URL, or None if it is one."""
    if len(text) > MAX_URL:
        return f"it is longer than {MAX_URL} characters"
    match = _URL.fullmatch(text)
    if match is None:
        return "it has no scheme (nats:// or tls://)"
    scheme = match["scheme"].lower()
    if scheme not in SCHEMES:
        return f"the scheme {match['scheme']}:// is not one tfshare speaks"
    if match["rest"] not in ("", "/"):
        return "a broker URL has no path, query or fragment"
    authority = match["authority"]
    if "@" in authority:
        return "a broker URL carries no user or password (tfshare signs in with the agency's key)"
    host, port = _split_host_port(authority)
    if not host:
        return "it names no host"
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return "the port must be a number from 1 to 65535"
    if not _valid_host(host):
        return f"{host!r} is not a host name or IP address"
    return None


def _split_host_port(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):  # [IPv6]:port
        end = authority.find("]")
        if end < 0:
            return authority, None
        host, after = authority[: end + 1], authority[end + 1 :]
        if not after:
            return host, None
        return host, after[1:] if after.startswith(":") else after
    host, colon, port = authority.rpartition(":")
    if not colon:
        return authority, None
    return host, port


def _valid_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if not host.isascii() or len(host) > 253:
        return False
    labels = host.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):  # looks like IPv4: must be one
        try:
            ipaddress.IPv4Address(host.removesuffix("."))
        except ValueError:
            return False
        return True
    return all(_LABEL.fullmatch(label) for label in labels)


def _one(text: str, *, source: str, hide: bool = False) -> str:
    problem = _problem(text)
    if problem is not None:
        # A URL with a user or password is not repeated: the part before '@' may be a secret.
        # ``hide``: the list it came from holds an '@' somewhere - a password with a comma in
        # it is split over two entries, and the first ("nats://user:pass") has no '@' itself.
        named = "the URL" if hide or "@" in text else repr(text)
        raise UsageError(
            f"{source} {named} is not a broker URL: {problem}",
            hint=f"give {ACCEPTED} (the broker's address from your coordinator)",
        )
    scheme, _, rest = text.partition("://")
    return f"{scheme.lower()}://{rest.removesuffix('/')}"


def _entries(text: str, *, source: str) -> list[str]:
    entries = [entry.strip() for entry in text.split(",")]
    entries = [entry for entry in entries if entry] or [text.strip()]
    if len(entries) > MAX_SERVERS:
        raise UsageError(
            f"{source} lists {len(entries)} servers, more than {MAX_SERVERS}",
            hint="list the task force's nodes (a cluster has 3 or 5)",
        )
    return entries


def _entry_source(source: str, index: int, count: int) -> str:
    return source if count == 1 else f"{source} entry {index} of {count}"


def parse_server_url(text: str, *, source: str = "--server") -> str:
    """``text`` if it is a broker URL or a comma-separated list of them (each scheme
    lower-cased, a trailing "/" dropped, blanks and repeats left out, joined by ","); else a
    ``UsageError`` that names the URL - in a list, which entry - and where it came from
    (``source``: "--server", "TFSHARE_SERVER", "the profile ..."), and shows the accepted
    forms."""
    entries = _entries(text, source=source)
    found: list[str] = []
    for index, entry in enumerate(entries, start=1):
        url = _one(entry, source=_entry_source(source, index, len(entries)), hide="@" in text)
        if url not in found:
            found.append(url)
    return ",".join(found)


def usable_servers(text: str, *, source: str) -> tuple[str, list[str]]:
    """The good entries of a server list (joined as ``parse_server_url`` does) and, for
    each bad one, the reason it is left out; a ``UsageError`` if none is good."""
    entries = _entries(text, source=source)
    found: list[str] = []
    skipped: list[str] = []
    for index, entry in enumerate(entries, start=1):
        try:
            url = _one(entry, source=_entry_source(source, index, len(entries)), hide="@" in text)
        except UsageError as exc:
            skipped.append(exc.message)
            continue
        if url not in found:
            found.append(url)
    if not found:
        raise UsageError(skipped[0], hint=f"give {ACCEPTED}")
    return ",".join(found), skipped


def split_servers(text: str) -> list[str]:
    """The URLs of a list ``parse_server_url`` accepted."""
    return [part.strip() for part in text.split(",") if part.strip()]


_LOOPBACK_NAMES: Final = ("localhost",)


def is_loopback_host(host: str) -> bool:
    """Whether a host - a name, or an address (IPv6 with or without brackets) - is this
    machine: ``localhost``, 127.0.0.0/8 or ::1. Any other name counts as off this machine."""
    host = host.strip("[]").removesuffix(".").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_remote(text: str) -> list[str]:
    """The ``nats://`` URLs of a (checked) list whose host is not this machine's loopback:
    what they carry - NATS credentials' signatures, envelopes, the agency's subjects - goes
    in clear text over a network."""
    found: list[str] = []
    for url in split_servers(text):
        scheme, _, authority = url.partition("://")
        if scheme.lower() != "nats":
            continue
        host, _ = _split_host_port(authority)
        if not is_loopback_host(host):
            found.append(url)
    return found
