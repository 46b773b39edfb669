"""``tfshare broker``: configure, start and provision the task force's nats-server."""

# Each command imports the library it runs: every command of the CLI imports this module, and
# the broker's code (the NATS client, the roster, SQLite, asyncio) is for these commands only
# (cli/common.py, issue 13).
# ruff: noqa: PLC0415

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tfshare.errors import BrokerError, TfshareError
from tfshare.urls import parse_server_url

from .common import (
    StateDir,
    TlsCaOpt,
    TlsCertOpt,
    TlsKeyOpt,
    note,
    now_ms,
    tls_context,
)

if TYPE_CHECKING:
    from tfshare.broker import BrokerCluster, BrokerProcess, ClusterLayout
    from tfshare.store import StateStore
    from tfshare.workflows import live

broker_app = typer.Typer(help="Run the task force's nats-server.", no_args_is_help=True)

BrokerRosterOpt = Annotated[Path, typer.Option("--roster", help="The signed roster.")]
PortOpt = Annotated[
    int, typer.Option("--port", min=1, max=65535, help="The port members connect to.")
]
BROKER_HOST = "127.0.0.1"  # where 'broker up' listens (live.start_broker)

ClusterOpt = Annotated[
    int | None,
    typer.Option(
        "--cluster",
        min=2,
        max=16,
        help="Nodes of a JetStream cluster (3 or 5): one configuration per node, routes "
        "between them; streams and buckets get 3 replicas from 3 nodes.",
        show_default=False,
    ),
]
ClusterPortOpt = Annotated[
    int,
    typer.Option(
        "--cluster-port",
        min=1,
        max=65535,
        help="The port the nodes route to each other on (with --cluster; on one machine, "
        "node i uses this + i - 1, as it uses --port + i - 1 for clients).",
    ),
]
ReplicasOpt = Annotated[
    int | None,
    typer.Option(
        "--replicas",
        min=1,
        max=5,
        help="Copies JetStream keeps of each stream and bucket, on different nodes "
        "(default: 3 on a cluster of 3 nodes or more, else 1). Never lowers what a "
        "stream or bucket has.",
        show_default=False,
    ),
]


ServerCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        help="The node's TLS certificate (PEM; every node's, on a cluster, with --hosts: one "
        "naming all of them, or run config per node): TLS 1.3 is then required of every "
        "client, and routes are mutual TLS.",
        show_default=False,
    ),
]
ServerKeyOpt = Annotated[
    Path | None,
    typer.Option("--tls-key", help="The key of --tls-cert (PEM).", show_default=False),
]
ServerCaOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca",
        help="The task force CA's certificate (PEM): checks the other nodes' route "
        "certificates and the agencies' leaf nodes (needed with --cluster or --leaf-port "
        "and TLS; 'broker up' also checks its own nodes with it).",
        show_default=False,
    ),
]
LeafPortOpt = Annotated[
    int | None,
    typer.Option(
        "--leaf-port",
        min=1,
        max=65535,
        help="Also listen for agencies' leaf nodes on this port (7422; loopback nodes of "
        "one machine: this + i - 1). Give --jetstream-domain with it.",
        show_default=False,
    ),
]
DomainOpt = Annotated[
    str | None,
    typer.Option(
        "--jetstream-domain",
        help="The task force's JetStream domain (e.g. tf), the same on every node: agents "
        "on an agency's leaf node reach the streams through it (their profile's "
        "jetstream_domain).",
        show_default=False,
    ),
]


def _server_options(
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    leaf_port: int | None,
    domain: str | None,
) -> live.ServerOptions:
    from tfshare.broker import BrokerTLS
    from tfshare.errors import UsageError
    from tfshare.workflows import live

    if (cert is None) != (key is None):
        raise UsageError(
            "a TLS certificate needs its key, and a key its certificate",
            hint="give both --tls-cert and --tls-key, or neither",
        )
    if ca is not None and cert is None:
        raise UsageError(
            "--tls-ca is for a broker with TLS: it needs the node's own certificate",
            hint="give --tls-cert and --tls-key as well",
        )
    if leaf_port is not None and domain is None:
        raise UsageError(
            "agents on a leaf node reach the task force's streams by its JetStream domain only",
            hint="give --jetstream-domain NAME (e.g. tf) with --leaf-port",
        )
    tls = None
    if cert is not None and key is not None:
        tls = BrokerTLS(cert.absolute(), key.absolute(), None if ca is None else ca.absolute())
    return live.ServerOptions(tls=tls, jetstream_domain=domain, leaf_port=leaf_port)


