"""Agency leaf nodes: a nats-server at the agency that dials out to the task force's hub.

Owns: ``render_leaf_config`` (the agency-side nats-server: a listener on loopback for the
agency's own agents, and one ``leafnodes.remotes`` entry that connects OUT to the hub's leaf
port - the agency opens no port to the internet), ``render_seed_include`` (the file holding
the agency's NATS seed, included by the leaf configuration so the configuration itself holds
no secret), ``hub_leafnodes_block`` (the hub's ``leafnodes {}`` listener) and
``parse_hub_url``.

How it behaves (tested in tests/integration/test_leafnode_live.py):

- The leaf signs in to the hub as the agency itself (its NATS nkey from the roster). The hub
  has no separate leaf-node users: with no ``authorization`` inside ``leafnodes {}``,
  nats-server checks a leaf link against its ordinary users, so the link gets exactly the
  agency's permissions (what it may publish is what the leaf may send to the hub, what it may
  subscribe what it may receive), and a revoked agency's leaf is cut with its user.
- The leaf runs no JetStream: the task force's streams, consumers and buckets live on the
  hub only. Publishing to a stream works across the link as it is (the hub's stream takes
  the message and its acknowledgement comes back). JetStream's API (``$JS.API.>``: binding
  consumers, fetching, KV reads) does NOT cross a leaf link unless the hub's JetStream has
  a ``domain`` (nats-server denies ``$JS.API`` across leaf nodes otherwise); clients on the
  leaf then address it as ``$JS.<domain>.API`` (nats-py ``client.jetstream(domain=...)``),
  which the agency's permissions allow when the broker is configured with a domain
  (``broker config --jetstream-domain``): an agent on a leaf then binds its consumers and
  reads the buckets on the hub (its profile's ``jetstream_domain``). A leaf that runs a
  JetStream of its own needs a domain of its own (``jetstream_domain``).
- While the link is down the agency's agents stay connected to their local server (no
  reconnect storm, the desk keeps answering); what they seal waits in their outbox (SQLite)
  and is published with its Nats-Msg-Id when the link returns; what others sent them waits
  in their durable consumers on the hub.

Pure: renders text; writing the files is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tfshare.encoding import is_name
from tfshare.errors import InputError, UsageError
from tfshare.tlsconf import (
    DEFAULT_TLS_TIMEOUT,
    is_loopback_url,
    leaf_tls_block,
    quote_path,
)
from tfshare.urls import parse_server_url

DEFAULT_LEAF_PORT: Final = 7422  # nats-server's default port for incoming leaf links
DEFAULT_RECONNECT_S: Final = 2  # how soon the leaf dials the hub again after a cut
SEED_INCLUDE: Final = "leaf-nkey.conf"
LEAF_SCHEMES: Final = ("nats-leaf", "tls", "nats")
HUB_DOMAIN_NOTE: Final = (
    "tfshare's clients on a leaf reach the hub's JetStream by the hub's domain only (nats-py: "
    "client.jetstream(domain=HUB_DOMAIN)); the hub needs jetstream { domain: HUB_DOMAIN }"
)


@dataclass(frozen=True)
class LeafTLS:
    """TLS on the link to the hub: ``ca`` checks the hub's certificate; ``cert``/``key`` are
    the leaf's own, for a hub that verifies leaf nodes (mutual TLS)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


def parse_hub_url(text: str) -> str:
    """A hub leaf-port URL, ``nats-leaf://HOST:PORT`` or ``tls://HOST:PORT`` (``nats://`` is
    taken as ``nats-leaf://``), checked like every broker URL (``parse_server_url``); a
    ``UsageError`` naming it otherwise. No user or password in it: the leaf signs in with the
    agency's nkey."""
    scheme, sep, rest = text.partition("://")
    if "," in text:
        # parse_server_url takes a list; a leaf's remote takes one URL per entry, and the
        # list would be written as one URL (and its later hosts escape the plain-link check).
        raise UsageError(
            "--hub takes one URL: the hub's nodes are given by repeating --hub",
            hint="give --hub tls://NODE1:7422 --hub tls://NODE2:7422 ...",
        )
    if not sep or scheme.lower() not in LEAF_SCHEMES:
        shown = "the URL" if "@" in text else repr(text)
        raise UsageError(
            f"--hub {shown} is not a leaf node URL",
            hint="give nats-leaf://HOST:7422 or tls://HOST:7422 (the hub's leaf node port)",
        )
    as_tls = scheme.lower() == "tls"
    checked = parse_server_url(f"{'tls' if as_tls else 'nats'}://{rest}", source="--hub")
    authority = checked.partition("://")[2]
    return f"{'tls' if as_tls else 'nats-leaf'}://{authority}"


