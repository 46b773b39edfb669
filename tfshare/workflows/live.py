"""Live operation on a broker: run the embedded broker, publish, run the agent, read the inbox.

The offline workflows (exchange.py) seal and open files; these move the same envelopes
through a real nats-server with JetStream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nkeys  # type: ignore[import-untyped,unused-ignore]
import structlog

from tfshare import transport
from tfshare.agent import Agent
from tfshare.broker import (
    BrokerCluster,
    BrokerProcess,
    BrokerTLS,
    ClusterLayout,
    ServerLimits,
    channel_subject,
    check_cluster_configs,
    check_config,
    render_config,
    task_force_channels,
)
from tfshare.envelope import Ref
from tfshare.epoch_retention import epoch_keys_to_delete
from tfshare.epochs import EpochKeyring
from tfshare.errors import (
    BrokerError,
    BrokerRefused,
    InputError,
    RejectCode,
    Rejected,
    TfshareError,
    UsageError,
)
from tfshare.files import read_bytes, write_atomic
from tfshare.keys import Identity
from tfshare.lineage import RELATIONS, Handling, check, handling_of
from tfshare.messages import MessageType
from tfshare.protocol import RECEIPTS_CHANNEL, Clock
from tfshare.registry.book import Registry
from tfshare.registry.schema import Schema, split_name
from tfshare.roster import (
    Anchor,
    Revocation,
    TrustedRoster,
    decode_signed,
    roster_hash,
    verify_roster,
)
from tfshare.seal import Opened, Sealed, envelope_hash, reopen_stored, seal
from tfshare.store import InboxItem, SentItem, StateStore, kept_message_key
from tfshare.urls import parse_server_url
from tfshare.workflows.bodies import Prompt, body_json
from tfshare.workflows.exchange import Credentials, default_state_dir
from tfshare.workflows.filekinds import load_anchor
from tfshare.workflows.keys import UnlockedKey, destroy_expired_under, load_identity, open_key
from tfshare.workflows.rosters import load_trusted
from tfshare.workflows.schemas import fetch_schema, resolve, store_for
from tfshare.workflows.statedb import open_agency_state
from tfshare.workflows.witness import WITNESS_INTERVAL_S, run_witness

log = structlog.get_logger("tfshare.live")

DEFAULT_URL = "nats://127.0.0.1:4222"
KINDS = {"alert": "tf.alert", "red-flag": "tf.red_flag", "tip": "tf.tip_summary"}


def server_url(flag: str | None) -> str:
    """The broker URL: ``flag`` (--server, or the profile's), else $TFSHARE_SERVER, else the
    default; a malformed one is a usage error naming it (``urls.parse_server_url``, exit 2),
    never a connection attempt that times out or an agent that retries forever. Each may be
    a comma-separated list (a cluster's nodes): clients connect to any of them."""
    if flag:
        return parse_server_url(flag)
    env = os.environ.get("TFSHARE_SERVER")
    return parse_server_url(env, source="TFSHARE_SERVER") if env else DEFAULT_URL


def _now() -> int:
    return time.time_ns() // 1_000_000


# -- broker -----------------------------------------------------------------------------------


def admin_seed(directory: Path) -> bytes:
    """The broker administrator's nkey seed, created once per broker directory (0600)."""
    path = directory / "admin.seed"
    if path.exists():
        return read_bytes(path, what="broker admin seed", limit=256).strip()
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    write_atomic(path, seed + b"\n", secret=True, overwrite=False)
    return seed


# The users and permissions alone, for the templates in broker_config/ (``include``d there).
USERS_INCLUDE = "tfshare-users.conf"


@dataclass(frozen=True)
class ServerOptions:
    """What a task force's nats-server configuration holds beyond the roster and limits,
    the same on every node: TLS (clients; routes on a cluster), the hub's JetStream domain
    (for agencies' leaf nodes) and the hub's ``leafnodes {}`` block."""

    tls: BrokerTLS | None = None
    jetstream_domain: str | None = None
    leaf_port: int | None = None  # the hub's port for agencies' leaf nodes (7422)

    def leafnodes(self, host: str, offset: int = 0) -> str:
        """The ``leafnodes {}`` block of a node listening on ``host`` for clients: on
        loopback there too (nodes sharing one host take ``leaf_port`` + ``offset``), else on
        every address of the machine (agencies dial in from their networks; TLS required)."""
        if self.leaf_port is None:
            return ""
        from tfshare.leafnode import hub_leafnodes_block  # noqa: PLC0415
        from tfshare.tlsconf import is_loopback_url  # noqa: PLC0415

        loopback = is_loopback_url(f"nats://{host}:1")
        tls = self.tls
        return hub_leafnodes_block(
            port=self.leaf_port + offset,
            host=host if loopback else "0.0.0.0",  # noqa: S104 - see the docstring
            tls_cert=None if tls is None else tls.cert,
            tls_key=None if tls is None else tls.key,
            tls_ca=None if tls is None else tls.ca,
            verify_leaves=tls is not None and tls.ca is not None,
        )

    def admin_tls(self) -> ssl.SSLContext | None:
        """The SSL context 'broker up' connects to its own TLS nodes with (their CA)."""
        if self.tls is None:
            return None
        if self.tls.ca is None:
            raise UsageError(
                "'broker up' with TLS checks its own nodes' certificates: it needs the CA",
                hint="give --tls-ca with --tls-cert/--tls-key",
            )
        from tfshare.tlsconf import client_ssl_context  # noqa: PLC0415

        context = client_ssl_context(self.tls.ca)
        if self.tls.verify_clients:  # the administrator shows the node's certificate
            context = client_ssl_context(self.tls.ca, self.tls.cert, self.tls.key)
        return context


def write_broker_config(
    roster: TrustedRoster,
    directory: Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    server: ServerLimits | None = None,
    options: ServerOptions = ServerOptions(),
) -> Path:
    """Write DIR/nats.conf for the roster (checked with ``nats-server -t``), and beside it
    DIR/tfshare-users.conf: its ``authorization`` block alone, which the single-node
    templates of broker_config/ include (for operators who run nats-server themselves)."""
    directory.mkdir(parents=True, exist_ok=True)
    public = nkeys.from_seed(admin_seed(directory)).public_key.decode()
    config = render_config(
        roster,
        admin_nkey=public,
        store_dir=directory / "jetstream",
        host=host,
        port=port,
        limits=server or StreamLimits().server(),
        tls=options.tls,
        jetstream_domain=options.jetstream_domain,
        leafnodes=options.leafnodes(host),
    )
    path = directory / "nats.conf"
    write_atomic(path, config.encode())
    check_config(path)
    _write_users_include(roster, directory, config)
    return path


def _write_users_include(roster: TrustedRoster, directory: Path, config: str) -> None:
    users = config[config.index("authorization {") :]
    if "\nleafnodes {" in users:
        users = users[: users.index("\nleafnodes {") + 1]
    write_atomic(
        directory / USERS_INCLUDE,
        (
            f"# Generated by tfshare from roster seq {roster.seq} of task force "
            f"{roster.taskforce}: one NATS user per active agency, and the administrator.\n"
            "# Regenerate after every roster change (tfshare broker config), then reload.\n" + users
        ).encode(),
    )


LEAF_CONFIG = "leaf.conf"


def write_leaf_config(
    identity: Identity,
    directory: Path,
    *,
    taskforce: str,
    hub_urls: Sequence[str],
    port: int = 4222,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    allow_plain: bool = False,
    http_port: int | None = None,
) -> Path:
    """Write the agency's leaf node configuration, DIR/leaf.conf, and beside it the file
    holding the agency's NATS seed (0600, ``leafnode.SEED_INCLUDE``, included by the
    configuration so it holds no secret); checked with ``nats-server -t``. Only the
    agency's own NATS user may use the local server."""
    from tfshare.leafnode import (  # noqa: PLC0415 - for this command only
        SEED_INCLUDE,
        LeafTLS,
        render_leaf_config,
        render_seed_include,
    )

    if tls_ca is None and (tls_cert is not None or tls_key is not None):
        raise UsageError(
            "a leaf's TLS certificate is for a hub it already checks with the task force CA",
            hint="give --tls-ca as well",
        )
    tls = None
    if tls_ca is not None:
        absolute = [None if p is None else p.absolute() for p in (tls_ca, tls_cert, tls_key)]
        assert absolute[0] is not None
        tls = LeafTLS(absolute[0], absolute[1], absolute[2])
    config = render_leaf_config(
        agency=identity.agency_id,
        taskforce=taskforce,
        hub_urls=hub_urls,
        local_port=port,
        local_nkey=identity.nats_user,
        tls=tls,
        allow_plain=allow_plain,
        http_port=http_port,
    )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed = render_seed_include(identity.nats_seed_encoded())
    write_atomic(directory / SEED_INCLUDE, seed.encode(), secret=True)
    path = directory / LEAF_CONFIG
    write_atomic(path, config.encode())
    check_config(path)
    return path


def node_config_path(directory: Path, node: int) -> Path:
    """Where ``write_cluster_config`` puts node ``node``'s configuration (1-based)."""
    return directory / f"nats-{node}.conf"


def node_configs(directory: Path) -> list[Path]:
    """The node configurations in a cluster's directory, in node order."""
    found = [(p, p.stem.removeprefix("nats-")) for p in directory.glob("nats-*.conf")]
    return [p for p, n in sorted(found, key=lambda f: int(f[1])) if n.isdigit()]


def write_cluster_config(
    roster: TrustedRoster,
    directory: Path,
    layout: ClusterLayout,
    *,
    server: ServerLimits | None = None,
    options: ServerOptions = ServerOptions(),
) -> list[Path]:
    """Write DIR/nats-<i>.conf for each node of ``layout`` (its own server_name, its route
    to every other node, its own JetStream store DIR/jetstream-<i>; the same users,
    permissions and limits on all), and DIR/tfshare-users.conf; each checked with
    ``nats-server -t`` and all of them together (``check_cluster_configs``). A node file of
    an earlier, larger cluster left in DIR is removed (it would route to nodes that no
    longer exist)."""
    if len(layout.nodes) < 2:
        raise UsageError(
            f"a cluster needs 2 nodes or more (got {len(layout.nodes)})",
            hint="give --cluster 3 (or 5): a cluster of 3 keeps going when one node stops",
        )
    from tfshare.tlsconf import is_loopback_url  # noqa: PLC0415

    remote = [url for url in layout.urls if not is_loopback_url(url)]
    if remote and options.tls is None:
        # Plain routes have no authentication: any machine that reaches a route port would
        # join the cluster and see, and inject, every message of every agency.
        raise UsageError(
            f"the nodes are on other machines ({remote[0]}...): their routes and clients "
            "would cross the network without TLS, and anyone reaching a route port could "
            "join the cluster",
            hint="give --tls-cert/--tls-key/--tls-ca (the nodes' certificate and the task "
            "force CA: mutual-TLS routes); without --hosts the nodes run on loopback",
        )
    directory.mkdir(parents=True, exist_ok=True)
    public = nkeys.from_seed(admin_seed(directory)).public_key.decode()
    paths: list[Path] = []
    config = ""
    shared_host = len({node.host for node in layout.nodes}) < len(layout.nodes)
    for index in range(1, len(layout.nodes) + 1):
        config = render_config(
            roster,
            admin_nkey=public,
            store_dir=directory / f"jetstream-{index}",
            limits=server or StreamLimits().server(),
            cluster=layout,
            node=index,
            tls=options.tls,
            jetstream_domain=options.jetstream_domain,
            leafnodes=options.leafnodes(
                layout.nodes[index - 1].host, index - 1 if shared_host else 0
            ),
        )
        path = node_config_path(directory, index)
        write_atomic(path, config.encode())
        paths.append(path)
    for stale in node_configs(directory):
        if stale not in paths:
            stale.unlink()
    check_cluster_configs(paths)
    _write_users_include(roster, directory, config)
    return paths


async def _admin(
    url: str, directory: Path, tls: ssl.SSLContext | None = None
) -> transport.Connection:
    return await transport.connect(
        url,
        nkey_seed=admin_seed(directory),
        agency=None,
        name="tfshare-admin",
        reconnect=False,
        tls=tls,
    )


@dataclass(frozen=True)
class StreamLimits:
    """What the operator bounds on the broker (README, "Limits"). Each channel has a stream
    of its own (``channel_limits``): the message channels keep messages ``max_age_days``,
    up to ``max_msgs_per_sender`` per sender each, of up to 516 KiB; the receipts channel
    keeps them ``receipts_max_age_days``, up to ``max_receipts_per_sender`` per reader, of up
    to 28 KiB. ``max_bytes`` is every stream together: the receipts channel gets
    ``transport.RECEIPTS_SHARE`` of it, the message channels share the rest equally. Also
    the duplicate window, what a reader may hold unacknowledged per channel, and the server's
    own limits (disk for JetStream, connections, subscriptions per connection). ``check``
    refuses values that do not make sense before anything is started."""

    max_age_days: float = transport.DEFAULT_MAX_AGE_DAYS
    duplicate_window_s: float = 120
    max_bytes: int = transport.DEFAULT_MAX_BYTES
    max_msgs_per_sender: int = transport.DEFAULT_MAX_MSGS_PER_SENDER
    max_ack_pending: int = transport.DEFAULT_MAX_ACK_PENDING
    max_waiting: int = transport.DEFAULT_MAX_WAITING
    max_file_store: int | None = None  # None: max_bytes and 1 GiB for buckets and state
    max_connections: int = ServerLimits.max_connections
    max_subscriptions: int = ServerLimits.max_subscriptions
    max_receipts_per_sender: int = transport.DEFAULT_MAX_RECEIPTS_PER_SENDER
    receipts_max_age_days: float = transport.DEFAULT_RECEIPTS_MAX_AGE_DAYS

    @property
    def file_store(self) -> int:
        return self.max_file_store or self.max_bytes + transport.GIB

    @property
    def receipts_bytes(self) -> int:
        """The receipts channel's share of max_bytes."""
        return int(self.max_bytes * transport.RECEIPTS_SHARE)

    @property
    def sender_worst_case(self) -> int:
        """The most bytes one sender can keep on one message channel: its quota of largest
        messages."""
        return self.max_msgs_per_sender * transport.MAX_MSG_SIZE

    def channel_limits(
        self, channels: Sequence[str], epoch_readers: Mapping[str, int] | None = None
    ) -> dict[str, transport.ChannelLimits]:
        """Each channel's stream limits. A sender's quota on a channel is kept to half of
        that channel's share (``quota x largest message <= share / 2``), so one member that
        floods a channel can never fill it for the others: with many channels the share is
        smaller and the quota lowered to fit (logged, ``sender_quota_capped``). A share too
        small for even one largest message is a ``UsageError``. ``epoch_readers``: the
        epoch-mode channels and their readers (``transport.epoch_readers``): their quota
        holds the key manager's re-keys (``transport.epoch_channel_quota``)."""
        receipts = RECEIPTS_CHANNEL in channels
        others = [c for c in channels if c != RECEIPTS_CHANNEL]
        rest = self.max_bytes - (self.receipts_bytes if receipts else 0)
        found: dict[str, transport.ChannelLimits] = {}
        for channel in channels:
            if channel == RECEIPTS_CHANNEL:
                share, quota = self.receipts_bytes, self.max_receipts_per_sender
                size, age = transport.RECEIPT_MAX_MSG_SIZE, self.receipts_max_age_days
            else:
                share, quota = rest // len(others), self.max_msgs_per_sender
                size, age = transport.MAX_MSG_SIZE, self.max_age_days
            fits = share // (2 * size)
            if fits < 1:
                raise UsageError(
                    f"--max-bytes {self.max_bytes} leaves channel {channel!r} only {share} "
                    f"bytes, less than two of its largest messages ({size} bytes each)",
                    hint="raise --max-bytes: the receipts channel gets an eighth of it, the "
                    f"other {len(others)} channel(s) share the rest",
                )
            if quota > fits:
                log.warning(
                    "sender_quota_capped", channel=channel, quota=quota, capped=fits, share=share
                )
            quota = min(quota, fits)
            if epoch_readers is not None and channel in epoch_readers:
                quota = transport.epoch_channel_quota(
                    channel, share=share, quota=quota, readers=epoch_readers[channel]
                )
            found[channel] = transport.ChannelLimits(
                max_bytes=share,
                max_msgs_per_sender=quota,
                max_age_days=age,
                max_msg_size=size,
            )
        return found

    def server(self) -> ServerLimits:
        return ServerLimits(
            max_file_store=self.file_store,
            max_connections=self.max_connections,
            max_subscriptions=self.max_subscriptions,
            max_ack_pending=max(ServerLimits.max_ack_pending, self.max_ack_pending, 1024),
        )

    def check(self) -> StreamLimits:
        """These limits, or ``UsageError`` (exit 2) naming the first one that is wrong."""
        positive = {
            "--max-age-days": self.max_age_days,
            "--receipts-max-age-days": self.receipts_max_age_days,
            "--duplicate-window": self.duplicate_window_s,
            "--max-bytes": self.max_bytes,
            "--max-msgs-per-sender": self.max_msgs_per_sender,
            "--max-receipts-per-sender": self.max_receipts_per_sender,
            "--max-ack-pending": self.max_ack_pending,
            "--max-waiting": self.max_waiting,
            "--max-connections": self.max_connections,
            "--max-subscriptions": self.max_subscriptions,
        }
        for flag, value in positive.items():
            if not value > 0:
                raise UsageError(f"{flag} must be more than 0 (got {value:g})", hint=_LIMITS_HINT)
        if self.duplicate_window_s > min(self.max_age_days, self.receipts_max_age_days) * 86400:
            raise UsageError(
                "--duplicate-window is longer than --max-age-days or --receipts-max-age-days",
                hint="JetStream refuses a duplicate window longer than a stream keeps "
                "messages; the default is 120 seconds",
            )
        if self.max_bytes < transport.MAX_MSG_SIZE * 16:
            raise UsageError(
                f"--max-bytes {self.max_bytes} is too small for the streams",
                hint=f"give at least {transport.MAX_MSG_SIZE * 16 // transport.MIB} MiB "
                "(e.g. 8GiB, the default)",
            )
        if 2 * self.sender_worst_case > self.max_bytes - self.receipts_bytes:
            raise UsageError(
                f"one sender could fill a channel: {self.max_msgs_per_sender} messages "
                f"of up to {transport.MAX_MSG_SIZE // 1024} KiB is more than half of what "
                "--max-bytes leaves a message channel",
                hint="lower --max-msgs-per-sender or raise --max-bytes, so that a member that "
                "floods one channel is refused before the channel is full for everyone",
            )
        receipts_worst = self.max_receipts_per_sender * transport.RECEIPT_MAX_MSG_SIZE
        if 2 * receipts_worst > self.receipts_bytes:
            raise UsageError(
                f"one reader could fill the receipts channel: {self.max_receipts_per_sender} "
                f"receipts of up to {transport.RECEIPT_MAX_MSG_SIZE // 1024} KiB is more than "
                "half of its share (an eighth of --max-bytes)",
                hint="lower --max-receipts-per-sender or raise --max-bytes",
            )
        if self.file_store < self.max_bytes + transport.BUCKETS_MAX_BYTES:
            raise UsageError(
                "--max-file-store is smaller than --max-bytes and the KV buckets",
                hint="JetStream must have room for every stream and the KV buckets: give "
                "--max-file-store at least --max-bytes plus 1GiB (or leave it out)",
            )
        return self


_LIMITS_HINT = "see 'tfshare broker up --help' for each limit and its default"
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}  # fmt: skip


def parse_size(text: str, *, flag: str) -> int:
    """Bytes from "8GiB", "500MB", "1048576" (what nats-server accepts, and the same units);
    ``UsageError`` (exit 2) for anything else."""
    value = text.strip().lower().replace(" ", "")
    number = value.rstrip("kmgtib")
    unit = value[len(number) :]
    try:
        amount = float(number) * _SIZE_UNITS.get(unit, 0)
    except ValueError:
        amount = 0.0
    if not 1 <= amount < 2**62:  # NaN and infinity fail this too
        raise UsageError(
            f"{flag}: {text[:40]!r} is not a size",
            hint="give a number of bytes with an optional unit: 512MB, 8GiB, 1073741824",
        )
    return int(amount)


async def provision_broker(
    url: str,
    directory: Path,
    roster: TrustedRoster,
    roster_bytes: bytes | None = None,
    limits: StreamLimits = StreamLimits(),
    *,
    replicas: int | None = None,
    ready_timeout: float = 0.0,
    tls: ssl.SSLContext | None = None,
) -> dict[str, transport.ChannelLimits]:
    """One stream per channel of the roster (each with its limits), the consumers and the
    KV buckets; seeds the roster bucket with ``roster_bytes`` if it is empty (a roster
    already there, perhaps newer, is left alone). Streams and buckets get ``replicas``
    copies (None: R3 on a cluster of 3+ nodes, else 1) and never fewer than they have
    (``transport.provision``); the limits returned say each stream's replicas.

    ``ready_timeout``: how long to wait for JetStream to answer first (a cluster just
    started elects its leaders for a few seconds). ``tls``: the SSL context for a broker
    that requires TLS of its clients (``tlsconf.client_ssl_context``)."""
    if replicas is not None and not 1 <= replicas <= 5:
        raise UsageError(
            f"--replicas must be 1 to 5 (got {replicas})",
            hint="3 on a cluster of 3 nodes or more, 1 for a server alone",
        )
    channel_limits = limits.channel_limits(
        task_force_channels(roster), epoch_readers=transport.epoch_readers(roster)
    )
    admin = await _admin(url, directory, tls)
    try:
        deadline = time.monotonic() + ready_timeout
        if ready_timeout > 0:
            await transport.wait_jetstream(admin, timeout=ready_timeout)
        while True:
            try:
                kept = await transport.provision(
                    admin,
                    roster,
                    channel_limits,
                    duplicate_window_s=limits.duplicate_window_s,
                    max_ack_pending=limits.max_ack_pending,
                    max_waiting=limits.max_waiting,
                    replicas=replicas,
                )
                break
            except transport.ReplicasUnavailable:
                # A cluster just started answers before all its nodes have met: its
                # leaders cannot place 3 replicas yet. Within the wait, that is not an
                # answer; after it, it is.
                if time.monotonic() + 1.0 > deadline:
                    raise
                await asyncio.sleep(1.0)
        if roster_bytes is not None and await transport.get_roster(admin, roster.taskforce) is None:
            await transport.put_roster(admin, roster.taskforce, roster_bytes)
    finally:
        await admin.close()
    return {
        channel: dataclasses.replace(limit, replicas=kept.get(channel, limit.replicas))
        for channel, limit in channel_limits.items()
    }


def start_broker(
    roster: TrustedRoster,
    directory: Path,
    *,
    port: int,
    roster_bytes: bytes | None = None,
    limits: StreamLimits = StreamLimits(),
    options: ServerOptions = ServerOptions(),
) -> BrokerProcess:
    """Configure, start and provision a nats-server for the roster's task force."""
    admin_tls = options.admin_tls()
    config = write_broker_config(
        roster, directory, port=port, server=limits.check().server(), options=options
    )
    broker = BrokerProcess(config=config, host="127.0.0.1", port=port, log=directory / "nats.log")
    broker.start()
    try:
        asyncio.run(
            provision_broker(broker.url, directory, roster, roster_bytes, limits, tls=admin_tls)
        )
    except BaseException:
        broker.stop()
        raise
    return broker


def start_cluster(
    roster: TrustedRoster,
    directory: Path,
    layout: ClusterLayout,
    *,
    roster_bytes: bytes | None = None,
    limits: StreamLimits = StreamLimits(),
    replicas: int | None = None,
    options: ServerOptions = ServerOptions(),
) -> BrokerCluster:
    """Configure, start and provision a cluster of nats-servers on this machine (loopback:
    tests and the demo), each node logging to DIR/nats-<i>.log. Streams and buckets get
    ``replicas`` copies (None: R3 from 3 nodes)."""
    admin_tls = options.admin_tls()
    paths = write_cluster_config(
        roster, directory, layout, server=limits.check().server(), options=options
    )
    cluster = BrokerCluster(
        [
            BrokerProcess(
                config=path, host=node.host, port=node.port, log=directory / f"nats-{i}.log"
            )
            for i, (path, node) in enumerate(zip(paths, layout.nodes, strict=True), start=1)
        ]
    )
    cluster.start()
    wanted = replicas if replicas is not None else transport.default_replicas(len(paths))
    try:
        asyncio.run(
            provision_broker(
                cluster.url,
                directory,
                roster,
                roster_bytes,
                limits,
                replicas=wanted,
                ready_timeout=CLUSTER_READY_S,
                tls=admin_tls,
            )
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


# A cluster just started needs a few seconds to elect its JetStream leaders (about 5 s for
# 3 nodes on loopback, measured).
CLUSTER_READY_S = 30.0


@dataclass
class BrokerSupervisor:
    """Keeps a running broker in step with the roster published in its KV bucket: a new
    verified roster rewrites the configuration, reloads nats-server (SIGHUP) and provisions
    consumers for new readers. A removed agency loses its NATS user with it."""

    broker: BrokerProcess | BrokerCluster
    directory: Path
    anchor: Anchor
    store: StateStore
    roster: TrustedRoster
    limits: StreamLimits = StreamLimits()  # the broker's: a roster change keeps them
    layout: ClusterLayout | None = None  # the cluster's nodes (broker is a BrokerCluster)
    options: ServerOptions = ServerOptions()  # TLS, domain, leaf port: a roster change keeps them

    def __post_init__(self) -> None:
        self._admin_tls = self.options.admin_tls()
        # The roster last read: a pointer to the same object is not followed again (a
        # 20,000-member roster is 6 MB, and the bucket is looked at every 2 s).
        self._last_bytes: bytes | None = None

    def check(self) -> TrustedRoster | None:
        """One look at the bucket; returns the new roster if it changed and was applied."""

        async def fetch() -> bytes | None:
            admin = await _admin(self.broker.url, self.directory, self._admin_tls)
            try:
                return await transport.get_roster(
                    admin, self.roster.taskforce, known=self._last_bytes
                )
            finally:
                await admin.close()

        data = asyncio.run(fetch())
        self._last_bytes = data
        if data is None or roster_hash(decode_signed(data).roster) == self.roster.hash:
            return None
        trusted, state = verify_roster(
            data,
            anchor=self.anchor,
            state=self.store.roster_state(self.anchor.taskforce),
            now_ms=_now(),
            previous=self.roster,  # re-checks only the members that changed (PROTOCOL 7.3)
        )
        self.store.save_roster_state(self.anchor.taskforce, state)
        if self.layout is not None:
            write_cluster_config(
                trusted,
                self.directory,
                self.layout,
                server=self.limits.server(),
                options=self.options,
            )
        else:
            assert isinstance(self.broker, BrokerProcess)
            write_broker_config(
                trusted,
                self.directory,
                port=self.broker.port,
                server=self.limits.server(),
                options=self.options,
            )
        self.broker.reload()
        asyncio.run(
            provision_broker(
                self.broker.url, self.directory, trusted, limits=self.limits, tls=self._admin_tls
            )
        )
        self.roster = trusted
        return trusted


# -- an agency's side -------------------------------------------------------------------------


@dataclass
class Agency:
    """What an agency's live commands need, loaded and verified once."""

    creds: Credentials
    roster: TrustedRoster
    registry: Registry
    store: StateStore
    roster_path: Path
    anchor_path: Path
    registry_dir: Path | None = None
    _identity: Identity | None = field(default=None, repr=False)
    # TLS for tls:// brokers (the agency's --tls-ca/--tls-cert/--tls-key or its profile's),
    # built once; every connection of this agency's commands, agent and services uses it.
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    # The hub's JetStream domain when this agency connects to its own leaf node.
    js_domain: str | None = None
    # The epoch keys held (mode 2), opened from the state database with the state key; the
    # agent of this agency adds to the same keyring as keys are delivered.
    epochs: EpochKeyring = field(default_factory=EpochKeyring, repr=False)
    # The opened key file (with the key that opened it, not the passphrase): what lets a
    # long-running agent destroy retired secrets once their grace period is over.
    _unlocked: UnlockedKey | None = field(default=None, repr=False)

    def identity(self) -> Identity:
        """The agency's key, unlocked once (the passphrase's KDF is slow on purpose)."""
        if self._identity is None:
            self._identity = load_identity(self.creds.key_path, self.creds.passphrase)
        return self._identity

    def destroy_expired_secrets(self, now_ms: int) -> Identity:
        """The identity without the retired secrets whose grace period ended by ``now_ms``,
        dropped from memory and from the key file (rewritten with the key kept at unlock,
        no passphrase): the agent calls it daily (PROTOCOL 8.7). Never the secret of a key
        the roster in force still lists as this agency's (a rotation not applied: senders
        still use that key); ``rotation_not_applied`` is logged instead."""
        if self._unlocked is None:
            return self.identity()
        self._unlocked = destroy_expired_under(self._unlocked, self.roster, now_ms=now_ms)
        self._identity = self._unlocked.identity
        return self._identity

    @classmethod
    def load(
        cls,
        creds: Credentials,
        *,
        roster_path: Path,
        anchor_path: Path,
        state_dir: Path | None,
        registry_dir: Path | None,
        tls: ssl.SSLContext | None = None,
        js_domain: str | None = None,
    ) -> Agency:
        # The key first (a wrong passphrase fails here, before any command says it listens),
        # then the roster, and only then the state database: a command that fails leaves no
        # new one behind (statedb.open_agency_state). Nothing of the key is destroyed before
        # the roster is known: it may still list a key whose grace period is over.
        unlocked = open_key(creds.key_path, creds.passphrase)
        state = open_agency_state(
            state_dir or default_state_dir(creds.key_path),
            roster_path=roster_path,
            anchor_path=anchor_path,
            registry_dir=registry_dir,
            now_ms=_now(),
        )
        agency = cls(
            # The key is unlocked: the passphrase is not kept (the agent lives for weeks).
            Credentials(creds.key_path, b""),
            state.roster,
            state.registry,
            state.store,
            roster_path,
            anchor_path,
            registry_dir,
            _identity=unlocked.identity,
            tls=tls,
            js_domain=js_domain,
            _unlocked=unlocked,
        )
        now = _now()
        agency.destroy_expired_secrets(now)
        agency.refresh_epochs()
        # Keys past their retention go at start, as the agent's do (nothing sealed under
        # them is to be opened from this state any more), and so do those of channels this
        # agency no longer reads (epoch_retention).
        gone = epoch_keys_to_delete(agency.epochs, agency.roster, agency.identity().agency_id, now)
        if gone:
            agency.store.epoch_keys_delete(agency.roster.taskforce, gone)
            agency.epochs.remove(gone)
        return agency

    def refresh_epochs(self) -> int:
        """Add to ``epochs`` the keys the state database holds that it lacks (the agent of
        this agency may have kept some since this command started); the keyring object
        stays the same (the agent shares it). Returns how many were added."""
        keys, _ = self.store.epoch_keys(self.roster.taskforce, state_key=self.identity().state_key)
        added = 0
        for key in keys:
            if self.epochs.get(key.channel, key.epoch) is None:
                self.epochs.add(key)
                added += 1
        return added

    async def fetch_schema(self, conn: transport.Connection, name: str) -> Registry | None:
        """Fetch a schema version (and any missing predecessors) from the broker's registry
        bucket; each record is verified in full, the subject and version asked for included,
        before anything is cached (``schemas.fetch_schema``). Returns the updated registry."""
        registry = await fetch_schema(
            conn,
            name,
            registry=self.registry,
            roster=self.roster,
            store=store_for(self.registry_dir, self.roster.taskforce),
            now_ms=_now(),
        )
        if registry is not None:
            self.registry = registry
        return registry

    def accept_roster(self, data: bytes) -> TrustedRoster:
        """A roster from the broker's bucket: verified against the anchor and the rollback
        state, then kept (state and roster file) and returned; a bad one raises."""
        trusted, state = verify_roster(
            data,
            anchor=load_anchor(self.anchor_path),
            state=self.store.roster_state(self.roster.taskforce),
            now_ms=_now(),
            previous=self.roster,  # re-checks only the members that changed (PROTOCOL 7.3)
        )
        self.store.save_roster_state(self.roster.taskforce, state)
        write_atomic(self.roster_path, data)
        self.roster = trusted
        return trusted

    def reload_roster(self) -> TrustedRoster:
        """The roster file as it is now, verified (and its state persisted) as at start."""
        self.roster = load_trusted(
            self.roster_path, self.anchor_path, self.store, now_ms=_now(), previous=self.roster
        )
        return self.roster


@dataclass(frozen=True)
class Parent:
    """The message a new one derives from (``--reshare ID`` and the like), as this agency
    knows it: from its inbox (decrypted, so its handling and body are known) or from its own
    sent messages (handling recorded when it was sealed; body not kept)."""

    msg_id: bytes
    env_hash: bytes
    sender: str
    channel: str
    schema: str
    handling: Handling
    body: object | None  # the decoded body, if this agency can read it


def find_parent(agency: Agency, msg_id_text: str, *, me: str) -> Parent:
    """The message with this id (or a unique prefix of 8+ hex digits) in the inbox or among
    this agency's (``me``) own sent messages; ``SENDER:MSG_ID`` picks one sender's.

    Senders choose their msg_ids, so two senders can use the same one (a member copying an id
    it has seen): the parent must then be named with its sender, never picked silently."""
    sender, colon, wanted = msg_id_text.strip().rpartition(":")
    wanted = wanted.lower()
    if not 8 <= len(wanted) <= 32 or any(c not in "0123456789abcdef" for c in wanted):
        raise UsageError(
            f"{msg_id_text!r} is not a message id",
            hint="give the 32 hex digits of the msg_id ('inbox list' shows them), or at least "
            "the first 8",
        )
    received, own = agency.store.find_by_prefix(wanted)
    if colon:
        received = [item for item in received if item.sender == sender]
        own = own if sender == me else []
    found = {(item.sender, item.msg_id) for item in received} | {(me, i.msg_id) for i in own}
    if not found:
        raise InputError(
            f"no message {wanted} in this agency's inbox or sent messages",
            hint="only a message this agency received or sent can be referenced; see "
            "'tfshare inbox list'",
        )
    if len({msg_id for _, msg_id in found}) > 1:
        raise UsageError(
            f"{wanted} matches {len(found)} messages", hint="give more digits of the msg_id"
        )
    if len(found) > 1:
        senders = ", ".join(sorted(name for name, _ in found))
        raise UsageError(
            f"message id {wanted} was used by several senders ({senders})",
            hint="name the one you mean as SENDER:MSG_ID; a copied id may be an attempt to "
            "mislead, so tell the coordinators",
        )
    if own:
        mine: SentItem = own[0]
        return Parent(
            mine.msg_id,
            mine.env_hash,
            me,
            mine.channel,
            mine.schema,
            Handling(mine.no_forward, mine.handling_code),
            None,
        )
    read = read_inbox_item(agency, received[0])
    if read.warning is not None:
        # Shown marked, but never built upon: its sender's key may have been in the wrong
        # hands when it was signed.
        raise Rejected(
            RejectCode.E_REVOKED,
            f"message {wanted} cannot be derived from: {read.warning}",
            hint="do not pass it on or act on it without checking with its sender by other "
            "means; tell the coordinators",
        )
    opened = read.opened
    return Parent(
        opened.msg_id,
        opened.env_hash,
        opened.sender,
        opened.channel,
        opened.schema,
        handling_of(opened.record),
        body_of(opened),
    )


def _derive(
    agency: Agency,
    derive: tuple[str, str],
    *,
    me: str,
    channel: str | None,
    to: Sequence[str] | None,
    subject: str,
) -> tuple[list[Ref], str, Sequence[str] | None, object | None]:
    """The refs, channel, recipients and starting body of a derived message, after the
    handling rules allowed it."""
    relation, parent_text = derive
    if relation not in RELATIONS:
        raise UsageError(
            f"unknown relation {relation!r}", hint=f"use one of {', '.join(RELATIONS)}"
        )
    parent = find_parent(agency, parent_text, me=me)
    check(relation, parent_sender=parent.sender, parent=parent.handling, by=me)
    channel = channel or parent.channel
    same_type = split_name(parent.schema)[0] == subject
    body = parent.body if relation != "reply" and same_type else None
    if (
        relation == "reply"
        and to is None
        and parent.sender != me
        and parent.sender in agency.roster.readers.get(channel, ())
    ):
        to = [parent.sender]  # a reply goes back to the requester
    return [Ref(RELATIONS[relation], parent.msg_id, parent.env_hash)], channel, to, body


@dataclass(frozen=True)
class Published:
    sealed: Sealed
    subject: str
    queued: bool
    seq: int | None
    duplicate: bool
    flushed: int
    reason: str | None = None  # why it was queued (the broker error)
    channel: str = ""


def _record(
    schema: Schema,
    body_path: Path | None,
    fields: Sequence[str],
    prompt: Prompt | None,
    parent_body: object | None,
    body: bytes | None = None,
) -> object:
    """The validated body: the given bytes or file, else the parent's body, then the fields
    and prompts."""
    if body is None and body_path is not None:
        body = read_bytes(body_path, what="body file", limit=512 * 1024)
    if body is None and not fields and prompt is None and parent_body is None:
        raise UsageError(
            "no body given",
            hint="give --body-file BODY.json (or - for stdin) and/or --field path=value",
        )
    base = (
        body
        if body is not None
        else None
        if parent_body is None
        else msgspec.json.encode(parent_body)
    )
    return schema.from_json(body_json(schema.document, base=base, fields=fields, prompt=prompt))


def seal_and_keep(agency: Agency, draft: Composed, *, queue: bool) -> tuple[Sealed, SentItem]:
    """Seal the message under its channel's next sequence number; with ``queue``, also put it
    in the outbox and the sent list, in the same transaction (a store that cannot take it,
    a full disk, keeps nothing of it, not even a used-up number).

    Without ``queue`` nothing but the number is kept: the outbox is what the agent sends, so
    a message that must not be sent later never enters it, and it joins the sent list only
    once the broker acknowledged it (``publish``)."""
    identity = agency.identity()
    schema: MessageType = draft.schema
    record, channel, subject = draft.record, draft.channel, draft.subject
    handling = handling_of(record)
    now = _now()
    with agency.store.transaction():
        sealed = seal(
            identity=identity,
            roster=agency.roster,
            channel=channel,
            to=draft.to,
            schema=schema,
            body=schema.to_body(record),
            seq=agency.store.next_seq(channel),
            now_ms=now,
            rng=os.urandom,
            refs=draft.refs,
            # The channel's policy and audience pick the mode (``epochs.choose_mode``).
            epochs=agency.epochs,
        )
        mine = SentItem(
            sealed.msg_id,
            envelope_hash(sealed.data),
            channel,
            schema.name,
            now,
            handling.no_forward,
            handling.code,
            sealed.data,
        )
        if queue:
            # Into the outbox first: if anything below fails, the message is not lost.
            agency.store.outbox_add(sealed.msg_id, subject, sealed.data, now)
            # And among this agency's own messages, so it can amend or retract it later.
            agency.store.sent_add(mine)
    return sealed, mine


@dataclass
class _Attempt:
    """How far a publish got: whether this message's bytes went to the broker (after that
    a failure may hide a message the broker stored all the same)."""

    own_sent_out: bool = False


async def _send_outbox(
    agency: Agency,
    identity: Identity,
    url: str,
    own: Sealed,
    subject: str,
    *,
    queued: bool,
    attempt: _Attempt,
) -> tuple[int, bool, int]:
    """Send the outbox, oldest first, then message ``own`` if it is not ``queued`` in it:
    its (stream seq, duplicate) and how many older queued ones went out with it.

    The running agent of the profile may send the same queued envelopes at the same time;
    each carries its msg_id as Nats-Msg-Id, so JetStream keeps one of each (and receivers
    drop a repeat by its msg_id in any case)."""
    conn = await transport.connect(
        url,
        nkey_seed=identity.nats_seed_encoded(),
        agency=identity.agency_id,
        name=f"tfshare-publish-{identity.agency_id}",
        reconnect=False,
        connect_timeout=1.0,
        tls=agency.tls,
        js_domain=agency.js_domain,
    )
    try:
        flushed = 0
        result = (0, False)
        for msg_id, subj, data in agency.store.outbox():
            if msg_id == own.msg_id:
                attempt.own_sent_out = True
            try:
                result_here = await transport.publish(conn, subj, data, msg_id=msg_id.hex())
            except transport.BrokerAuthFailed:
                raise  # about this agency's credentials, not about this message
            except BrokerRefused as exc:
                agency.store.outbox_refused(msg_id, exc.message)
                if msg_id == own.msg_id:
                    raise  # this publish itself is refused: say so, do not queue
                continue  # an older refused one must not block the rest
            agency.store.outbox_done(msg_id)
            if msg_id == own.msg_id:
                result = result_here
            else:
                flushed += 1
        if not queued:
            attempt.own_sent_out = True
            result = await transport.publish(conn, subject, own.data, msg_id=own.msg_id.hex())
        return result[0], result[1], flushed
    finally:
        await conn.close()


def _not_sent(exc: BrokerError, attempt: _Attempt) -> BrokerError:
    """The error for a ``--no-queue`` publish that failed: nothing will send it later, and
    whether the broker may have stored it all the same (its answer timed out after the
    message went out). The broker's own hint stays, without "tfshare retries": not here."""
    cause = exc.hint.removesuffix("; tfshare retries")
    if attempt.own_sent_out and isinstance(exc, transport.BrokerTimeout):
        return type(exc)(
            f"{exc.message}; not kept for later (--no-queue), but the broker may have stored "
            "the message before its answer was lost",
            hint=f"{cause}; nothing will send it later: ask a recipient whether it arrived "
            "before publishing it again",
        )
    return type(exc)(
        f"{exc.message}; the message was not sent and is not kept for later (--no-queue)",
        hint=f"{cause}; nothing will send it later: publish it again once the broker takes "
        "it, or without --no-queue to keep it in the outbox until then",
    )


@dataclass(frozen=True)
class Composed:
    """A message ready to seal: its schema, validated body, channel, recipients and refs."""

    schema: Schema
    record: object
    channel: str
    to: Sequence[str] | None
    refs: list[Ref]
    subject: str


def compose(
    agency: Agency,
    *,
    kind: str,
    channel: str | None,
    to: Sequence[str] | None,
    body_path: Path | None = None,
    body: bytes | None = None,
    fields: Sequence[str] = (),
    prompt: Prompt | None = None,
    derive: tuple[str, str] | None = None,
) -> Composed:
    """Everything before sealing, for ``publish`` and for the agent's desk: the kind's
    schema, the parent (handling rules checked), the channel, the validated body. Nothing
    is stored; a refusal leaves nothing to undo."""
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    schema = resolve(agency.registry, KINDS[kind])
    me = agency.identity().agency_id
    refs: list[Ref] = []
    parent_body: object | None = None
    if derive is not None:
        refs, channel, to, parent_body = _derive(
            agency, derive, me=me, channel=channel, to=to, subject=schema.subject
        )
    if channel is None:
        raise UsageError("no channel given", hint="give --channel (see 'tfshare roster show')")
    record = _record(schema, body_path, fields, prompt, parent_body, body)
    subject = channel_subject(agency.roster.taskforce, channel, me)
    return Composed(schema, record, channel, to, refs, subject)


def publish(
    agency: Agency,
    *,
    kind: str,
    channel: str | None,
    to: Sequence[str] | None,
    body_path: Path | None,
    fields: Sequence[str] = (),
    prompt: Prompt | None = None,
    url: str,
    queue: bool,
    derive: tuple[str, str] | None = None,
    body: bytes | None = None,
) -> Published:
    """Seal a body (JSON bytes or a file, ``--field``s, prompts for what is missing) and
    publish it; if the broker is away, keep it in the outbox (``queue``), from where the next
    publish or the profile's agent sends it.

    Without ``queue`` the message never enters the outbox: it is published directly and,
    if that fails, nothing of it is left to be sent later (its sequence number stays used:
    receivers accept gaps). It joins the sent list only once the broker acknowledged it.

    ``derive`` = (relation, parent msg_id) puts the parent's msg_id and envelope hash in the
    signed header, after the handling rules allow it (``HandlingRefused``, exit 3, if not).
    A derived message goes on the parent's channel unless ``channel`` says otherwise; a
    reshare, escalation or amendment of a message this agency can read starts from the
    parent's body (``--field``s change it); a reply goes to the requester unless ``to``
    names others."""
    draft = compose(
        agency,
        kind=kind,
        channel=channel,
        to=to,
        body_path=body_path,
        body=body,
        fields=fields,
        prompt=prompt,
        derive=derive,
    )
    identity = agency.identity()
    sealed, mine = seal_and_keep(agency, draft, queue=queue)
    subject = draft.subject
    attempt = _Attempt()
    try:
        seq, duplicate, flushed = asyncio.run(
            _send_outbox(agency, identity, url, sealed, subject, queued=queue, attempt=attempt)
        )
    except transport.BrokerAuthFailed as exc:
        # Not an outage: the broker does not know this agency's NATS key, and will not until
        # its configuration changes (or ever, if the agency was revoked). Queueing would send
        # the message at some unknown later time after the sender was told it failed; so it
        # is neither sent nor queued.
        if queue:
            agency.store.outbox_done(sealed.msg_id)
            agency.store.sent_drop(sealed.msg_id)
        raise transport.BrokerAuthFailed(
            f"{exc.message}; the message was neither sent nor queued",
            hint=f"{exc.hint}. If this agency was revoked, the broker refuses it for good: "
            "ask the coordinators",
        ) from None
    except transport.TlsRefused as exc:
        # Configuration too (the CA or a certificate): queueing would only hide it.
        if queue:
            agency.store.outbox_done(sealed.msg_id)
            agency.store.sent_drop(sealed.msg_id)
        raise transport.TlsRefused(
            f"{exc.message}; the message was neither sent nor queued", hint=exc.hint
        ) from None
    except BrokerRefused as exc:
        if queue:
            agency.store.sent_drop(sealed.msg_id)  # set aside in the outbox, never sent
            raise
        raise _not_sent(exc, attempt) from None
    except BrokerError as exc:
        if not queue:
            raise _not_sent(exc, attempt) from None
        return Published(
            sealed, subject, True, None, False, 0, reason=exc.message, channel=draft.channel
        )
    if not queue:
        try:
            agency.store.sent_add(mine)  # acknowledged: now one of this agency's messages
        except TfshareError as exc:
            exc.message = f"{sealed.msg_id.hex()} WAS published, but {exc.message}"
            exc.hint = f"do not publish it again; {exc.hint} (until then, amending or "
            exc.hint += "retracting this message is refused: it is not among the sent ones)"
            raise
    return Published(sealed, subject, False, seq, duplicate, flushed, channel=draft.channel)


def make_agent(
    agency: Agency,
    *,
    url: str,
    clock: Clock,
    witness: bool = True,
    witness_interval_s: float = WITNESS_INTERVAL_S,
) -> Agent:
    """The agency's agent (run it with ``await agent.run(stop)``); ``AgencyRevoked`` (exit 6)
    if the roster revoked this agency. Unless ``witness`` is
    False it also witnesses the audit log (AUDIT-LOG.md 13): it checks each new checkpoint
    against the one it holds, co-signs it and publishes the cosignature, when the audit
    service announces one and every ``witness_interval_s`` in any case."""
    identity = agency.identity()

    async def witness_log(conn: transport.Connection, ended: asyncio.Event) -> None:
        await run_witness(
            conn,
            identity=identity,
            roster=lambda: agency.roster,
            state_dir=agency.store.path.parent,
            stop=ended,
            interval_s=witness_interval_s,
        )

    agent = Agent(
        identity=identity,
        roster=agency.roster,
        schemas=agency.registry,
        store=agency.store,
        url=url,
        clock=clock,
        accept_roster=agency.accept_roster,
        # Read when the broker refuses the agent's credentials (the bucket is then out of
        # reach): a roster put there since that revokes this agency stops the agent.
        reload_roster=agency.reload_roster,
        fetch_schema=agency.fetch_schema,
        receipts=True,
        sidecars=[witness_log] if witness else [],
        tls=agency.tls,
        js_domain=agency.js_domain,
        epochs=agency.epochs,  # one keyring: a key the agent receives, the desk seals with
        destroy_expired=agency.destroy_expired_secrets,
    )
    agent.check_membership()  # a revoked agency's agent does not even start
    return agent


async def run_until_signalled(agent: Agent) -> None:
    """Run the agent until SIGINT or SIGTERM; then finish the message in hand and close."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)


COMPROMISED_MARK = "sender's key revoked as compromised after this was received"


@dataclass(frozen=True)
class InboxMessage:
    """A stored message, decrypted for display, and what the roster says of its sender now."""

    item: InboxItem
    opened: Opened
    revocation: Revocation | None  # of the sender's key, in the roster in force

    @property
    def warning(self) -> str | None:
        """What a reader must be told before trusting it (None: nothing)."""
        if self.revocation is not None and self.revocation.reason == "compromised":
            return COMPROMISED_MARK
        return None


@dataclass(frozen=True)
class Unreadable:
    """A stored message that cannot be shown: its code and why (one line for the list)."""

    item: InboxItem
    code: str
    reason: str


def read_inbox_item(agency: Agency, item: InboxItem) -> InboxMessage:
    """Decrypt a stored message for display. The receive checks ran on arrival, under the
    roster of the time; its signature is checked again with the key of record, and a sender
    revoked as compromised since is marked, not refused (``seal.reopen_stored``). Raises
    ``Rejected`` for a row that cannot be opened (altered, its key gone from the roster)."""
    try:
        opened = _reopen(agency, item)
    except Rejected as exc:
        # An epoch key kept by this agency's agent since the command started: read the
        # state again once (a direct ``listen`` runs for hours beside the agent).
        if exc.reject_code is not RejectCode.E_EPOCH or not agency.refresh_epochs():
            raise
        opened = _reopen(agency, item)
    # What lists show and references resolve by comes from the row; it must be what the
    # verified envelope says, or one agency's message could be shown under another's name.
    claimed = (item.msg_id, item.sender, item.sender_kid, item.env_hash, item.channel)
    verified = (opened.msg_id, opened.sender, opened.sender_kid, opened.env_hash, opened.channel)
    if claimed != verified or (item.schema, item.ts_ms) != (opened.schema, opened.ts_ms):
        raise Rejected(
            RejectCode.E_MALFORMED,
            "the stored row does not match the envelope it holds (the state database was altered)",
        )
    return InboxMessage(item, opened, agency.roster.revoked.get(opened.sender_kid))


def _reopen(agency: Agency, item: InboxItem) -> Opened:
    """The row's envelope opened again: with the message key kept with the row (sealed under
    the state key) when there is one, so it stays readable after the epoch key or retired
    secret that gave the key is deleted; else (a row of an earlier tfshare, or a sealed key
    that does not open) with the keys held, as before."""
    identity = agency.identity()
    payload_key = kept_message_key(identity.state_key, item)
    return reopen_stored(
        item.envelope,
        identity=identity,
        roster=agency.roster,
        schemas=agency.registry,
        epochs=agency.epochs,
        payload_key=payload_key,
    )


def read_inbox(agency: Agency, items: Iterable[InboxItem]) -> Iterator[InboxMessage | Unreadable]:
    """Each stored message decrypted, or what keeps it from being read: one bad row never
    stops the list."""
    for item in items:
        try:
            yield read_inbox_item(agency, item)
        except Rejected as exc:
            yield Unreadable(item, exc.code or "E_INTERNAL", exc.message)


def body_of(opened: Opened) -> object:
    return msgspec.to_builtins(opened.record)


SEVERITIES = ("low", "medium", "high", "critical")


def follow_inbox(
    agency: Agency,
    *,
    include_existing: bool,
    poll_s: float = 0.3,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[InboxMessage | Unreadable]:
    """New inbox messages as the agent stores them, decrypted, oldest first; one that cannot
    be read is reported as such and the feed goes on."""
    seen: set[bytes] = set()
    if not include_existing:
        seen = {i.msg_id + i.sender_kid for i in agency.store.inbox(limit=100_000)}
    while not stop():
        fresh = [
            i
            for i in reversed(agency.store.inbox(limit=1000))
            if i.msg_id + i.sender_kid not in seen
        ]
        for item in fresh:
            seen.add(item.msg_id + item.sender_kid)
        yield from read_inbox(agency, fresh)
        if not fresh:
            time.sleep(poll_s)