def _layout(
    taskforce: str, nodes: int, hosts: str | None, port: int, cluster_port: int
) -> ClusterLayout:
    """The cluster's nodes: on --hosts (one each; the same ports on every machine), else on
    this machine's loopback (consecutive ports)."""
    from tfshare.broker import ClusterLayout, ClusterNode, loopback_cluster
    from tfshare.errors import UsageError

    if hosts is None:
        return loopback_cluster(taskforce, nodes, port=port, cluster_port=cluster_port)
    names = [h.strip() for h in hosts.split(",") if h.strip()]
    if len(names) != nodes or len(set(names)) != len(names):
        raise UsageError(
            f"--hosts names {len(set(names))} different node(s), --cluster says {nodes}",
            hint="give one host (name or address) per node, each once: a node missing from "
            "the list would be missing from every other node's routes",
        )
    for name in names:
        parse_server_url(f"nats://{name}", source="--hosts")
    return ClusterLayout(taskforce, tuple(ClusterNode(h, port, cluster_port) for h in names))


# The limits (README, "Limits"). Sizes take nats-server's units: 512MB, 8GiB, or bytes.
MaxAgeOpt = Annotated[
    float,
    typer.Option(
        "--max-age-days",
        help="How long a message channel's stream keeps messages. Also the window of the "
        "per-sender quota: a sender's messages make room as they expire.",
    ),
]
ReceiptsMaxAgeOpt = Annotated[
    float,
    typer.Option(
        "--receipts-max-age-days",
        help="How long the receipts channel's stream keeps receipts (the audit service and "
        "the coordinators read them within hours); the window of the receipts quota.",
    ),
]
DuplicateWindowOpt = Annotated[
    float, typer.Option("--duplicate-window", help="Seconds JetStream drops repeats.")
]
MaxBytesOpt = Annotated[
    str,
    typer.Option(
        "--max-bytes",
        help="Largest size of the task force's streams on disk together (e.g. 8GiB): each "
        "channel has its own stream, the receipts channel an eighth of this, the other "
        "channels equal shares of the rest. When a channel's stream is full its publishes "
        "are refused ('stream is full'); nothing already accepted is dropped.",
    ),
]
MaxPerSenderOpt = Annotated[
    int,
    typer.Option(
        "--max-msgs-per-sender",
        help="Sender quota: how many messages a message channel's stream keeps from one "
        "agency. Over it, that agency's publishes on that channel are refused ('sender "
        "quota full') until its older ones expire; other members are not affected. Lowered "
        "on a channel whose share of --max-bytes it could fill more than half of with "
        "messages of 516 KiB.",
    ),
]
MaxReceiptsOpt = Annotated[
    int,
    typer.Option(
        "--max-receipts-per-sender",
        help="The receipts channel's quota: how many receipts its stream keeps from one "
        "reader (one per message it received) within --receipts-max-age-days.",
    ),
]
MaxAckPendingOpt = Annotated[
    int,
    typer.Option(
        "--max-ack-pending",
        help="Messages one reader may hold unacknowledged on one channel; the rest wait "
        "on the broker.",
    ),
]
MaxWaitingOpt = Annotated[
    int,
    typer.Option("--max-waiting", help="Pull requests one reader may have waiting on one channel."),
]
MaxFileStoreOpt = Annotated[
    str | None,
    typer.Option(
        "--max-file-store",
        help="Disk JetStream may use, for the stream, the KV buckets and consumer state "
        "(default: --max-bytes plus 1GiB). Keep it below the file system's free space.",
    ),
]
MaxConnectionsOpt = Annotated[
    int,
    typer.Option(
        "--max-connections",
        help="Connections the broker accepts, from all members together (never fewer than "
        "one per active agency plus 64).",
    ),
]
MaxSubscriptionsOpt = Annotated[
    int,
    typer.Option("--max-subscriptions", help="Subscriptions one connection may hold."),
]