def _hub_is_loopback(url: str) -> bool:
    return is_loopback_url("nats://" + url.partition("://")[2])


def render_seed_include(nkey_seed: bytes) -> str:
    """The leaf's ``nkey`` line, for SEED_INCLUDE (written 0600 beside the configuration:
    nats-server resolves an include relative to the file that includes it)."""
    text = nkey_seed.decode("ascii", errors="replace")
    if not (text.startswith("SU") and text.isalnum() and text.isupper()):
        # The seed itself is never repeated, not even in an error.
        raise InputError(
            "the agency's NATS seed is not a user nkey seed",
            hint="give the agency's own key file (tfshare keys): its NATS seed starts with SU",
        )
    return f'# The agency\'s NATS seed: keep this file 0600.\nnkey: "{text}"\n'


def render_leaf_config(
    *,
    agency: str,
    taskforce: str,
    hub_urls: Sequence[str],
    local_port: int = 4222,
    local_host: str = "127.0.0.1",
    local_nkey: str | None = None,
    tls: LeafTLS | None = None,
    allow_plain: bool = False,
    jetstream_domain: str | None = None,
    store_dir: Path | None = None,
    http_port: int | None = None,
    reconnect_s: int = DEFAULT_RECONNECT_S,
    tls_timeout: float = DEFAULT_TLS_TIMEOUT,
) -> str:
    """nats-server configuration for ``agency``'s leaf node of ``taskforce``'s hub.

    ``hub_urls``: the hub's leaf ports (every node of a cluster, so the link moves when one
    goes). ``local_nkey``: the agency's NATS public key (``U...``): only the agency's own
    agents may use the local server (else anyone on the machine may). ``tls``: required when
    a hub URL is not on loopback, unless ``allow_plain`` (a VPN the operator trusts).
    The seed is not in this text: it is in SEED_INCLUDE (``render_seed_include``)."""
    if not is_name(agency) or not is_name(taskforce):
        raise UsageError(
            f"{agency!r} / {taskforce!r} is not an agency and a task force name",
            hint="use the names of the roster (lowercase letters, digits, '-' or '_')",
        )
    if not hub_urls:
        raise UsageError("a leaf node needs the hub's address", hint="give --hub URL (repeatable)")
    urls = [parse_hub_url(url) for url in hub_urls]
    if len(set(urls)) != len(urls):
        raise UsageError("a hub URL is given twice", hint="give each node of the hub once")
    off_machine = [url for url in urls if not _hub_is_loopback(url)]
    if off_machine and tls is None and not allow_plain:
        raise UsageError(
            f"the link to {off_machine[0]} would cross the network without TLS: the agency's "
            "alerts and its NATS sign-in would be exposed",
            hint="give the task force CA (--tls-ca; and --tls-cert/--tls-key if the hub "
            "verifies leaf nodes); inside a VPN you trust, --allow-plain",
        )
    if tls is not None:
        urls = [url.replace("nats-leaf://", "tls://", 1) for url in urls]
    if not is_loopback_url(f"nats://{local_host}:{local_port}"):
        raise UsageError(
            f"the agency's local server would listen on {local_host}, off this machine",
            hint="agents run beside their leaf node: keep --listen on 127.0.0.1",
        )
    if not 1 <= local_port <= 65535 or (http_port is not None and not 1 <= http_port <= 65535):
        raise UsageError("a port must be from 1 to 65535", hint="give --port 4222, say")
    if reconnect_s < 1:
        raise UsageError("the reconnect interval must be 1 s or more", hint="give 2")
    if jetstream_domain is not None and (not is_name(jetstream_domain) or store_dir is None):
        raise UsageError(
            f"a leaf's JetStream needs a domain name and a store directory "
            f"(got {jetstream_domain!r})",
            hint="give --jetstream-domain NAME (not the hub's) and --store-dir",
        )
    quoted_urls = ", ".join(f'"{url}"' for url in urls)
    remote = [
        f"            urls: [{quoted_urls}]",
        f'            include "./{SEED_INCLUDE}"  # nkey: the agency\'s NATS seed (0600)',
    ]
    if tls is not None:
        block = leaf_tls_block(
            ca=tls.ca, cert=tls.cert, key=tls.key, timeout=tls_timeout, indent=" " * 12
        )
        remote.append(block.rstrip("\n"))
    lines = [
        f"# Generated by tfshare: the leaf node of agency {agency} in task force {taskforce}.",
        "# It dials OUT to the task force's hub; the agency opens no port to the network.",
        f"# The agency's agents use nats://{local_host}:{local_port}.",
        f"server_name: tfshare-{taskforce}-leaf-{agency}",
        f"listen: {local_host}:{local_port}",
        "max_payload: 1048576  # as the hub: envelopes of up to 512 KiB, with headers",
    ]
    if http_port is not None:
        lines.append(f"http: {local_host}:{http_port}  # /leafz shows the link to the hub")
    if jetstream_domain is not None and store_dir is not None:
        lines += [
            f"# {HUB_DOMAIN_NOTE}",
            "jetstream {",
            f"    domain: {jetstream_domain}",
            f"    store_dir: {quote_path(store_dir, what='JetStream store')}",
            "}",
        ]
    lines += [
        "leafnodes {",
        f'    reconnect: "{reconnect_s}s"',
        "    remotes = [",
        "        {",
        *remote,
        "        }",
        "    ]",
        "}",
    ]
    if local_nkey is not None:
        if not (local_nkey.startswith("U") and local_nkey.isalnum() and len(local_nkey) == 56):
            raise InputError(
                "the agency's NATS public key is not a user nkey",
                hint="give the key of the roster's nats_user for this agency (U..., 56 chars)",
            )
        lines += [
            "authorization {",
            f"    users = [ {{ nkey: {local_nkey} }} ]  # the agency's own agents only",
            "}",
        ]
    return "\n".join(lines) + "\n"