class _DEFAULT:
    """The defaults of ``live.StreamLimits`` (README, "Limits"), written out so that --help
    shows them without importing the NATS client; tests/cli/test_startup_imports.py checks
    that they are the library's."""

    max_age_days = 30.0
    receipts_max_age_days = 7.0
    duplicate_window_s = 120
    max_msgs_per_sender = 3000
    max_receipts_per_sender = 16_000
    max_ack_pending = 256
    max_waiting = 16
    max_connections = 1024
    max_subscriptions = 1024


DEFAULT_MAX_BYTES = "8GiB"


def _limits(
    *,
    max_age_days: float = _DEFAULT.max_age_days,
    receipts_max_age_days: float = _DEFAULT.receipts_max_age_days,
    duplicate_window: float = _DEFAULT.duplicate_window_s,
    max_bytes: str = DEFAULT_MAX_BYTES,
    max_msgs_per_sender: int = _DEFAULT.max_msgs_per_sender,
    max_receipts_per_sender: int = _DEFAULT.max_receipts_per_sender,
    max_ack_pending: int = _DEFAULT.max_ack_pending,
    max_waiting: int = _DEFAULT.max_waiting,
    max_file_store: str | None = None,
    max_connections: int = _DEFAULT.max_connections,
    max_subscriptions: int = _DEFAULT.max_subscriptions,
) -> live.StreamLimits:
    """The flags as limits, checked (``UsageError``, exit 2, for a wrong one)."""
    from tfshare.workflows import live

    return live.StreamLimits(
        max_age_days=max_age_days,
        receipts_max_age_days=receipts_max_age_days,
        duplicate_window_s=duplicate_window,
        max_bytes=live.parse_size(max_bytes, flag="--max-bytes"),
        max_msgs_per_sender=max_msgs_per_sender,
        max_receipts_per_sender=max_receipts_per_sender,
        max_ack_pending=max_ack_pending,
        max_waiting=max_waiting,
        max_file_store=(
            None
            if max_file_store is None
            else live.parse_size(max_file_store, flag="--max-file-store")
        ),
        max_connections=max_connections,
        max_subscriptions=max_subscriptions,
    ).check()


BrokerAnchorOpt = Annotated[Path, typer.Option("--anchor", help="The pinned trust anchor.")]


def _broker_roster(roster: Path, anchor: Path, state: Path | None) -> Any:
    """The roster, verified; a new state database only once it verified."""
    from tfshare.workflows.exchange import tfshare_home
    from tfshare.workflows.rosters import trusted_roster
    from tfshare.workflows.statedb import STATE_DB, verify_before_creating

    directory = state or tfshare_home() / "state" / "_broker"
    verify_before_creating(roster, anchor, directory / STATE_DB, now_ms=now_ms())
    return trusted_roster(roster, anchor, directory, now_ms=now_ms())


@broker_app.command("up")
def broker_up(
    roster: BrokerRosterOpt,
    anchor: BrokerAnchorOpt,
    directory: Annotated[Path, typer.Option("--dir", help="Config, admin key, JetStream data.")],
    port: PortOpt = 4222,
    max_age_days: MaxAgeOpt = _DEFAULT.max_age_days,
    receipts_max_age_days: ReceiptsMaxAgeOpt = _DEFAULT.receipts_max_age_days,
    duplicate_window: DuplicateWindowOpt = _DEFAULT.duplicate_window_s,
    max_bytes: MaxBytesOpt = DEFAULT_MAX_BYTES,
    max_msgs_per_sender: MaxPerSenderOpt = _DEFAULT.max_msgs_per_sender,
    max_receipts_per_sender: MaxReceiptsOpt = _DEFAULT.max_receipts_per_sender,
    max_ack_pending: MaxAckPendingOpt = _DEFAULT.max_ack_pending,
    max_waiting: MaxWaitingOpt = _DEFAULT.max_waiting,
    max_file_store: MaxFileStoreOpt = None,
    max_connections: MaxConnectionsOpt = _DEFAULT.max_connections,
    max_subscriptions: MaxSubscriptionsOpt = _DEFAULT.max_subscriptions,
    state: StateDir = None,
    cluster: ClusterOpt = None,
    cluster_port: ClusterPortOpt = 6222,
    replicas: ReplicasOpt = None,
    tls_cert: ServerCertOpt = None,
    tls_key: ServerKeyOpt = None,
    tls_ca: ServerCaOpt = None,
    leaf_port: LeafPortOpt = None,
    jetstream_domain: DomainOpt = None,
) -> None:
    """Run a nats-server with JetStream, configured from the roster, until Ctrl-C.

    It follows the roster bucket: a newer roster published there (tfshare roster publish) is
    verified and applied at once (users and permissions reloaded, consumers provisioned).
    The --max-* flags bound what members can make the broker keep (README, "Limits").
    With --cluster N it runs an N-node cluster on this machine's loopback (tests, the demo):
    clients get every node's URL, and Ctrl-C stops them all."""
    from tfshare.broker import check_port_free
    from tfshare.store import StateStore
    from tfshare.workflows import live
    from tfshare.workflows.exchange import tfshare_home
    from tfshare.workflows.filekinds import load_anchor, read_kind
    from tfshare.workflows.rosters import load_trusted
    from tfshare.workflows.statedb import STATE_DB, removed_if_failed, verify_before_creating

    limits = _limits(
        max_age_days=max_age_days,
        receipts_max_age_days=receipts_max_age_days,
        duplicate_window=duplicate_window,
        max_bytes=max_bytes,
        max_msgs_per_sender=max_msgs_per_sender,
        max_receipts_per_sender=max_receipts_per_sender,
        max_ack_pending=max_ack_pending,
        max_waiting=max_waiting,
        max_file_store=max_file_store,
        max_connections=max_connections,
        max_subscriptions=max_subscriptions,
    )
    options = _server_options(tls_cert, tls_key, tls_ca, leaf_port, jetstream_domain)
    # Every check before anything is made: a port in use is said as such (not as the other
    # server's refusal of our credentials), and a failed start leaves no new --dir and no
    # new state database behind.
    layout = None
    if cluster is not None:
        layout = _layout("-", cluster, None, port, cluster_port)
        for node in layout.nodes:
            check_port_free(node.host, node.port)
            check_port_free(node.host, node.cluster_port)
    else:
        check_port_free(BROKER_HOST, port)
    db = (state or tfshare_home() / "state" / "_broker") / STATE_DB
    verify_before_creating(roster, anchor, db, now_ms=now_ms())
    made_dir = not directory.exists()
    with removed_if_failed(db):
        store = StateStore(db)
        try:
            trusted = load_trusted(roster, anchor, store, now_ms=now_ms())
            broker: BrokerProcess | BrokerCluster
            if layout is not None:
                layout = _layout(trusted.taskforce, len(layout.nodes), None, port, cluster_port)
                broker = live.start_cluster(
                    trusted,
                    directory,
                    layout,
                    roster_bytes=read_kind(roster, "roster"),
                    limits=limits,
                    replicas=replicas,
                    options=options,
                )
            else:
                broker = live.start_broker(
                    trusted,
                    directory,
                    port=port,
                    roster_bytes=read_kind(roster, "roster"),
                    limits=limits,
                    options=options,
                )
        except BaseException:
            store.close()
            if made_dir:
                shutil.rmtree(directory, ignore_errors=True)
            raise
    supervisor = live.BrokerSupervisor(
        broker, directory, load_anchor(anchor), store, trusted, limits, layout, options
    )
    what = "broker" if layout is None else f"{len(layout.nodes)}-node cluster"
    note(
        f"{what} for task force {trusted.taskforce} listening on {broker.url} "
        f"(roster seq {trusted.seq}); Ctrl-C to stop"
    )
    _run_until_stopped(broker, supervisor, store, directory)
    note("broker stopped")