def hub_leafnodes_block(
    *,
    port: int = DEFAULT_LEAF_PORT,
    host: str = "0.0.0.0",  # noqa: S104 - the hub's leaf port is for the agencies' networks
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_ca: Path | None = None,
    verify_leaves: bool = False,
    allow_plain: bool = False,
    tls_timeout: float = DEFAULT_TLS_TIMEOUT,
) -> str:
    """The hub's ``leafnodes {}`` block, to append to the task force's nats-server
    configuration (each node of a cluster: a leaf may dial any). No ``authorization`` in it:
    leaf links sign in as the agencies' ordinary users (their permissions, their
    revocation). TLS is required unless the listener is on loopback or ``allow_plain``."""
    if not 1 <= port <= 65535:
        raise UsageError("a port must be from 1 to 65535", hint=f"give {DEFAULT_LEAF_PORT}")
    loopback = is_loopback_url(f"nats://{host}:{port}")
    if tls_cert is None and not loopback and not allow_plain:
        raise UsageError(
            f"the hub's leaf node port would listen on {host} without TLS",
            hint="give --tls-cert/--tls-key (and --tls-ca to verify the agencies' leaf nodes)",
        )
    lines = ["leafnodes {", f"    listen: {host}:{port}"]
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None or (verify_leaves and tls_ca is None):
            raise UsageError(
                "the hub's leaf TLS needs a certificate and its key (and the CA to verify)",
                hint="give --tls-cert, --tls-key and --tls-ca",
            )
        tls_block = _hub_tls(tls_cert, tls_key, tls_ca, verify_leaves, tls_timeout)
        lines.append(tls_block.rstrip("\n"))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _hub_tls(cert: Path, key: Path, ca: Path | None, verify: bool, timeout: float) -> str:
    if ca is None:
        # leaf_tls_block needs a CA to name; a hub that does not verify may go without.
        lines = [
            f"        cert_file: {quote_path(cert, what='TLS certificate')}",
            f"        key_file: {quote_path(key, what='TLS key')}",
            '        min_version: "1.3"',
            f"        timeout: {timeout:g}",
        ]
        return "    tls {\n" + "\n".join(lines) + "\n    }\n"
    return leaf_tls_block(ca=ca, cert=cert, key=key, verify=verify, timeout=timeout, indent="    ")