def _run_until_stopped(
    broker: BrokerProcess | BrokerCluster,
    supervisor: live.BrokerSupervisor,
    store: StateStore,
    directory: Path,
) -> None:
    """Follow the roster bucket every 2 s until SIGTERM/SIGINT or nats-server's exit (a
    ``BrokerError``, the service manager's cue); the broker and the store closed either way."""
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    next_check = time.monotonic() + 2
    try:
        while not stopping and broker.exited() is None:
            time.sleep(0.2)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 2
                try:
                    updated = supervisor.check()
                except TfshareError as exc:
                    note(f"roster update refused: {exc}")
                else:
                    if updated is not None:
                        note(f"applied roster seq {updated.seq} (users and permissions reloaded)")
    finally:
        died = None if stopping else broker.exited()
        broker.stop()
        store.close()
    if died is not None:
        code = died.process.returncode if died.process else "?"
        raise BrokerError(
            f"nats-server exited unexpectedly (code {code})",
            hint=f"see {died.log}; a service manager should restart it",
        )


@broker_app.command("config")
def broker_config(
    roster: BrokerRosterOpt,
    anchor: BrokerAnchorOpt,
    directory: Annotated[Path, typer.Option("--dir", help="Where to write nats.conf.")],
    port: PortOpt = 4222,
    max_bytes: Annotated[
        str,
        typer.Option(
            "--max-bytes",
            help="The stream's size you will provision with (sets the default --max-file-store).",
        ),
    ] = DEFAULT_MAX_BYTES,
    max_file_store: MaxFileStoreOpt = None,
    max_connections: MaxConnectionsOpt = _DEFAULT.max_connections,
    max_subscriptions: MaxSubscriptionsOpt = _DEFAULT.max_subscriptions,
    state: StateDir = None,
    cluster: ClusterOpt = None,
    cluster_port: ClusterPortOpt = 6222,
    hosts: Annotated[
        str | None,
        typer.Option(
            "--hosts",
            help="With --cluster: the nodes' hosts, one per node, separated by commas "
            "(each node listens on its host at --port and --cluster-port). Default: all on "
            "127.0.0.1, on consecutive ports.",
            show_default=False,
        ),
    ] = None,
    tls_cert: ServerCertOpt = None,
    tls_key: ServerKeyOpt = None,
    tls_ca: ServerCaOpt = None,
    leaf_port: LeafPortOpt = None,
    jetstream_domain: DomainOpt = None,
) -> None:
    """Write the nats-server configuration for operators who run nats-server themselves.

    DIR/nats.conf is complete; DIR/tfshare-users.conf (its users and permissions alone) is
    what the templates in broker_config/ include. Run it again after every roster change and
    reload nats-server, then 'tfshare broker provision' for new readers' consumers.
    With --cluster N: DIR/nats-1.conf .. DIR/nats-N.conf, one per node (run each with
    'nats-server -c'), checked together ('tfshare broker check --dir DIR' checks them again)."""
    from tfshare.errors import UsageError
    from tfshare.workflows import live

    if hosts is not None and cluster is None:
        raise UsageError(
            "--hosts needs --cluster N", hint="give --cluster with the number of hosts"
        )

    limits = _limits(
        max_bytes=max_bytes,
        max_file_store=max_file_store,
        max_connections=max_connections,
        max_subscriptions=max_subscriptions,
    )
    options = _server_options(tls_cert, tls_key, tls_ca, leaf_port, jetstream_domain)
    trusted = _broker_roster(roster, anchor, state)
    if cluster is not None:
        layout = _layout(trusted.taskforce, cluster, hosts, port, cluster_port)
        paths = live.write_cluster_config(
            trusted, directory, layout, server=limits.server(), options=options
        )
        for path in paths:
            typer.echo(str(path))
        typer.echo(str(directory / live.USERS_INCLUDE))
        urls = [u.replace("nats://", "tls://", 1) if options.tls else u for u in layout.urls]
        note(f"clients connect with --server {','.join(urls)}")
        return
    path = live.write_broker_config(
        trusted, directory, port=port, server=limits.server(), options=options
    )
    typer.echo(str(path))
    typer.echo(str(directory / live.USERS_INCLUDE))


@broker_app.command("check")
def broker_check(
    directory: Annotated[
        Path, typer.Option("--dir", help="The directory of 'broker config' (--cluster or not).")
    ],
) -> None:
    """Check a broker directory's configuration with 'nats-server -t'; a cluster's node
    configurations (nats-N.conf) also together: distinct server names, one cluster name,
    every route leading to one of the nodes."""
    from tfshare.broker import check_cluster_configs, check_config
    from tfshare.errors import UsageError
    from tfshare.workflows import live

    nodes = live.node_configs(directory)
    if nodes:
        check_cluster_configs(nodes)
        note(f"{len(nodes)} node configurations in {directory} check")
        return
    single = directory / "nats.conf"
    if not single.exists():
        raise UsageError(
            f"no nats.conf and no nats-N.conf in {str(directory)!r}",
            hint="give the --dir of 'tfshare broker config'",
        )
    check_config(single)
    note(f"{single} checks")


@broker_app.command("provision")
def broker_provision(
    roster: BrokerRosterOpt,
    anchor: BrokerAnchorOpt,
    directory: Annotated[
        Path, typer.Option("--dir", help="The directory of 'broker config' (its admin.seed).")
    ],
    server: Annotated[
        str, typer.Option("--server", help="The nats-server's URL (nats://HOST:PORT).")
    ],
    max_age_days: MaxAgeOpt = _DEFAULT.max_age_days,
    receipts_max_age_days: ReceiptsMaxAgeOpt = _DEFAULT.receipts_max_age_days,
    duplicate_window: DuplicateWindowOpt = _DEFAULT.duplicate_window_s,
    max_bytes: MaxBytesOpt = DEFAULT_MAX_BYTES,
    max_msgs_per_sender: MaxPerSenderOpt = _DEFAULT.max_msgs_per_sender,
    max_receipts_per_sender: MaxReceiptsOpt = _DEFAULT.max_receipts_per_sender,
    max_ack_pending: MaxAckPendingOpt = _DEFAULT.max_ack_pending,
    max_waiting: MaxWaitingOpt = _DEFAULT.max_waiting,
    state: StateDir = None,
    replicas: ReplicasOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
) -> None:
    """Create or update the streams (one per channel), the consumers and the KV buckets on a
    nats-server you run yourself (configured with 'broker config'); seeds the roster bucket
    if it is empty. Run again with other --max-* values to change the limits of a running
    broker, and after every roster change (a new channel gets its stream). On a cluster,
    --server may list its nodes (nats://a:4222,nats://b:4222,...)."""
    import asyncio

    from tfshare.workflows import live
    from tfshare.workflows.filekinds import read_kind

    limits = _limits(
        max_age_days=max_age_days,
        receipts_max_age_days=receipts_max_age_days,
        duplicate_window=duplicate_window,
        max_bytes=max_bytes,
        max_msgs_per_sender=max_msgs_per_sender,
        max_receipts_per_sender=max_receipts_per_sender,
        max_ack_pending=max_ack_pending,
        max_waiting=max_waiting,
    )  # the server's disk limit is the operator's template here (TFSHARE_MAX_FILE_STORE)
    server = parse_server_url(server)
    tls = tls_context(tls_ca, tls_cert, tls_key)
    trusted = _broker_roster(roster, anchor, state)
    streams = asyncio.run(
        live.provision_broker(
            server,
            directory,
            trusted,
            read_kind(roster, "roster"),
            limits,
            replicas=replicas,
            tls=tls,
        )
    )
    note(f"provisioned task force {trusted.taskforce} (roster seq {trusted.seq}) on {server}")
    for channel, limit in sorted(streams.items()):
        note(
            f"  channel {channel}: {limit.max_bytes // 2**20} MiB, {limit.max_msgs_per_sender} "
            f"messages per sender, kept {limit.max_age_days:g} days, messages up to "
            f"{limit.max_msg_size // 1024} KiB, {limit.replicas} replica(s)"
        )
